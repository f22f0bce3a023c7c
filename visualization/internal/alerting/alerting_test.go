package alerting

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeStore is a RuleStore in memory.
type fakeStore struct {
	mu    sync.Mutex
	rules map[string]*monitorpb.AlertRule
	err   error
}

func newStore(rules ...Rule) *fakeStore {
	s := &fakeStore{rules: map[string]*monitorpb.AlertRule{}}
	for _, r := range rules {
		s.rules[r.ID] = r.PB()
	}
	return s
}

func (s *fakeStore) List(context.Context) ([]*monitorpb.AlertRule, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	var out []*monitorpb.AlertRule
	for _, r := range s.rules {
		out = append(out, proto.Clone(r).(*monitorpb.AlertRule))
	}
	return out, nil
}

func (s *fakeStore) Put(_ context.Context, r *monitorpb.AlertRule) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	s.rules[r.GetId()] = proto.Clone(r).(*monitorpb.AlertRule)
	return nil
}

func (s *fakeStore) Delete(_ context.Context, id string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return false, s.err
	}
	_, ok := s.rules[id]
	delete(s.rules, id)
	return ok, nil
}

type recorder struct {
	mu  sync.Mutex
	evs []Alert
}

func (r *recorder) publish(kind string, payload any) {
	if kind != "alert" {
		panic(kind)
	}
	r.mu.Lock()
	r.evs = append(r.evs, payload.(Event).Alert)
	r.mu.Unlock()
}

func (r *recorder) states() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, a := range r.evs {
		out = append(out, a.Series+":"+a.State)
	}
	return out
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newEngine(t *testing.T, o Options, rules ...Rule) (*Engine, *recorder, *fakeStore) {
	t.Helper()
	rec := &recorder{}
	st := newStore(rules...)
	o.Store, o.Publish = st, rec.publish
	e, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	return e, rec, st
}

func obs(e *Engine, host string, ts int64, series string, v float64) {
	e.Observe(host, map[string]string{"env": "prod"}, ts, []storage.Sample{{Series: series, Value: v}})
}

// TestForDuration checks pending → firing only after for_seconds of
// breach (on sample time), a breach shorter than that never fires, and
// firing → resolved when the value recovers.
func TestForDuration(t *testing.T) {
	e, rec, _ := newEngine(t, Options{}, Rule{ID: "hot", Metric: "cpu.usage", Op: ">", Threshold: 90, ForSeconds: 60})
	obs(e, "h1", 0, "cpu.usage", 95)
	obs(e, "h1", 30, "cpu.usage", 80) // breach ended before 60 s
	obs(e, "h1", 40, "cpu.usage", 95)
	obs(e, "h1", 99, "cpu.usage", 95) // 59 s
	if got := e.Alerts(); len(got) != 1 || got[0].State != StatePending || got[0].Since != 40 {
		t.Fatalf("alerts %+v", got)
	}
	obs(e, "h1", 100, "cpu.usage", 91) // 60 s
	obs(e, "h1", 110, "cpu.usage", 92)
	if got := e.Alerts(); len(got) != 1 || got[0].State != StateFiring || got[0].FiredAt != 100 {
		t.Fatalf("alerts %+v", got)
	}
	obs(e, "h1", 120, "cpu.usage", 90) // not > 90
	want := []string{"cpu.usage:pending", "cpu.usage:inactive", "cpu.usage:pending", "cpu.usage:firing", "cpu.usage:resolved"}
	if got := rec.states(); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	if st := e.Stats(); st.Fired != 1 || st.Resolved != 1 || st.Alerts != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestSelection checks host ids, host labels and metric-name rules that
// watch every label set of a metric separately.
func TestSelection(t *testing.T) {
	e, _, _ := newEngine(t, Options{},
		Rule{ID: "fs", Metric: "fs.used_percent", Op: ">=", Threshold: 90, HostLabels: map[string]string{"env": "prod"}},
		Rule{ID: "one", Metric: "fs.used_percent{mount=/}", Op: ">=", Threshold: 90, HostIDs: []string{"h2"}},
		Rule{ID: "staging", Metric: "fs.used_percent", Op: ">=", Threshold: 0, HostLabels: map[string]string{"env": "staging"}},
	)
	e.Observe("h1", map[string]string{"env": "prod"}, 1, []storage.Sample{
		{Series: "fs.used_percent{mount=/}", Value: 95}, {Series: "fs.used_percent{mount=/home}", Value: 99}, {Series: "fs.used_percent{mount=/boot}", Value: 10}})
	e.Observe("h2", map[string]string{"env": "dev"}, 1, []storage.Sample{{Series: "fs.used_percent{mount=/}", Value: 90}})
	var got []string
	for _, a := range e.Alerts() {
		got = append(got, a.RuleID+"/"+a.Host+"/"+a.Series+"/"+a.State)
	}
	want := []string{"fs/h1/fs.used_percent{mount=/home}/firing", "fs/h1/fs.used_percent{mount=/}/firing", "one/h2/fs.used_percent{mount=/}/firing"}
	if !slices.Equal(got, want) {
		t.Fatalf("alerts %v, want %v", got, want)
	}
}

// TestWebhookRetriesAfter500 runs the engine with a webhook that answers
// 500 to its first request: firing and resolved both arrive, in order.
func TestWebhookRetriesAfter500(t *testing.T) {
	var mu sync.Mutex
	var got []Notification
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 1 {
			http.Error(w, "try later", http.StatusInternalServerError)
			return
		}
		var n Notification
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &n); err != nil || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		got = append(got, n)
	}))
	defer srv.Close()
	e, _, _ := newEngine(t, Options{Refresh: time.Hour, Webhook: WebhookOptions{Backoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond}},
		Rule{ID: "hot", Metric: "cpu.usage", Op: ">", Threshold: 90, Webhook: srv.URL + "/hook?token=secret"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	obs(e, "h1", 10, "cpu.usage", 99)
	obs(e, "h1", 20, "cpu.usage", 10)
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		// The server records a notification before its answer reaches the
		// engine: wait for the engine to count it sent too, before stopping.
		if n >= 2 && e.Stats().WebhookSent >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook got %d notifications; stats %+v", n, e.Stats())
		}
		time.Sleep(time.Millisecond) // polling the test server's record
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if got[0].State != StateFiring || got[1].State != StateResolved || got[0].Value != 99 || got[1].Resolved != 20 || got[0].RuleID != "hot" {
		t.Fatalf("notifications %+v", got)
	}
	if st := e.Stats(); st.WebhookSent != 2 || st.WebhookRetries != 1 || st.WebhookFailed != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestWebhookQueueFullDrops checks evaluation never blocks on webhooks: a
// full queue drops and counts.
func TestWebhookQueueFullDrops(t *testing.T) {
	e, _, _ := newEngine(t, Options{Webhook: WebhookOptions{QueueSize: 1}},
		Rule{ID: "hot", Metric: "cpu.usage", Op: ">", Threshold: 90, Webhook: "http://127.0.0.1:1/never"})
	for i := range 3 { // no Run: nothing drains the queue
		obs(e, "h1", int64(2*i), "cpu.usage", 99)
		obs(e, "h1", int64(2*i+1), "cpu.usage", 1)
	}
	if st := e.Stats(); st.WebhookDropped != 5 || st.Fired != 3 {
		t.Fatalf("stats %+v", st)
	}
}

// TestSilentHostGoesStale checks a firing alert of a host that stops
// reporting becomes stale (not resolved), and returns to firing or
// resolves on the host's next value.
func TestSilentHostGoesStale(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	e, rec, _ := newEngine(t, Options{Now: clk.Now, StaleAfter: time.Minute},
		Rule{ID: "hot", Metric: "cpu.usage", Op: ">", Threshold: 90},
		Rule{ID: "slow", Metric: "cpu.usage", Op: ">", Threshold: 90, ForSeconds: 600})
	obs(e, "h1", 1, "cpu.usage", 99)
	clk.Add(30 * time.Second)
	e.MarkStale()
	if n := len(e.Alerts()); n != 2 {
		t.Fatalf("%d alerts before StaleAfter", n)
	}
	clk.Add(31 * time.Second)
	e.MarkStale()
	if got := e.Alerts(); len(got) != 1 || got[0].State != StateStale || got[0].RuleID != "hot" {
		t.Fatalf("alerts %+v (the firing one stale, the pending one dropped)", got)
	}
	obs(e, "h1", 100, "cpu.usage", 99) // back, still breaching
	obs(e, "h1", 110, "cpu.usage", 5)
	var hot []string
	rec.mu.Lock()
	for _, a := range rec.evs {
		if a.RuleID == "hot" {
			hot = append(hot, a.State)
		}
	}
	rec.mu.Unlock()
	if want := []string{"firing", "stale", "firing", "resolved"}; !slices.Equal(hot, want) {
		t.Fatalf("hot events %v, want %v", hot, want)
	}
}

func TestRuleValidation(t *testing.T) {
	ok := Rule{Metric: "cpu.usage", Op: ">", Threshold: 1, Webhook: "https://example.com/x"}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(r *Rule){
		"op":           func(r *Rule) { r.Op = "==" },
		"no metric":    func(r *Rule) { r.Metric = "" },
		"bad metric":   func(r *Rule) { r.Metric = "cpu usage" },
		"negative for": func(r *Rule) { r.ForSeconds = -1 },
		"ftp webhook":  func(r *Rule) { r.Webhook = "ftp://example.com/" },
		"no host":      func(r *Rule) { r.Webhook = "http:///path" },
		"bad id":       func(r *Rule) { r.ID = "a/b" },
		"bad host id":  func(r *Rule) { r.HostIDs = []string{"-x"} },
		"bad label":    func(r *Rule) { r.HostLabels = map[string]string{"1x": "y"} },
	}
	for name, mut := range cases {
		r := ok
		mut(&r)
		if err := r.Validate(); !errors.Is(err, ErrInvalidRule) {
			t.Errorf("%s: err %v", name, err)
		}
	}
}

func do(t *testing.T, h http.HandlerFunc, pattern, method, path, body string) (int, string) {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc(method+" "+pattern, h)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
	return rec.Code, rec.Body.String()
}

// TestRulesAPI drives create, conflict, replace, list and delete, and
// checks a deleted rule's firing alert resolves.
func TestRulesAPI(t *testing.T) {
	e, rec, st := newEngine(t, Options{})
	code, body := do(t, e.HandleCreate, "/api/v1/alerts/rules", "POST", "/api/v1/alerts/rules", `{"metric":"cpu.usage","op":">","threshold":90,"webhook":"https://hooks.example.com/T0/secret"}`)
	var created Rule
	if code != 201 || json.Unmarshal([]byte(body), &created) != nil || !strings.HasPrefix(created.ID, "r-") {
		t.Fatalf("create: %d %s", code, body)
	}
	for _, c := range []struct{ body, want string }{
		{`{"id":"` + created.ID + `","metric":"cpu.usage","op":">","threshold":1}`, "409"},
		{`{"metric":"cpu.usage","op":"=","threshold":1}`, "400"},
		{`{"metric":"cpu.usage","op":">","threshold":1,"webhook":"file:///etc/passwd"}`, "400"},
		{`{"metric":"cpu.usage","op":">","threshold":1,"extra":1}`, "400"},
		{`not json`, "400"},
	} {
		if code, body := do(t, e.HandleCreate, "/api/v1/alerts/rules", "POST", "/api/v1/alerts/rules", c.body); itoa(code) != c.want || !strings.Contains(body, `"error"`) {
			t.Fatalf("%s: %d %s, want %s", c.body, code, body, c.want)
		}
	}
	if code, body := do(t, e.HandleReplace, "/api/v1/alerts/rules/{id}", "PUT", "/api/v1/alerts/rules/disk", `{"metric":"disk.busy","op":">=","threshold":80,"for_seconds":30}`); code != 200 {
		t.Fatalf("put: %d %s", code, body)
	}
	if code, _ := do(t, e.HandleReplace, "/api/v1/alerts/rules/{id}", "PUT", "/api/v1/alerts/rules/disk", `{"id":"other","metric":"disk.busy","op":">=","threshold":80}`); code != 400 {
		t.Fatalf("put with another id: %d", code)
	}
	obs(e, "h1", 5, "cpu.usage", 95)
	code, body = do(t, e.HandleList, "/api/v1/alerts", "GET", "/api/v1/alerts", "")
	var list AlertsResponse
	if code != 200 || json.Unmarshal([]byte(body), &list) != nil || len(list.Rules) != 2 || len(list.Alerts) != 1 || list.Alerts[0].State != StateFiring {
		t.Fatalf("list: %d %s", code, body)
	}
	if strings.Contains(body, "secret") || !strings.Contains(body, "https://hooks.example.com/…") {
		t.Fatalf("webhook not redacted: %s", body)
	}
	if code, body := do(t, e.HandleDelete, "/api/v1/alerts/rules/{id}", "DELETE", "/api/v1/alerts/rules/"+created.ID, ""); code != 200 {
		t.Fatalf("delete: %d %s", code, body)
	}
	if code, _ := do(t, e.HandleDelete, "/api/v1/alerts/rules/{id}", "DELETE", "/api/v1/alerts/rules/"+created.ID, ""); code != 404 {
		t.Fatalf("delete again: %d", code)
	}
	if got := rec.states(); !slices.Equal(got, []string{"cpu.usage:firing", "cpu.usage:resolved"}) {
		t.Fatalf("events %v", got)
	}
	if n := len(e.Alerts()); n != 0 {
		t.Fatalf("%d alerts after the rule went", n)
	}
	st.mu.Lock()
	st.err = errors.New("no leader")
	st.mu.Unlock()
	if code, body := do(t, e.HandleDelete, "/api/v1/alerts/rules/{id}", "DELETE", "/api/v1/alerts/rules/disk", ""); code != 502 || !strings.Contains(body, "no leader") {
		t.Fatalf("store down: %d %s", code, body)
	}
	if err := e.Refresh(context.Background()); err == nil || len(e.Rules()) != 1 {
		t.Fatalf("failed refresh: %v, rules %v (kept)", err, e.Rules())
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// TestInvalidStoredRulesAreSkipped checks a bad rule in the store (written
// by another tool) is skipped and counted, not fatal.
func TestInvalidStoredRulesAreSkipped(t *testing.T) {
	e, _, _ := newEngine(t, Options{}, Rule{ID: "ok", Metric: "cpu.usage", Op: ">", Threshold: 1}, Rule{ID: "bad", Metric: "cpu.usage", Op: "!"}, Rule{Metric: "x", Op: ">"})
	if st := e.Stats(); st.Rules != 1 || st.InvalidStored != 2 {
		t.Fatalf("stats %+v", st)
	}
}
