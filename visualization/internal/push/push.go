// Package push is the fan-out core of live updates to browsers and other
// clients. Transports (the WebSocket handler now, WebTransport over QUIC
// later) are small adapters: they Join a client, copy what Next returns to
// their connection, and pass what the peer sends to Handle. Everything
// else — subscriptions, matching, bounded queues, conflation, gap markers —
// lives here once.
//
// Messages are JSON objects with a "type":
//
//	hello       first message: the client's id, user, role and queue size
//	subscribed  the filter now in force, after a subscribe command
//	error       a refused command
//	sample      {"host","ts","samples":[{"series","value","unit"}]}: the
//	            samples of one stored snapshot that match the filter
//	gap         the queue overflowed: "missed" messages were folded into
//	            the latest value per series (sent right after) — reload
//	            history from the API to fill the hole
//	topk, anomaly, alert, ...  {"data": payload} from Publish
//
// A client subscribes (command {"type":"subscribe",...}, see Filter) with
// host ids or prefixes, host labels (k=v, all must hold), metric prefixes
// (cpu., net.rx_) and kinds. Host and metric patterns are matched with a
// radix tree per hub (visualization/internal/radix): one walk per host and
// per series, however many clients subscribe.
//
// Every client has a bounded queue. Publishing never blocks: while the
// queue has room a message is appended; when it is full, the client is
// "behind" and messages are folded instead — the latest value per host and
// series, and per conflation key for events — until its transport drains
// the queue; then it receives a gap marker followed by the folded latest
// values. A slow client thus costs the fan-out one map update per message
// and never delays the others. Folded values are capped (MaxPending) and
// everything lost is counted in Stats.
//
// Latency: the hub records, per batch a transport takes with Next, the time
// from the publish of its oldest message to the transport's next call of
// Next — by then it has written the batch — in a Prometheus histogram
// (LatencyHistogram; the caller registers it in its own registry). A batch
// whose write failed is not recorded: its transport stops calling Next.
//
// Concurrency: every method is safe for concurrent use. Publishing
// (Observe, Publish) is serialized within a hub; a client's Next is meant
// for one sender goroutine.
package push

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/visualization/internal/live"
	"github.com/monitorhq/monitor/visualization/internal/radix"
)

// Message types of the core.
const (
	TypeHello      = "hello"
	TypeSubscribed = "subscribed"
	TypeError      = "error"
	TypeSample     = "sample"
	TypeGap        = "gap"
)

// DefaultKinds are the kinds a client receives until it names its own.
var DefaultKinds = []string{TypeSample, "topk", "anomaly", "alert"}

// Errors.
var (
	// ErrClosed is returned by Next after the client or the hub closed.
	ErrClosed = errors.New("push: client closed")
	// ErrTooManyClients is returned by Join when MaxClients are connected.
	ErrTooManyClients = errors.New("push: too many clients")
)

// Limits of one filter.
const (
	maxPatterns   = 256
	maxPatternLen = 256
)

// Options configure a Hub.
type Options struct {
	// QueueSize is each client's queue, in messages (default 256).
	QueueSize int
	// MaxPending caps the folded values a client that is behind keeps
	// (default 100,000); values beyond it are dropped and counted.
	MaxPending int
	// MaxClients caps the clients of the hub (default 10,000).
	MaxClients int
	Logger     *slog.Logger
}

// Stats counts the hub's traffic and losses.
type Stats struct {
	Clients int `json:"clients"`
	// Transports counts the clients by transport ("websocket", ...).
	Transports map[string]int `json:"transports"`
	Published  uint64         `json:"published"` // messages queued to clients
	Folded     uint64         `json:"folded"`    // messages that found a full queue and were folded
	Replaced   uint64         `json:"replaced"`  // folded values overwritten by a newer one before sending
	Dropped    uint64         `json:"dropped"`   // folded values discarded at MaxPending
	Gaps       uint64         `json:"gaps"`      // gap markers sent
}

// Hub fans messages out to clients.
type Hub struct {
	opts Options
	log  *slog.Logger

	hosts   *radix.Index[*Client] // Exact(id) or prefix → clients; "" for any host
	metrics *radix.Index[*Client] // series prefix → clients; "" for any series

	mu      sync.RWMutex // guards clients, closed
	clients map[*Client]struct{}
	closed  bool
	nextID  atomic.Uint64

	pub   sync.Mutex // serializes publishing; guards the clients' scratch fields
	epoch uint64

	published, folded, replaced, dropped, gaps atomic.Uint64
	latency                                    prometheus.Histogram
}

// LatencyBuckets are the upper bounds (seconds) of the push latency
// histogram: sub-millisecond on loopback up to a client seconds behind.
var LatencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

var _ live.Observer = (*Hub)(nil)

// New returns a hub.
func New(opts Options) *Hub {
	if opts.QueueSize <= 0 {
		opts.QueueSize = 256
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = 100_000
	}
	if opts.MaxClients <= 0 {
		opts.MaxClients = 10_000
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Hub{opts: opts, log: log, hosts: radix.New[*Client](), metrics: radix.New[*Client](), clients: map[*Client]struct{}{},
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "monitor_visualization_push_latency_seconds",
			Help:    "Time from the publish of a message to its transport having written it (per batch, its oldest message).",
			Buckets: LatencyBuckets,
		})}
}

// LatencyHistogram returns the hub's push latency histogram (see the
// package doc), registered nowhere: the caller registers it.
func (h *Hub) LatencyHistogram() prometheus.Histogram { return h.latency }

// Stats returns the counters.
func (h *Hub) Stats() Stats {
	h.mu.RLock()
	n := len(h.clients)
	byTransport := map[string]int{}
	for c := range h.clients {
		byTransport[c.info.Transport]++
	}
	h.mu.RUnlock()
	return Stats{Clients: n, Transports: byTransport, Published: h.published.Load(), Folded: h.folded.Load(),
		Replaced: h.replaced.Load(), Dropped: h.dropped.Load(), Gaps: h.gaps.Load()}
}

// Filter is a client's subscription. Empty lists mean "all".
type Filter struct {
	// Hosts are host ids, or prefixes ending in "*" ("web-*").
	Hosts []string `json:"hosts,omitempty"`
	// Labels are host labels "key=value"; a host must have all of them.
	Labels []string `json:"labels,omitempty"`
	// Metrics are series prefixes: "cpu." matches every cpu series,
	// "net.rx_" every receive series; a trailing "*" is allowed and
	// ignored.
	Metrics []string `json:"metrics,omitempty"`
	// Kinds are the message kinds wanted: sample, topk, anomaly, alert (or
	// another published kind). Empty: DefaultKinds.
	Kinds []string `json:"kinds,omitempty"`
}

// compiled is a checked filter in the forms the hub indexes.
type compiled struct {
	filter  Filter
	hosts   []string          // index patterns
	labels  map[string]string // required host labels
	metrics []string          // index patterns
	kinds   map[string]bool
}

func compile(f Filter) (*compiled, error) {
	if n := len(f.Hosts) + len(f.Labels) + len(f.Metrics) + len(f.Kinds); n > maxPatterns {
		return nil, fmt.Errorf("the filter has %d patterns; the limit is %d", n, maxPatterns)
	}
	c := &compiled{filter: f, labels: map[string]string{}, kinds: map[string]bool{}}
	for _, p := range f.Hosts {
		if len(p) > maxPatternLen {
			return nil, fmt.Errorf("host pattern of %d bytes is too long", len(p))
		}
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if strings.Contains(prefix, "*") {
				return nil, fmt.Errorf("host pattern %q: only one trailing * is allowed", p)
			}
			c.hosts = append(c.hosts, prefix)
			continue
		}
		if err := storage.ValidateHostID(p); err != nil {
			return nil, fmt.Errorf("host pattern %q: %v", p, err)
		}
		c.hosts = append(c.hosts, radix.Exact(p))
	}
	if len(c.hosts) == 0 {
		c.hosts = []string{""}
	}
	for _, l := range f.Labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("label %q is not key=value", l)
		}
		if len(l) > maxPatternLen {
			return nil, fmt.Errorf("label of %d bytes is too long", len(l))
		}
		if old, dup := c.labels[k]; dup && old != v {
			return nil, fmt.Errorf("label %q asks for two values (%q and %q); no host has both", k, old, v)
		}
		c.labels[k] = v
	}
	for _, p := range f.Metrics {
		p = strings.TrimSuffix(p, "*")
		if len(p) > maxPatternLen || strings.ContainsAny(p, "*\x00") {
			return nil, fmt.Errorf("metric prefix %q: at most %d bytes and one trailing *", p, maxPatternLen)
		}
		c.metrics = append(c.metrics, p)
	}
	if len(c.metrics) == 0 {
		c.metrics = []string{""}
	}
	kinds := f.Kinds
	if len(kinds) == 0 {
		kinds = DefaultKinds
	}
	for _, k := range kinds {
		switch k {
		case TypeHello, TypeSubscribed, TypeError, TypeGap:
			return nil, fmt.Errorf("kind %q is always sent; subscribe to sample, topk, anomaly, alert", k)
		case "":
			return nil, errors.New("empty kind")
		}
		c.kinds[k] = true
	}
	c.hosts = dedupe(c.hosts)
	c.metrics = dedupe(c.metrics)
	return c, nil
}

func dedupe(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}

// ClientInfo describes a client for its hello message and the logs.
type ClientInfo struct {
	User      string `json:"user"`
	Role      string `json:"role"`
	Transport string `json:"transport"` // "websocket", "webtransport"
	Remote    string `json:"-"`
}

// Client is one subscriber: a bounded queue the hub fills and a transport
// drains with Next.
type Client struct {
	hub  *Hub
	id   uint64
	info ClientInfo

	// Guarded by hub.pub.
	filter *compiled
	mark   uint64  // epoch in which the current snapshot's host and labels matched
	picked []int32 // indices of the current snapshot's samples that matched

	mu      sync.Mutex
	queue   [][]byte
	behind  bool
	missed  uint64
	pending map[pendingKey]pendingSample // folded samples
	events  map[string][]byte            // folded events by conflation key
	order   []string                     // events' keys in arrival order
	oldest  time.Time                    // publish time of the oldest message not yet taken by Next
	handed  time.Time                    // that time for the batch Next last returned
	closed  bool
	notify  chan struct{} // one slot: "there is something to send"
	done    chan struct{}
}

type pendingKey struct{ host, series string }

type pendingSample struct {
	ts    int64
	value float64
	unit  string
}

// Join adds a client with filter f. Its queue starts with the hello
// message.
func (h *Hub) Join(f Filter, info ClientInfo) (*Client, error) {
	cf, err := compile(f)
	if err != nil {
		return nil, err
	}
	c := &Client{hub: h, id: h.nextID.Add(1), info: info, notify: make(chan struct{}, 1), done: make(chan struct{})}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, ErrClosed
	}
	if len(h.clients) >= h.opts.MaxClients {
		h.mu.Unlock()
		return nil, fmt.Errorf("%w (%d)", ErrTooManyClients, h.opts.MaxClients)
	}
	h.clients[c] = struct{}{}
	h.mu.Unlock()

	c.enqueueRaw(mustJSON(struct {
		Type      string `json:"type"`
		Protocol  string `json:"protocol"`
		Client    uint64 `json:"client"`
		QueueSize int    `json:"queue_size"`
		ClientInfo
		Filter Filter `json:"filter"`
	}{TypeHello, "monitor.v1", c.id, h.opts.QueueSize, info, f}))

	h.pub.Lock()
	c.filter = cf
	h.index(c, cf, true)
	h.pub.Unlock()
	return c, nil
}

// index adds (or removes) c's patterns; h.pub is held.
func (h *Hub) index(c *Client, cf *compiled, add bool) {
	for _, p := range cf.hosts {
		if add {
			h.hosts.Add(p, c)
		} else {
			h.hosts.Remove(p, c)
		}
	}
	for _, p := range cf.metrics {
		if add {
			h.metrics.Add(p, c)
		} else {
			h.metrics.Remove(p, c)
		}
	}
}

// ID returns the client's id (unique within the hub).
func (c *Client) ID() uint64 { return c.id }

// Subscribe replaces the client's filter and queues a subscribed message.
func (c *Client) Subscribe(f Filter) error {
	cf, err := compile(f)
	if err != nil {
		return err
	}
	h := c.hub
	h.pub.Lock()
	if c.filter != nil {
		h.index(c, c.filter, false)
	}
	c.filter = cf
	h.index(c, cf, true)
	h.pub.Unlock()
	c.enqueueRaw(mustJSON(struct {
		Type   string `json:"type"`
		Filter Filter `json:"filter"`
	}{TypeSubscribed, f}))
	return nil
}

// command is a message from a client.
type command struct {
	Type string `json:"type"`
	Filter
}

// Handle runs a message a client sent: {"type":"subscribe", ...Filter}.
// A bad message is answered with an error message on the client's queue
// and returned.
func (c *Client) Handle(data []byte) error {
	var cmd command
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(&cmd)
	switch {
	case err != nil:
		err = fmt.Errorf("message is not a command: %v", err)
	case cmd.Type == "subscribe":
		err = c.Subscribe(cmd.Filter)
	default:
		err = fmt.Errorf("unknown command type %q; the only command is subscribe", cmd.Type)
	}
	if err != nil {
		c.enqueueRaw(mustJSON(struct {
			Type  string `json:"type"`
			Error string `json:"error"`
		}{TypeError, err.Error()}))
	}
	return err
}

// Close removes the client from the hub; Next then returns ErrClosed. It
// is safe to call more than once.
func (c *Client) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	close(c.done)
	c.mu.Unlock()

	h := c.hub
	h.mu.Lock()
	delete(h.clients, c)
	h.mu.Unlock()
	h.pub.Lock()
	if c.filter != nil {
		h.index(c, c.filter, false)
	}
	h.pub.Unlock()
}

// Done is closed when the client is closed (by Close or the hub's Close).
func (c *Client) Done() <-chan struct{} { return c.done }

// Next waits for messages and returns every queued one, oldest first; when
// the client was behind, a gap marker and the folded latest values follow.
// It returns ErrClosed once the client is closed, or ctx's error.
func (c *Client) Next(ctx context.Context) ([][]byte, error) {
	c.mu.Lock()
	if !c.handed.IsZero() && !c.closed {
		// The transport wrote the previous batch and is back for more.
		c.hub.latency.Observe(time.Since(c.handed).Seconds())
	}
	c.handed = time.Time{}
	c.mu.Unlock()
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClosed
		}
		if len(c.queue) > 0 || c.behind {
			out := c.queue
			c.queue = make([][]byte, 0, min(c.hub.opts.QueueSize, 16))
			if c.behind {
				out = append(out, c.drainFolded()...)
			}
			c.handed, c.oldest = c.oldest, time.Time{}
			c.mu.Unlock()
			return out, nil
		}
		c.mu.Unlock()
		select {
		case <-c.notify:
		case <-c.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// drainFolded returns the gap marker and the folded values and leaves the
// behind state; c.mu is held.
func (c *Client) drainFolded() [][]byte {
	out := [][]byte{mustJSON(struct {
		Type   string `json:"type"`
		Missed uint64 `json:"missed"`
		Folded int    `json:"folded"`
	}{TypeGap, c.missed, len(c.pending) + len(c.events)})}
	c.hub.gaps.Add(1)

	// Latest samples, grouped by host and timestamp, in a stable order.
	type group struct {
		host string
		ts   int64
	}
	groups := map[group][]sampleJSON{}
	for k, v := range c.pending {
		g := group{k.host, v.ts}
		groups[g] = append(groups[g], sampleJSON{Series: k.series, Value: v.value, Unit: v.unit})
	}
	keys := slices.Collect(maps.Keys(groups))
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].host != keys[j].host {
			return keys[i].host < keys[j].host
		}
		return keys[i].ts < keys[j].ts
	})
	for _, g := range keys {
		s := groups[g]
		sort.Slice(s, func(i, j int) bool { return s[i].Series < s[j].Series })
		out = append(out, mustJSON(sampleMsg{Type: TypeSample, Host: g.host, TS: g.ts, Samples: s}))
	}
	for _, k := range c.order {
		out = append(out, c.events[k])
	}
	c.behind, c.missed = false, 0
	c.pending, c.events, c.order = nil, nil, nil
	return out
}

// wake tells the sender there is something to send.
func (c *Client) wake() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// enqueueRaw queues a control message (hello, subscribed, error). They are
// few and the client needs them, so they may exceed the queue size.
func (c *Client) enqueueRaw(msg []byte) {
	c.mu.Lock()
	if !c.closed {
		c.queue = append(c.queue, msg)
	}
	c.mu.Unlock()
	c.wake()
}

// offer queues msg if there is room and reports whether it did; otherwise
// the client is behind and the caller folds the message (under c.mu, which
// offer then leaves locked: the caller unlocks).
func (c *Client) offer(msg []byte) (queued bool) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return true // nothing to fold for a closed client
	}
	if c.oldest.IsZero() {
		c.oldest = time.Now()
	}
	if !c.behind && len(c.queue) < c.hub.opts.QueueSize {
		c.queue = append(c.queue, msg)
		c.mu.Unlock()
		c.hub.published.Add(1)
		c.wake()
		return true
	}
	if !c.behind {
		c.behind = true
		c.pending = map[pendingKey]pendingSample{}
		c.events = map[string][]byte{}
	}
	c.missed++
	c.hub.folded.Add(1)
	return false
}

func (c *Client) foldedLen() int { return len(c.pending) + len(c.events) }

type sampleJSON struct {
	Series string  `json:"series"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
}

type sampleMsg struct {
	Type    string       `json:"type"`
	Host    string       `json:"host"`
	TS      int64        `json:"ts"`
	Samples []sampleJSON `json:"samples"`
}

// Observe fans a stored snapshot out to the clients whose filter matches:
// the host (id pattern and labels), then each series (metric prefixes).
// Clients with the same matching samples share one encoded message.
func (h *Hub) Observe(hostID string, labels map[string]string, ts int64, samples []live.Sample) {
	h.pub.Lock()
	defer h.pub.Unlock()
	h.epoch++
	epoch := h.epoch
	var matched []*Client
	h.hosts.Match(radix.Exact(hostID), func(c *Client) {
		if c.mark == epoch || !c.filter.kinds[TypeSample] {
			return
		}
		for k, v := range c.filter.labels {
			if labels[k] != v {
				return
			}
		}
		c.mark = epoch
		c.picked = c.picked[:0]
		matched = append(matched, c)
	})
	if len(matched) == 0 {
		return
	}
	for i, s := range samples {
		h.metrics.Match(s.Series, func(c *Client) {
			if c.mark == epoch && (len(c.picked) == 0 || c.picked[len(c.picked)-1] != int32(i)) {
				c.picked = append(c.picked, int32(i))
			}
		})
	}
	encoded := map[string][]byte{} // by the picked indices
	for _, c := range matched {
		if len(c.picked) == 0 {
			continue
		}
		key := unsafe.String((*byte)(unsafe.Pointer(&c.picked[0])), len(c.picked)*4)
		msg, ok := encoded[key]
		if !ok {
			m := sampleMsg{Type: TypeSample, Host: hostID, TS: ts, Samples: make([]sampleJSON, len(c.picked))}
			for j, i := range c.picked {
				s := samples[i]
				m.Samples[j] = sampleJSON{Series: s.Series, Value: s.Value, Unit: s.Unit}
			}
			msg = mustJSON(m)
			encoded[strings.Clone(key)] = msg
		}
		if c.offer(msg) {
			continue
		}
		for _, i := range c.picked {
			s := samples[i]
			k := pendingKey{hostID, s.Series}
			if old, ok := c.pending[k]; ok {
				if old.ts <= ts {
					c.pending[k] = pendingSample{ts, s.Value, s.Unit}
				}
				h.replaced.Add(1)
				continue
			}
			if c.foldedLen() >= h.opts.MaxPending {
				h.dropped.Add(1)
				continue
			}
			c.pending[k] = pendingSample{ts, s.Value, s.Unit}
		}
		c.mu.Unlock()
		c.wake()
	}
}

// Conflater is implemented by event payloads that supersede earlier ones
// with the same key (a Top-K list per metric, an alert per rule and host):
// a client that is behind gets only the latest per key. Payloads without
// it are never folded together.
type Conflater interface {
	ConflationKey() string
}

// Publish sends an event of kind (topk, anomaly, alert, ...) to every
// client subscribed to kind, as {"type": kind, "data": payload}. The
// payload is encoded once; an encoding error is logged and the event
// dropped.
func (h *Hub) Publish(kind string, payload any) {
	switch kind {
	case TypeHello, TypeSubscribed, TypeError, TypeGap, TypeSample, "":
		h.log.Error("push: refused to publish a reserved or empty kind", "kind", kind)
		return
	}
	data, err := json.Marshal(struct {
		Type string `json:"type"`
		Data any    `json:"data"`
	}{kind, payload})
	if err != nil {
		h.log.Error("push: encode event", "kind", kind, "err", err)
		return
	}
	key := kind + "\x00"
	if cf, ok := payload.(Conflater); ok {
		key += cf.ConflationKey()
	} else {
		key += string(data)
	}
	h.pub.Lock()
	defer h.pub.Unlock()
	h.mu.RLock()
	targets := make([]*Client, 0, len(h.clients))
	for c := range h.clients {
		if c.filter != nil && c.filter.kinds[kind] {
			targets = append(targets, c)
		}
	}
	h.mu.RUnlock()
	for _, c := range targets {
		if c.offer(data) {
			continue
		}
		if _, ok := c.events[key]; ok {
			h.replaced.Add(1)
			c.events[key] = data
		} else if c.foldedLen() >= h.opts.MaxPending {
			h.dropped.Add(1)
		} else {
			c.events[key] = data
			c.order = append(c.order, key)
		}
		c.mu.Unlock()
		c.wake()
	}
}

// Close closes every client and refuses new ones.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	clients := slices.Collect(maps.Keys(h.clients))
	h.mu.Unlock()
	for _, c := range clients {
		c.Close()
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own types are encoded here; they always encode.
		panic(fmt.Sprintf("push: encode %T: %v", v, err))
	}
	return b
}
