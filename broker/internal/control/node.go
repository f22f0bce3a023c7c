package control

// All of the Raft wiring lives in this file: FSM → transport → stores →
// raft.Raft, bootstrap only without existing state.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"google.golang.org/protobuf/proto"

	monitorpb "github.com/monitorhq/monitor/proto"
)

// NodeConfig configures one Raft member.
type NodeConfig struct {
	ID        string // unique, stable across restarts (the broker's node_id)
	BindAddr  string // TCP address for Raft traffic; port 0 picks one
	Advertise string // address other members dial; empty: the bound address
	// AdvertiseHost replaces a wildcard bound host (0.0.0.0, ::) in the
	// advertised address when Advertise is empty.
	AdvertiseHost string
	DataDir       string // holds wal/ (log and stable store) and snapshots/

	HeartbeatTimeout time.Duration // the seed's 500 ms
	ElectionTimeout  time.Duration // the seed's 1 s
	// SnapshotThreshold is how many log entries since the last snapshot
	// trigger a new one; TrailingLogs how many stay after it.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64

	// Bootstrap forms a new single-member cluster when DataDir holds no
	// Raft state. A node with state never bootstraps again.
	Bootstrap bool
	// RaftLog receives hashicorp/raft's own log lines (warnings and up);
	// nil discards them.
	RaftLog io.Writer
	// ObserveApply, when set, is told how long each write applied on this
	// node took (replicated to a quorum and applied here).
	ObserveApply func(time.Duration)
	// Dial, when set, opens this node's outgoing Raft connections instead
	// of a plain TCP dial (fault-injection tests route them through a
	// proxy per link to partition a member).
	Dial func(addr string, timeout time.Duration) (net.Conn, error)
	// ServerTLS and ClientTLS, when both set, wrap every Raft connection in
	// TLS: accepted ones with ServerTLS (which should require a client
	// certificate, so only members speak Raft), dialed ones with ClientTLS
	// (its ServerName, when empty, is the dialed host).
	ServerTLS, ClientTLS *tls.Config
}

// Node is one member of the control-plane cluster.
type Node struct {
	cfg   NodeConfig
	fsm   *FSM
	raft  *raft.Raft
	trans *raft.NetworkTransport
	wal   *wal.WAL
	meta  *metadb.BoltMetaDB // owned here: raft-wal v0.4.0's Close leaves it open
	log   *slog.Logger

	notify   chan bool // raft's leadership notifications
	leaderMu sync.Mutex
	watchers []chan bool
	done     chan struct{}
	stopped  sync.WaitGroup

	// Leader observations (who leads, as any member sees it) for Watch.
	observations chan raft.Observation
	observer     *raft.Observer
	leaderSeen   chan struct{} // closed and replaced at every leader change
}

// ErrNotLeader is returned by writes on a follower; NotLeaderError says
// which member leads, so the caller can forward.
var ErrNotLeader = errors.New("not the raft leader")

// NotLeaderError carries the current leader (empty while an election runs).
type NotLeaderError struct{ LeaderID, LeaderAddr string }

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return "not the raft leader; no leader elected yet"
	}
	return fmt.Sprintf("not the raft leader; the leader is %s at %s", e.LeaderID, e.LeaderAddr)
}

func (e *NotLeaderError) Unwrap() error { return ErrNotLeader }

// Start opens the stores, starts Raft and, with Bootstrap and no prior
// state, forms a one-member cluster.
func Start(cfg NodeConfig, logger *slog.Logger) (*Node, error) {
	if cfg.ID == "" {
		return nil, errors.New("control: node id is empty")
	}
	if cfg.SnapshotThreshold == 0 {
		cfg.SnapshotThreshold = 8192
	}
	if cfg.SnapshotInterval == 0 {
		cfg.SnapshotInterval = 2 * time.Minute
	}
	if cfg.TrailingLogs == 0 {
		cfg.TrailingLogs = 10240
	}
	out := cfg.RaftLog
	if out == nil {
		out = io.Discard
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	// The leader lease must not exceed the heartbeat timeout.
	rc.LeaderLeaseTimeout = min(rc.LeaderLeaseTimeout, cfg.HeartbeatTimeout)
	rc.CommitTimeout = 20 * time.Millisecond
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	rc.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft." + cfg.ID, Level: hclog.Warn, Output: out})
	n := &Node{cfg: cfg, fsm: NewFSM(), log: logger, notify: make(chan bool, 16), done: make(chan struct{})}
	rc.NotifyCh = n.notify
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("control: raft config: %w", err)
	}

	// Transport.
	bind, err := net.ResolveTCPAddr("tcp", cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("control: raft address %q: %w", cfg.BindAddr, err)
	}
	l, err := net.ListenTCP("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("control: listen raft on %s: %w", cfg.BindAddr, err)
	}
	adv := l.Addr()
	if cfg.Advertise != "" {
		if adv, err = net.ResolveTCPAddr("tcp", cfg.Advertise); err != nil {
			l.Close()
			return nil, fmt.Errorf("control: raft advertise address %q: %w", cfg.Advertise, err)
		}
	} else if t := l.Addr().(*net.TCPAddr); t.IP.IsUnspecified() && cfg.AdvertiseHost != "" {
		if adv, err = net.ResolveTCPAddr("tcp", net.JoinHostPort(cfg.AdvertiseHost, strconv.Itoa(t.Port))); err != nil {
			l.Close()
			return nil, fmt.Errorf("control: raft advertise host %q: %w", cfg.AdvertiseHost, err)
		}
	} else if t.IP.IsUnspecified() {
		l.Close()
		return nil, fmt.Errorf("control: raft binds %s; set an advertise address other members can dial", cfg.BindAddr)
	}
	n.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  &tcpLayer{l: l, adv: adv, dial: cfg.Dial, serverTLS: cfg.ServerTLS, clientTLS: cfg.ClientTLS},
		MaxPool: 3, Timeout: 5 * time.Second,
		Logger: hclog.New(&hclog.LoggerOptions{Name: "raft-net." + cfg.ID, Level: hclog.Warn, Output: out}),
	})

	// Stores: raft-wal serves as log and stable store; snapshots in files.
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "wal"), 0o750); err != nil {
		n.trans.Close()
		return nil, fmt.Errorf("control: create raft dir: %w", err)
	}
	n.meta = &metadb.BoltMetaDB{}
	n.wal, err = wal.Open(filepath.Join(cfg.DataDir, "wal"), wal.WithMetaStore(n.meta))
	if err != nil {
		n.trans.Close()
		return nil, fmt.Errorf("control: open raft wal: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 3, hclog.New(&hclog.LoggerOptions{Name: "raft-snap", Level: hclog.Warn, Output: out}))
	if err != nil {
		n.close()
		return nil, fmt.Errorf("control: snapshot store: %w", err)
	}

	existing, err := raft.HasExistingState(n.wal, n.wal, snaps)
	if err != nil {
		n.close()
		return nil, fmt.Errorf("control: inspect raft state: %w", err)
	}
	n.raft, err = raft.NewRaft(rc, n.fsm, n.wal, n.wal, snaps, n.trans)
	if err != nil {
		n.close()
		return nil, fmt.Errorf("control: start raft: %w", err)
	}
	if cfg.Bootstrap && !existing {
		f := n.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
			Suffrage: raft.Voter, ID: rc.LocalID, Address: n.trans.LocalAddr(),
		}}})
		if err := f.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			n.Shutdown()
			return nil, fmt.Errorf("control: bootstrap: %w", err)
		}
		logger.Info("raft cluster bootstrapped", "id", cfg.ID, "addr", n.trans.LocalAddr())
	}
	n.leaderSeen = make(chan struct{})
	n.observations = make(chan raft.Observation, 16)
	n.observer = raft.NewObserver(n.observations, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	n.raft.RegisterObserver(n.observer)
	n.stopped.Add(2)
	go n.watchLeadership()
	go n.watchLeader()
	return n, nil
}

// watchLeader turns raft's leader observations into LeaderChanged closes.
func (n *Node) watchLeader() {
	defer n.stopped.Done()
	for {
		select {
		case <-n.done:
			return
		case <-n.observations:
			n.leaderMu.Lock()
			close(n.leaderSeen)
			n.leaderSeen = make(chan struct{})
			n.leaderMu.Unlock()
		}
	}
}

// LeaderChanged returns a channel closed at the next change of leader as
// this member sees it (an election, or learning of one).
func (n *Node) LeaderChanged() <-chan struct{} {
	n.leaderMu.Lock()
	defer n.leaderMu.Unlock()
	return n.leaderSeen
}

// watchLeadership fans raft's NotifyCh out to LeadershipChanges watchers;
// leadership is consumed from raft's channel, never polled.
func (n *Node) watchLeadership() {
	defer n.stopped.Done()
	for {
		select {
		case <-n.done:
			return
		case leader := <-n.notify:
			n.log.Info("raft leadership changed", "id", n.cfg.ID, "leader", leader, "term", n.raft.Stats()["term"])
			n.leaderMu.Lock()
			for _, w := range n.watchers {
				select {
				case w <- leader:
				default: // a watcher that does not keep up sees the next change
				}
			}
			n.leaderMu.Unlock()
		}
	}
}

// LeadershipChanges returns a channel that receives true when this node
// becomes leader and false when it stops being leader.
func (n *Node) LeadershipChanges() <-chan bool {
	ch := make(chan bool, 4)
	n.leaderMu.Lock()
	n.watchers = append(n.watchers, ch)
	n.leaderMu.Unlock()
	return ch
}

// FSM returns the state machine (for reads).
func (n *Node) FSM() *FSM { return n.fsm }

// Addr is the Raft address other members dial.
func (n *Node) Addr() string { return string(n.trans.LocalAddr()) }

// ID is this member's id.
func (n *Node) ID() string { return n.cfg.ID }

// IsLeader reports whether this node leads now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the current leader's id and Raft address ("" while none).
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

func timeout(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return max(time.Until(dl), time.Millisecond)
	}
	return 10 * time.Second
}

// notLeader turns raft's "refused, not leader" into a *NotLeaderError (the
// write was never appended, so it is safe to retry at the leader). Losing
// leadership after the entry was appended is different: the write may still
// commit, so that error says the outcome is unknown.
func (n *Node) notLeader(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		id, addr := n.Leader()
		return &NotLeaderError{LeaderID: id, LeaderAddr: addr}
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("control: leadership lost while the write was in flight; it may or may not be applied: %w", err)
	}
	return err
}

// Apply replicates one command and waits until this node's FSM applied it.
// On a follower it returns a *NotLeaderError.
func (n *Node) Apply(ctx context.Context, typ monitorpb.CommandType, msg proto.Message) error {
	b, err := Encode(typ, msg)
	if err != nil {
		return err
	}
	return n.ApplyRaw(ctx, b)
}

// ApplyRaw replicates an already encoded entry (forwarded from a follower).
func (n *Node) ApplyRaw(ctx context.Context, entry []byte) error {
	start := time.Now()
	f := n.raft.Apply(entry, timeout(ctx))
	if err := f.Error(); err != nil {
		return n.notLeader(err)
	}
	if n.cfg.ObserveApply != nil {
		n.cfg.ObserveApply(time.Since(start))
	}
	if err, ok := f.Response().(error); ok {
		return err
	}
	return nil
}

// ConsistentRead makes the following FSM read linearizable: it commits a
// barrier entry in this leader's term (which needs a quorum, so a deposed
// leader cannot) and waits until every committed entry is applied.
//
// It does not use raft's VerifyLeader: that future is queued on a buffered
// channel and never answered when the node shuts down meanwhile, so a
// reader racing a shutdown would block forever (found by the leader-kill
// fault test). Barrier honours the deadline and the shutdown.
func (n *Node) ConsistentRead(ctx context.Context) error {
	if err := n.raft.Barrier(timeout(ctx)).Error(); err != nil {
		return n.notLeader(err)
	}
	return nil
}

// AddVoter adds (or re-addresses) a member; leader only.
func (n *Node) AddVoter(ctx context.Context, id, addr string) error {
	return n.notLeader(n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout(ctx)).Error())
}

// RemoveServer removes a member; leader only.
func (n *Node) RemoveServer(ctx context.Context, id string) error {
	return n.notLeader(n.raft.RemoveServer(raft.ServerID(id), 0, timeout(ctx)).Error())
}

// RaftServer is one member of the Raft configuration.
type RaftServer struct {
	ID, Addr string
	Voter    bool
}

// Status is what `monitorctl status` shows of Raft.
type Status struct {
	ID, State, LeaderID, LeaderAddr string
	Term, CommitIndex, AppliedIndex uint64
	Servers                         []RaftServer
}

// Status reports this node's view of the cluster.
func (n *Node) Status() (Status, error) {
	st := Status{ID: n.cfg.ID, State: n.raft.State().String(), Term: n.raft.CurrentTerm(),
		CommitIndex: n.raft.CommitIndex(), AppliedIndex: n.raft.AppliedIndex()}
	st.LeaderID, st.LeaderAddr = n.Leader()
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return st, fmt.Errorf("control: raft configuration: %w", err)
	}
	for _, s := range f.Configuration().Servers {
		st.Servers = append(st.Servers, RaftServer{ID: string(s.ID), Addr: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	return st, nil
}

// Snapshot forces a snapshot now (tests and admins).
func (n *Node) Snapshot() error { return n.raft.Snapshot().Error() }

// Shutdown stops Raft and closes the stores. It is safe to call twice.
func (n *Node) Shutdown() error {
	select {
	case <-n.done:
		return nil
	default:
	}
	close(n.done)
	n.raft.DeregisterObserver(n.observer)
	err := n.raft.Shutdown().Error()
	n.stopped.Wait()
	n.close()
	return err
}

func (n *Node) close() {
	if n.trans != nil {
		n.trans.Close()
	}
	if n.wal != nil {
		n.wal.Close()
	}
	if n.meta != nil {
		n.meta.Close()
	}
}

// tcpLayer is raft's StreamLayer over a listener we bound ourselves, so
// port 0 works and the advertised address can differ from the bound one.
// It tracks accepted connections and closes them on Close: raft's
// NetworkTransport leaves inbound connection handlers blocked in Read until
// the peer hangs up, which would outlive the node.
//
// With TLS configured every connection is TLS both ways: the handshake of an
// accepted connection runs on raft's first read (bounded by the transport's
// read deadline), that of a dialed one before Dial returns.
type tcpLayer struct {
	l    *net.TCPListener
	adv  net.Addr
	dial func(addr string, timeout time.Duration) (net.Conn, error) // nil: TCP

	serverTLS, clientTLS *tls.Config // both nil: plain TCP

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func (t *tcpLayer) Accept() (net.Conn, error) {
	c, err := t.l.Accept()
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	if t.conns == nil {
		t.conns = map[net.Conn]struct{}{}
	}
	if t.serverTLS != nil {
		c = tls.Server(c, t.serverTLS)
	}
	tc := &trackedConn{Conn: c, layer: t}
	t.conns[tc] = struct{}{}
	return tc, nil
}

func (t *tcpLayer) Close() error {
	err := t.l.Close()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for c := range t.conns {
		c.(*trackedConn).Conn.Close()
	}
	t.conns = nil
	return err
}

func (t *tcpLayer) Addr() net.Addr { return t.adv }

func (t *tcpLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	var (
		c   net.Conn
		err error
	)
	if t.dial != nil {
		c, err = t.dial(string(addr), timeout)
	} else {
		c, err = net.DialTimeout("tcp", string(addr), timeout)
	}
	if err != nil || t.clientTLS == nil {
		return c, err
	}
	cfg := t.clientTLS
	if cfg.ServerName == "" {
		host, _, herr := net.SplitHostPort(string(addr))
		if herr != nil {
			c.Close()
			return nil, fmt.Errorf("raft TLS dial %s: %w", addr, herr)
		}
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	tc := tls.Client(c, cfg)
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("raft TLS handshake with %s: %w", addr, err)
	}
	return tc, nil
}

type trackedConn struct {
	net.Conn
	layer *tcpLayer
}

func (c *trackedConn) Close() error {
	c.layer.mu.Lock()
	delete(c.layer.conns, c)
	c.layer.mu.Unlock()
	return c.Conn.Close()
}
