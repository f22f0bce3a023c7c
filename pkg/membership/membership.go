// Package membership follows the broker cluster's member list for the
// brokers' clients (agents, the visualization server), so that they learn
// every broker from any one of them and follow joins, removals and leader
// changes without a restart.
//
// A Watcher holds one ClusterService.Watch stream to one reachable broker:
// the broker sends its status at once and again on every change, and the
// Watcher publishes the members' gRPC addresses. When the stream breaks it
// moves to another broker at once: the seeds first, then the brokers it
// learned, the broker whose stream just broke last. When no broker answers
// it waits Options.Retry, doubling (with jitter) up to 30 × Retry, and
// tries them all again. The seeds are never forgotten: if every learned
// broker vanishes, the seeds are asked again.
//
// Brokers that do not serve Watch (codes.Unimplemented: brokers older than
// the call, or built without a cluster) make the seed list the list; the
// Watcher says so once and asks again only every minute. A status that
// lists no member with a gRPC address (a broker without a cluster, or one
// that has not learned it yet) leaves the list as it is.
//
// A stream whose broker silently disappears (a partition) is noticed by
// TCP keepalive (Go's dialer enables it: about two minutes); meanwhile the
// list is stale, which clients survive: they fail over on their own.
//
// Concurrency: Run is called once and owns every goroutine and connection
// the Watcher makes; Brokers and Updates are safe from any goroutine.
package membership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	monitorpb "github.com/monitorhq/monitor/proto"
)

// Broker is one broker as the cluster lists it.
type Broker struct {
	ID     string // the broker's node id; empty for a seed not yet confirmed
	Addr   string // its gRPC address (host:port)
	Leader bool   // the Raft leader when the list was sent
}

// Options tune a Watcher; the zero value is usable.
type Options struct {
	// DialOptions are used for every connection; default insecure
	// credentials. Given, they must include the transport credentials.
	DialOptions []grpc.DialOption
	// Retry is the wait between attempts when no broker answers; it
	// doubles, with jitter, up to 30 × Retry. Default 1s.
	Retry  time.Duration
	Logger *slog.Logger // default: discard
}

const (
	// DefaultRetry is Options.Retry when zero.
	DefaultRetry = time.Second
	// firstStatusTimeout bounds connecting to a broker and receiving its
	// first status (which a broker sends at once).
	firstStatusTimeout = 5 * time.Second
	// staticRetry is how often brokers that answered Unimplemented are
	// asked again (an upgraded cluster is found within this).
	staticRetry = time.Minute
	// maxRetryFactor caps the backoff at this many times Retry.
	maxRetryFactor = 30
)

// Watcher follows the broker list: it holds a Watch stream to one
// reachable broker (seeds first, then brokers it learned), moves to another
// when the stream breaks, and publishes the list.
type Watcher struct {
	seeds   []string // as given, deduplicated
	dial    []grpc.DialOption
	retry   time.Duration
	log     *slog.Logger
	updates chan []Broker
	running atomic.Bool

	mu      sync.Mutex
	brokers []Broker // sorted by Addr
}

// New returns a Watcher that starts from seeds (gRPC addresses of any
// brokers of the cluster). It connects to nothing until Run.
func New(seeds []string, opts Options) (*Watcher, error) {
	if len(seeds) == 0 {
		return nil, errors.New("membership: no seed brokers")
	}
	if opts.Retry < 0 {
		return nil, fmt.Errorf("membership: retry %s is negative", opts.Retry)
	}
	w := &Watcher{
		dial:    opts.DialOptions,
		retry:   opts.Retry,
		log:     opts.Logger,
		updates: make(chan []Broker, 1),
	}
	if w.retry == 0 {
		w.retry = DefaultRetry
	}
	if len(w.dial) == 0 {
		w.dial = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	for _, s := range seeds {
		if strings.TrimSpace(s) == "" {
			return nil, errors.New("membership: empty seed broker address")
		}
		if !slices.Contains(w.seeds, s) {
			w.seeds = append(w.seeds, s)
		}
	}
	w.brokers = w.seedList()
	return w, nil
}

// seedList returns the seeds as a broker list, sorted by Addr.
func (w *Watcher) seedList() []Broker {
	out := make([]Broker, len(w.seeds))
	for i, s := range w.seeds {
		out[i] = Broker{Addr: s}
	}
	slices.SortFunc(out, func(a, b Broker) int { return strings.Compare(a.Addr, b.Addr) })
	return out
}

// Brokers returns the current list, sorted by Addr: the seeds until a
// broker answered.
func (w *Watcher) Brokers() []Broker {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.brokers)
}

// Updates returns a channel that holds the newest list after each change
// (buffered, one slot: a reader that falls behind gets the newest list, not
// every step, and never blocks the Watcher). Each list is the receiver's to
// keep. It is never closed.
func (w *Watcher) Updates() <-chan []Broker { return w.updates }

// publish makes list (sorted) the current list if it differs.
func (w *Watcher) publish(list []Broker) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if slices.Equal(list, w.brokers) {
		return
	}
	w.brokers = list
	// Replace what the reader has not taken yet. Only publish sends, under
	// mu, so after the drain the slot is free.
	select {
	case <-w.updates:
	default:
	}
	select {
	case w.updates <- slices.Clone(list):
	default:
	}
	w.log.Info("broker list changed", "brokers", addrs(list))
}

func addrs(list []Broker) []string {
	out := make([]string, len(list))
	for i, b := range list {
		out[i] = b.Addr
	}
	return out
}

// fromStatus turns a broker's status into a list sorted by Addr; members
// without a gRPC address are skipped. ok is false when none is left.
func fromStatus(resp *monitorpb.StatusResponse) (list []Broker, ok bool) {
	seen := map[string]bool{}
	for _, m := range resp.GetMembers() {
		mem := m.GetMember()
		addr := mem.GetGrpcAddr()
		if addr == "" || seen[addr] {
			continue
		}
		seen[addr] = true
		leader := m.GetLeader() || resp.GetLeaderId() != "" && mem.GetId() == resp.GetLeaderId()
		list = append(list, Broker{ID: mem.GetId(), Addr: addr, Leader: leader})
	}
	slices.SortFunc(list, func(a, b Broker) int { return strings.Compare(a.Addr, b.Addr) })
	return list, len(list) > 0
}

// candidates returns the brokers to try, in order: the seeds, then the
// learned brokers that are not seeds; last (the broker whose stream just
// broke) is moved to the end.
func (w *Watcher) candidates(last string) []string {
	out := slices.Clone(w.seeds)
	for _, b := range w.Brokers() {
		if !slices.Contains(out, b.Addr) {
			out = append(out, b.Addr)
		}
	}
	if i := slices.Index(out, last); i >= 0 {
		out = append(slices.Delete(out, i, i+1), last)
	}
	return out
}

// Run follows the cluster until ctx ends, then returns nil. It returns an
// error only when called a second time.
func (w *Watcher) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("membership: Run called twice")
	}
	failures := 0   // consecutive rounds in which no broker answered
	last := ""      // the broker whose stream broke last
	static := false // every broker answered Unimplemented: the seeds are the list
	for {
		r := w.round(ctx, last)
		if ctx.Err() != nil {
			return nil
		}
		var wait time.Duration
		switch {
		case r.followed != "":
			if static {
				w.log.Info("brokers now serve cluster membership; following it", "broker", r.followed)
				static = false
			}
			w.log.Info("membership stream ended; moving to another broker", "broker", r.followed, "err", r.err)
			last, failures = r.followed, 0
			if r.lived >= w.retry {
				continue // a stream that worked for a while: try the next broker at once
			}
			wait = w.backoff(1) // one that ends at once must not make a busy loop
		case r.unimplemented > 0:
			if !static {
				w.log.Info("brokers do not serve cluster membership (older brokers or no cluster); using the configured broker list",
					"brokers", w.seeds, "recheck_every", staticRetry)
				static = true
			}
			w.publish(w.seedList())
			failures, wait = 0, staticRetry
		default:
			failures++
			// A long outage logs at 1, 2, 4, 8, … rounds, not every one.
			lvl := slog.LevelDebug
			if failures&(failures-1) == 0 {
				lvl = slog.LevelWarn
			}
			wait = w.backoff(failures)
			w.log.Log(ctx, lvl, "no broker answers the membership watch; keeping the last list",
				"tried", r.tried, "failures", failures, "retry_in", wait.Round(time.Millisecond), "err", r.err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// roundResult says how one pass over the candidates went.
type roundResult struct {
	followed      string        // the broker whose stream delivered statuses (then ended)
	lived         time.Duration // how long that stream delivered
	unimplemented int           // brokers that answered Unimplemented
	tried         []string
	err           error // the last error
}

// round tries the candidates in order until one delivers statuses; it
// returns when that stream ends, or when every candidate failed.
func (w *Watcher) round(ctx context.Context, last string) roundResult {
	var r roundResult
	for _, addr := range w.candidates(last) {
		r.tried = append(r.tried, addr)
		got, lived, unimpl, err := w.follow(ctx, addr)
		r.err = err
		if ctx.Err() != nil {
			return r
		}
		if got {
			r.followed, r.lived = addr, lived
			return r
		}
		if unimpl {
			r.unimplemented++
		}
		w.log.Debug("cannot watch broker membership", "broker", addr, "err", err)
	}
	return r
}

var errNoFirstStatus = fmt.Errorf("no status within %s", firstStatusTimeout)

// follow opens a Watch stream to addr and applies every status it sends
// until the stream ends. got reports whether a status arrived, lived how
// long the stream lasted after the first, unimpl whether the broker does
// not serve Watch.
func (w *Watcher) follow(ctx context.Context, addr string) (got bool, lived time.Duration, unimpl bool, err error) {
	conn, err := grpc.NewClient(addr, w.dial...)
	if err != nil {
		return false, 0, false, fmt.Errorf("dial broker %s: %w", addr, err)
	}
	defer conn.Close()
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timer := time.AfterFunc(firstStatusTimeout, func() { cancel(errNoFirstStatus) })
	defer timer.Stop()

	stream, err := monitorpb.NewClusterServiceClient(conn).Watch(sctx, &monitorpb.StatusRequest{})
	var first time.Time
	for err == nil {
		var resp *monitorpb.StatusResponse
		if resp, err = stream.Recv(); err != nil {
			break
		}
		if !got {
			timer.Stop()
			got, first = true, time.Now()
			w.log.Debug("following broker membership", "broker", addr, "node", resp.GetNodeId())
		}
		if list, ok := fromStatus(resp); ok {
			w.publish(list)
		}
	}
	if got {
		lived = time.Since(first)
	}
	unimpl = status.Code(err) == codes.Unimplemented
	if cause := context.Cause(sctx); errors.Is(cause, errNoFirstStatus) {
		err = fmt.Errorf("%w (%w)", cause, err)
	}
	return got, lived, unimpl, fmt.Errorf("watch membership on broker %s: %w", addr, err)
}

// backoff returns the wait after failures consecutive failed rounds:
// Retry·2^(failures-1), capped at 30·Retry, drawn uniformly from its upper
// half.
func (w *Watcher) backoff(failures int) time.Duration {
	d, limit := w.retry, w.retry*maxRetryFactor
	for i := 1; i < failures && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	return d/2 + rand.N(d/2+1)
}
