package push_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/monitorhq/monitor/visualization/internal/live"
	"github.com/monitorhq/monitor/visualization/internal/push"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type msg struct {
	Type    string `json:"type"`
	Host    string `json:"host"`
	TS      int64  `json:"ts"`
	Missed  uint64 `json:"missed"`
	Error   string `json:"error"`
	Samples []struct {
		Series string  `json:"series"`
		Value  float64 `json:"value"`
	} `json:"samples"`
	Data json.RawMessage `json:"data"`
}

// drain returns every message queued now (without waiting).
func drain(t *testing.T, c *push.Client) []msg {
	t.Helper()
	// Publishing is synchronous: whatever was published is queued already,
	// and Next returns it before looking at the (canceled) context.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out []msg
	for {
		raw, err := c.Next(ctx)
		if err != nil {
			return out
		}
		for _, r := range raw {
			var m msg
			if err := json.Unmarshal(r, &m); err != nil {
				t.Fatalf("message %s is not JSON: %v", r, err)
			}
			out = append(out, m)
		}
	}
}

func join(t *testing.T, h *push.Hub, f push.Filter) *push.Client {
	t.Helper()
	c, err := h.Join(f, push.ClientInfo{User: "u", Role: "viewer", Transport: "test"})
	if err != nil {
		t.Fatalf("Join(%+v): %v", f, err)
	}
	t.Cleanup(c.Close)
	return c
}

var snapshot = []live.Sample{
	{Series: "cpu.usage_percent", Value: 10, Unit: "%"},
	{Series: "cpu.iowait_percent", Value: 1, Unit: "%"},
	{Series: "mem.used_percent", Value: 50, Unit: "%"},
	{Series: "net.rx_bytes_per_sec{interface=eth0}", Value: 1000, Unit: "bytes/s"},
	{Series: "net.tx_bytes_per_sec{interface=eth0}", Value: 2000, Unit: "bytes/s"},
}

func seriesOf(ms []msg) map[string][]string {
	out := map[string][]string{}
	for _, m := range ms {
		if m.Type != push.TypeSample {
			continue
		}
		for _, s := range m.Samples {
			out[m.Host] = append(out[m.Host], s.Series)
		}
	}
	return out
}

func TestFilters(t *testing.T) {
	h := push.New(push.Options{})
	defer h.Close()
	all := join(t, h, push.Filter{})
	cpu := join(t, h, push.Filter{Metrics: []string{"cpu."}})
	rx := join(t, h, push.Filter{Metrics: []string{"net.rx_*", "mem."}, Hosts: []string{"web-1"}})
	webs := join(t, h, push.Filter{Hosts: []string{"web-*"}, Metrics: []string{"mem.used_percent"}})
	labelled := join(t, h, push.Filter{Labels: []string{"role=db", "dc=fra1"}, Metrics: []string{"cpu.usage"}})
	events := join(t, h, push.Filter{Kinds: []string{"topk"}})
	overlapping := join(t, h, push.Filter{Metrics: []string{"cpu.", "cpu.usage", ""}})
	for _, c := range []*push.Client{all, cpu, rx, webs, labelled, events, overlapping} {
		if m := drain(t, c); len(m) != 1 || m[0].Type != push.TypeHello {
			t.Fatalf("first messages = %+v, want one hello", m)
		}
	}

	h.Observe("web-1", map[string]string{"role": "web"}, 100, snapshot)
	h.Observe("web-10", map[string]string{"role": "web"}, 100, snapshot)
	h.Observe("db-1", map[string]string{"role": "db", "dc": "fra1"}, 100, snapshot)
	h.Observe("db-2", map[string]string{"role": "db", "dc": "ams1"}, 100, snapshot)

	want := map[*push.Client]map[string][]string{
		cpu: {"web-1": {"cpu.usage_percent", "cpu.iowait_percent"}, "web-10": {"cpu.usage_percent", "cpu.iowait_percent"},
			"db-1": {"cpu.usage_percent", "cpu.iowait_percent"}, "db-2": {"cpu.usage_percent", "cpu.iowait_percent"}},
		rx:          {"web-1": {"mem.used_percent", "net.rx_bytes_per_sec{interface=eth0}"}},
		webs:        {"web-1": {"mem.used_percent"}, "web-10": {"mem.used_percent"}},
		labelled:    {"db-1": {"cpu.usage_percent"}},
		events:      {},
		overlapping: {},
	}
	want[all] = map[string][]string{}
	for _, host := range []string{"web-1", "web-10", "db-1", "db-2"} {
		for _, s := range snapshot {
			want[all][host] = append(want[all][host], s.Series)
			want[overlapping][host] = append(want[overlapping][host], s.Series) // once, not per pattern
		}
	}
	for c, w := range want {
		got := seriesOf(drain(t, c))
		if fmt.Sprint(got) != fmt.Sprint(w) {
			t.Errorf("client %d got %v, want %v", c.ID(), got, w)
		}
	}
}

func TestSubscribeCommand(t *testing.T) {
	h := push.New(push.Options{})
	defer h.Close()
	c := join(t, h, push.Filter{})
	drain(t, c)
	if err := c.Handle([]byte(`{"type":"subscribe","metrics":["mem."],"hosts":["web-1"]}`)); err != nil {
		t.Fatal(err)
	}
	h.Observe("web-1", nil, 1, snapshot)
	h.Observe("web-2", nil, 1, snapshot)
	ms := drain(t, c)
	if len(ms) != 2 || ms[0].Type != push.TypeSubscribed || fmt.Sprint(seriesOf(ms)) != "map[web-1:[mem.used_percent]]" {
		t.Fatalf("after subscribe = %+v", ms)
	}
	bad := []string{
		`not json`,
		`{"type":"unsubscribe"}`,
		`{"type":"subscribe","hosts":["bad host!"]}`,
		`{"type":"subscribe","labels":["nolabel"]}`,
		`{"type":"subscribe","kinds":["gap"]}`,
		`{"type":"subscribe","extra":1}`,
		`{"type":"subscribe","metrics":["a*b"]}`,
	}
	for _, b := range bad {
		if err := c.Handle([]byte(b)); err == nil {
			t.Errorf("Handle(%s): want an error", b)
		}
		ms := drain(t, c)
		if len(ms) != 1 || ms[0].Type != push.TypeError || ms[0].Error == "" {
			t.Errorf("Handle(%s) answered %+v, want one error message", b, ms)
		}
	}
	// The filter in force is still the last good one.
	h.Observe("web-1", nil, 2, snapshot)
	if got := fmt.Sprint(seriesOf(drain(t, c))); got != "map[web-1:[mem.used_percent]]" {
		t.Fatalf("after refused commands = %s", got)
	}
}

type topk struct {
	Metric string   `json:"metric"`
	Hosts  []string `json:"hosts"`
}

func (k topk) ConflationKey() string { return k.Metric }

// TestSlowClientIsFolded: a client that never drains while 200 snapshots
// are published gets, once it reads, its full queue, one gap marker and
// the latest value of every series; a client that drains meanwhile gets
// everything; the fan-out never waited for the slow one.
func TestSlowClientIsFolded(t *testing.T) {
	const queue = 8
	h := push.New(push.Options{QueueSize: queue})
	defer h.Close()
	slow := join(t, h, push.Filter{Kinds: []string{"sample", "topk"}})
	fast := join(t, h, push.Filter{})

	const n = 200
	got := 0
	for i := range n {
		samples := []live.Sample{
			{Series: "cpu.usage_percent", Value: float64(i), Unit: "%"},
			{Series: "mem.used_percent", Value: float64(1000 + i), Unit: "%"},
		}
		host := fmt.Sprintf("web-%d", i%3)
		h.Observe(host, nil, int64(i), samples)
		h.Publish("topk", topk{Metric: "cpu.usage_percent", Hosts: []string{host}})
		h.Publish("topk", topk{Metric: "mem.used_percent", Hosts: []string{host}})
		got += len(seriesOf(drain(t, fast))["web-0"])
	}
	got += len(seriesOf(drain(t, fast))["web-0"])
	if want := 2 * ((n + 2) / 3); got != want {
		t.Fatalf("fast client got %d web-0 samples, want %d (everything)", got, want)
	}

	ms := drain(t, slow)
	if len(ms) < queue+2 {
		t.Fatalf("slow client got %d messages", len(ms))
	}
	gap := slices.IndexFunc(ms, func(m msg) bool { return m.Type == push.TypeGap })
	if gap != queue {
		t.Fatalf("gap marker at %d, want right after the %d queued messages: %+v", gap, queue, ms[:min(len(ms), queue+1)])
	}
	if want := uint64(3*n - (queue - 1)); ms[gap].Missed != want {
		t.Fatalf("gap missed = %d, want %d", ms[gap].Missed, want)
	}
	latest := map[string]float64{}
	lastTS := map[string]int64{}
	topks := map[string]string{}
	for _, m := range ms[gap+1:] {
		switch m.Type {
		case push.TypeSample:
			for _, s := range m.Samples {
				latest[m.Host+" "+s.Series] = s.Value
				lastTS[m.Host] = m.TS
			}
		case "topk":
			var k topk
			if err := json.Unmarshal(m.Data, &k); err != nil {
				t.Fatal(err)
			}
			topks[k.Metric] = k.Hosts[0]
		default:
			t.Fatalf("unexpected %s after the gap", m.Type)
		}
	}
	for i := n - 3; i < n; i++ {
		host := fmt.Sprintf("web-%d", i%3)
		if latest[host+" cpu.usage_percent"] != float64(i) || latest[host+" mem.used_percent"] != float64(1000+i) || lastTS[host] != int64(i) {
			t.Fatalf("folded values of %s = %v (ts %d), want the last published (%d)", host, latest, lastTS[host], i)
		}
	}
	if len(latest) != 6 {
		t.Fatalf("folded %d series, want 6 (2 series × 3 hosts): %v", len(latest), latest)
	}
	if want := fmt.Sprintf("web-%d", (n-1)%3); topks["cpu.usage_percent"] != want || topks["mem.used_percent"] != want || len(topks) != 2 {
		t.Fatalf("folded topk = %v, want the latest per metric (%s)", topks, want)
	}
	st := h.Stats()
	if st.Gaps != 1 || st.Folded != uint64(3*n-(queue-1)) || st.Replaced == 0 || st.Dropped != 0 || st.Clients != 2 {
		t.Fatalf("stats = %+v", st)
	}

	// Caught up: normal delivery again.
	h.Observe("web-0", nil, 1000, snapshot[:1])
	if ms := drain(t, slow); len(ms) != 1 || ms[0].Type != push.TypeSample {
		t.Fatalf("after catching up = %+v", ms)
	}
}

func TestMaxPendingDropsAndCounts(t *testing.T) {
	h := push.New(push.Options{QueueSize: 1, MaxPending: 5})
	defer h.Close()
	c := join(t, h, push.Filter{})
	for i := range 10 {
		h.Observe(fmt.Sprintf("h-%d", i), nil, 1, snapshot[:1])
	}
	if st := h.Stats(); st.Dropped != 5 {
		t.Fatalf("dropped = %d, want 5 (10 series, queue full with the hello, 5 folded)", st.Dropped)
	}
	ms := drain(t, c)
	if n := len(seriesOf(ms)); n != 5 {
		t.Fatalf("got %d hosts after the gap, want 5", n)
	}
}

func TestEventsAndKinds(t *testing.T) {
	h := push.New(push.Options{})
	defer h.Close()
	alerts := join(t, h, push.Filter{Kinds: []string{"alert"}})
	def := join(t, h, push.Filter{})
	drain(t, alerts)
	drain(t, def)
	h.Publish("alert", map[string]any{"rule": "cpu-high", "state": "firing"})
	h.Publish("custom", 1)
	h.Publish("sample", 1) // reserved: refused
	h.Publish("weird", func() {})
	if ms := drain(t, alerts); len(ms) != 1 || ms[0].Type != "alert" || !strings.Contains(string(ms[0].Data), "firing") {
		t.Fatalf("alert client = %+v", ms)
	}
	if ms := drain(t, def); len(ms) != 1 || ms[0].Type != "alert" {
		t.Fatalf("default kinds = %+v, want the alert only", ms)
	}
}

func TestCloseAndLimits(t *testing.T) {
	h := push.New(push.Options{MaxClients: 2})
	a := join(t, h, push.Filter{})
	join(t, h, push.Filter{})
	if _, err := h.Join(push.Filter{}, push.ClientInfo{}); !errors.Is(err, push.ErrTooManyClients) {
		t.Fatalf("third Join = %v, want ErrTooManyClients", err)
	}
	a.Close()
	a.Close()
	c := join(t, h, push.Filter{})
	done := make(chan error, 1)
	drain(t, c)
	go func() {
		_, err := c.Next(context.Background())
		done <- err
	}()
	h.Close()
	if err := <-done; !errors.Is(err, push.ErrClosed) {
		t.Fatalf("Next after hub Close = %v, want ErrClosed", err)
	}
	if _, err := h.Join(push.Filter{}, push.ClientInfo{}); !errors.Is(err, push.ErrClosed) {
		t.Fatalf("Join after Close = %v", err)
	}
	if st := h.Stats(); st.Clients != 0 {
		t.Fatalf("clients after Close = %d", st.Clients)
	}
}

// latencyCount is the number of observations of the hub's latency histogram.
func latencyCount(t *testing.T, h *push.Hub) uint64 {
	t.Helper()
	var m dto.Metric
	if err := h.LatencyHistogram().Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// TestLatencyRecordedPerWrittenBatch: a batch is recorded when its
// transport comes back for more (it wrote the batch), once per batch;
// control messages alone (hello) and a batch never written are not.
func TestLatencyRecordedPerWrittenBatch(t *testing.T) {
	h := push.New(push.Options{QueueSize: 4})
	defer h.Close()
	c := join(t, h, push.Filter{})
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Next(canceled); err != nil { // hello only
		t.Fatal(err)
	}
	if _, err := c.Next(canceled); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next on an empty queue = %v", err)
	}
	if n := latencyCount(t, h); n != 0 {
		t.Fatalf("after the hello: %d observations, want 0", n)
	}
	for i := range 3 { // one batch, even though the queue overflows
		h.Observe("web-1", nil, int64(i), []live.Sample{{Series: "cpu.usage_percent", Value: 1}})
	}
	h.Observe("web-1", nil, 9, []live.Sample{{Series: "mem.used_percent", Value: 1}})
	h.Observe("web-1", nil, 10, []live.Sample{{Series: "mem.used_percent", Value: 2}})
	if msgs, err := c.Next(canceled); err != nil || len(msgs) == 0 {
		t.Fatalf("Next = %d messages, %v", len(msgs), err)
	}
	if n := latencyCount(t, h); n != 0 {
		t.Fatalf("before the batch was written: %d observations, want 0", n)
	}
	_, _ = c.Next(canceled) // back for more: the batch was written
	if n := latencyCount(t, h); n != 1 {
		t.Fatalf("after one written batch: %d observations, want 1", n)
	}
	h.Publish("topk", map[string]int{"k": 1})
	if _, err := c.Next(canceled); err != nil {
		t.Fatal(err)
	}
	c.Close() // the session ended before this batch was written
	if _, err := c.Next(canceled); !errors.Is(err, push.ErrClosed) {
		t.Fatalf("Next after Close = %v", err)
	}
	if n := latencyCount(t, h); n != 1 {
		t.Fatalf("after Close: %d observations, want still 1", n)
	}
}
