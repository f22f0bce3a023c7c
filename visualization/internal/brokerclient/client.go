// Package brokerclient is the visualization server's gRPC client to the
// broker cluster: the read RPCs (ListHosts, Latest, QueryRange), the
// cluster's status and alert rules (ClusterService), with a deadline on
// every call and failover across the brokers; and each broker's Subscribe
// stream for the live path. The broker list follows the cluster's
// membership (SetBrokers).
//
// Calls go to the broker that answered last; when it is unavailable or does
// not answer within the timeout, the call moves on to the next broker in the
// list, and the one that answers becomes the broker for later calls. Only
// read-only and idempotent RPCs (a put or removal of an alert rule by id)
// pass through here, so trying one on a second broker is always safe.
// Other errors (invalid argument, not found, ...) are the
// broker's answer and are returned at once.
//
// Connections are TLS when WithAuth's creds say so (broker_tls), plaintext
// otherwise. The cluster secret goes with every call, reads and streams
// included ("authorization: Bearer <secret>", pkg/grpcauth): brokers whose
// auth is on require it of every caller that is not an agent.
// DialOptions returns the same credentials for other clients of the
// brokers (the membership watcher).
//
// Concurrency: a Client is safe for concurrent use; it starts no
// goroutines of its own beyond gRPC's, which Close ends.
package brokerclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	"github.com/monitorhq/monitor/pkg/grpcauth"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// maxRecvBytes bounds one response. The 4 MiB gRPC default is too small for
// ListHosts at 10,000 hosts or a range query of many series at max_points.
const maxRecvBytes = 64 << 20

// reconnectMaxDelay caps gRPC's reconnect backoff (120 s by default) so a
// broker that comes back is used again within seconds.
const reconnectMaxDelay = 3 * time.Second

// Client calls the brokers with failover.
type Client struct {
	logger  *slog.Logger
	timeout time.Duration
	// creds are the connections' TLS and cluster secret (WithAuth);
	// dialOpts what they make.
	creds    grpcauth.Client
	dialOpts []grpc.DialOption

	mu      sync.Mutex // serializes SetBrokers and Close
	state   atomic.Pointer[state]
	current atomic.Pointer[string] // address of the broker that answered last
	closed  bool
}

// state is one broker list with its connections; replaced as a whole.
type state struct {
	addrs   []string
	conns   []*grpc.ClientConn
	monitor []monitorpb.MonitorServiceClient
	cluster []monitorpb.ClusterServiceClient
}

// Option tunes a Client.
type Option func(*Client)

// WithAuth makes the connections use creds: TLS from creds.TLS
// (broker_tls; a client certificate in it answers brokers that require
// mTLS) and creds.Token, the cluster secret, on every call. grpcauth
// sends the secret only over TLS, or in clear text to a loopback broker
// when creds.AllowInsecureLoopback is set; a call that would send it in
// clear to another machine fails. Without WithAuth: plaintext, no secret.
func WithAuth(creds grpcauth.Client) Option { return func(c *Client) { c.creds = creds } }

// DialOptions returns the transport and per-call credentials of this
// client, for other gRPC clients of the same brokers (pkg/membership).
func (c *Client) DialOptions() []grpc.DialOption { return slices.Clone(c.dialOpts) }

// New returns a client of the brokers at addrs (gRPC host:port), each call
// bounded by timeout. It does not dial: connections are made on first use
// and re-made after failures, so a broker that is down at start-up is not
// an error.
func New(addrs []string, timeout time.Duration, logger *slog.Logger, opts ...Option) (*Client, error) {
	if len(addrs) == 0 {
		return nil, errors.New("broker client: no broker address")
	}
	if timeout <= 0 {
		return nil, fmt.Errorf("broker client: timeout %s is not positive", timeout)
	}
	c := &Client{logger: logger, timeout: timeout}
	for _, o := range opts {
		o(c)
	}
	dialOpts, err := c.creds.DialOptions()
	if err != nil {
		return nil, fmt.Errorf("broker client: %w", err)
	}
	c.dialOpts = dialOpts
	c.state.Store(&state{})
	if err := c.SetBrokers(addrs); err != nil {
		return nil, err
	}
	return c, nil
}

// dial makes a connection to one broker (connected on first use).
func (c *Client) dial(addr string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient(addr, append(c.DialOptions(),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvBytes)),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: reconnectMaxDelay},
			MinConnectTimeout: c.timeout,
		}),
	)...)
	if err != nil {
		return nil, fmt.Errorf("broker client for %s: %w", addr, err)
	}
	return conn, nil
}

// SetBrokers makes addrs the brokers called (the cluster's member list,
// from pkg/membership): connections to brokers still listed are kept,
// new ones are made, those of brokers no longer listed are closed (a call
// in flight on one fails over to the next broker).
func (c *Client) SetBrokers(addrs []string) error {
	if len(addrs) == 0 {
		return errors.New("broker client: no broker address")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("broker client: closed")
	}
	old := c.state.Load()
	keep := make(map[string]*grpc.ClientConn, len(old.addrs))
	for i, a := range old.addrs {
		keep[a] = old.conns[i]
	}
	next := &state{}
	for _, addr := range addrs {
		if slices.Contains(next.addrs, addr) {
			continue
		}
		conn, ok := keep[addr]
		if ok {
			delete(keep, addr)
		} else {
			var err error
			if conn, err = c.dial(addr); err != nil {
				for i, cn := range next.conns {
					if !slices.Contains(old.addrs, next.addrs[i]) {
						_ = cn.Close()
					}
				}
				return err
			}
		}
		next.addrs = append(next.addrs, addr)
		next.conns = append(next.conns, conn)
		next.monitor = append(next.monitor, monitorpb.NewMonitorServiceClient(conn))
		next.cluster = append(next.cluster, monitorpb.NewClusterServiceClient(conn))
	}
	c.state.Store(next)
	for addr, conn := range keep {
		if err := conn.Close(); err != nil {
			c.logger.Warn("close connection to a removed broker", "broker", addr, "err", err)
		}
	}
	return nil
}

// Brokers returns the brokers called, in failover order.
func (c *Client) Brokers() []string { return slices.Clone(c.state.Load().addrs) }

// Len returns the number of brokers.
func (c *Client) Len() int { return len(c.state.Load().addrs) }

// ListHosts returns every host the brokers know, sorted by id.
func (c *Client) ListHosts(ctx context.Context) ([]*monitorpb.HostStatus, error) {
	resp, err := call(ctx, c, "list hosts", func(ctx context.Context, s *state, i int) (*monitorpb.ListHostsResponse, error) {
		return s.monitor[i].ListHosts(ctx, &monitorpb.ListHostsRequest{})
	})
	if err != nil {
		return nil, err
	}
	return resp.GetHosts(), nil
}

// Latest returns the host's newest snapshot, or nil (and no error) when the
// host has no data.
func (c *Client) Latest(ctx context.Context, hostID string) (*monitorpb.Snapshot, error) {
	resp, err := call(ctx, c, "latest of host "+hostID, func(ctx context.Context, s *state, i int) (*monitorpb.LatestResponse, error) {
		return s.monitor[i].Latest(ctx, &monitorpb.LatestRequest{HostId: hostID})
	})
	if err != nil {
		return nil, err
	}
	return resp.GetSnapshot(), nil
}

// QueryRange runs a range query.
func (c *Client) QueryRange(ctx context.Context, req *monitorpb.QueryRangeRequest) (*monitorpb.QueryRangeResponse, error) {
	return call(ctx, c, "query range of host "+req.GetHostId(), func(ctx context.Context, s *state, i int) (*monitorpb.QueryRangeResponse, error) {
		return s.monitor[i].QueryRange(ctx, req)
	})
}

// Subscribe opens the stored-snapshot stream of the broker at addr (one
// of Brokers; no failover: every broker streams what it stored itself).
// The stream lives until ctx ends or the broker ends it.
func (c *Client) Subscribe(ctx context.Context, addr string, req *monitorpb.SubscribeRequest) (grpc.ServerStreamingClient[monitorpb.StoredBatch], error) {
	s := c.state.Load()
	i := slices.Index(s.addrs, addr)
	if i < 0 {
		return nil, status.Errorf(codes.Unavailable, "broker %s is not in the broker list", addr)
	}
	st, err := s.monitor[i].Subscribe(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("subscribe to broker %s: %w", addr, err)
	}
	return st, nil
}

// ClusterStatus returns the cluster's status (ClusterService.Status):
// members, leader, term, shards, ring version, migration.
func (c *Client) ClusterStatus(ctx context.Context) (*monitorpb.StatusResponse, error) {
	return call(ctx, c, "cluster status", func(ctx context.Context, s *state, i int) (*monitorpb.StatusResponse, error) {
		return s.cluster[i].Status(ctx, &monitorpb.StatusRequest{})
	})
}

// ListAlertRules returns the alert rules stored in the control plane.
func (c *Client) ListAlertRules(ctx context.Context) ([]*monitorpb.AlertRule, error) {
	resp, err := call(ctx, c, "list alert rules", func(ctx context.Context, s *state, i int) (*monitorpb.ListAlertRulesResponse, error) {
		return s.cluster[i].ListAlertRules(ctx, &monitorpb.ListAlertRulesRequest{})
	})
	if err != nil {
		return nil, err
	}
	return resp.GetRules(), nil
}

// PutAlertRule creates or replaces the rule with rule.Id and returns it as
// stored. A put is idempotent, so retrying it on another broker is safe.
func (c *Client) PutAlertRule(ctx context.Context, rule *monitorpb.AlertRule) (*monitorpb.AlertRule, error) {
	return call(ctx, c, "put alert rule "+rule.GetId(), func(ctx context.Context, s *state, i int) (*monitorpb.AlertRule, error) {
		return s.cluster[i].PutAlertRule(ctx, rule)
	})
}

// RemoveAlertRule deletes the rule with id and reports whether it existed.
func (c *Client) RemoveAlertRule(ctx context.Context, id string) (bool, error) {
	resp, err := call(ctx, c, "remove alert rule "+id, func(ctx context.Context, s *state, i int) (*monitorpb.DeleteAlertRuleResponse, error) {
		return s.cluster[i].RemoveAlertRule(ctx, &monitorpb.DeleteAlertRule{Id: id})
	})
	if err != nil {
		return false, err
	}
	return resp.GetExisted(), nil
}

// Reachable returns how many brokers have a ready connection, connecting to
// idle ones and waiting at most until ctx ends. It sends no RPC, so a health
// check costs the brokers nothing.
func (c *Client) Reachable(ctx context.Context) int {
	var (
		wg sync.WaitGroup
		n  atomic.Int64
	)
	for _, conn := range c.state.Load().conns {
		wg.Go(func() {
			if ready(ctx, conn) {
				n.Add(1)
			}
		})
	}
	wg.Wait()
	return int(n.Load())
}

// ready waits for conn to be ready or to fail. A connection in transient
// failure counts as down even while gRPC retries in the background: RPCs on
// it fail at once.
func ready(ctx context.Context, conn *grpc.ClientConn) bool {
	for {
		s := conn.GetState()
		switch s {
		case connectivity.Ready:
			return true
		case connectivity.TransientFailure, connectivity.Shutdown:
			return false
		case connectivity.Idle:
			conn.Connect()
		}
		if !conn.WaitForStateChange(ctx, s) {
			return false
		}
	}
}

// Close closes every broker connection. In-flight calls fail with Canceled.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	s := c.state.Load()
	var errs []error
	for i, conn := range s.conns {
		if err := conn.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close connection to broker %s: %w", s.addrs[i], err))
		}
	}
	return errors.Join(errs...)
}

// call runs rpc on the current broker and fails over to the next ones, each
// attempt with its own deadline, until one answers or all were tried.
func call[T any](ctx context.Context, c *Client, op string, rpc func(context.Context, *state, int) (T, error)) (T, error) {
	var zero T
	s := c.state.Load()
	n := len(s.addrs)
	first := 0
	cur := c.current.Load()
	if cur != nil {
		first = max(0, slices.Index(s.addrs, *cur))
	}
	e := &callError{op: op}
	for i := range n {
		idx := (first + i) % n
		actx, cancel := context.WithTimeout(ctx, c.timeout)
		// When the caller's deadline is the binding one, a DeadlineExceeded
		// is the caller giving up (gRPC may report it a moment before ctx
		// itself expires): no failover then.
		callerBound := false
		if cdl, ok := ctx.Deadline(); ok {
			adl, _ := actx.Deadline()
			callerBound = !cdl.After(adl)
		}
		res, err := rpc(actx, s, idx)
		cancel()
		if err == nil {
			if addr := s.addrs[idx]; cur == nil || *cur != addr {
				if c.current.CompareAndSwap(cur, &addr) && cur != nil {
					c.logger.Info("switched to another broker", "op", op, "broker", addr, "previous", *cur)
				}
			}
			return res, nil
		}
		e.attempts = append(e.attempts, attempt{broker: s.addrs[idx], err: err})
		if ctx.Err() != nil || !failover(err) || (callerBound && status.Code(err) == codes.DeadlineExceeded) {
			break
		}
		if i < n-1 {
			c.logger.Warn("broker call failed, trying the next broker", "op", op, "broker", s.addrs[idx], "err", err)
		}
	}
	return zero, e
}

// failover reports whether err means "this broker cannot answer now" rather
// than an answer about the request.
func failover(err error) bool {
	switch status.Code(err) {
	// Canceled with the caller's context alive: the connection was closed
	// under the call (the broker left the list).
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return true
	}
	return false
}

type attempt struct {
	broker string
	err    error
}

// callError is a failed call: every broker tried, in order, with its answer.
// Its gRPC status carries the last broker's code and message, so the HTTP
// edge maps it like any gRPC error, while Error lists every attempt.
type callError struct {
	op       string
	attempts []attempt
}

func (e *callError) Error() string {
	var b strings.Builder
	b.WriteString(e.op)
	if len(e.attempts) > 1 {
		fmt.Fprintf(&b, ": no broker answered (%d tried)", len(e.attempts))
	}
	for i, a := range e.attempts {
		sep := "; "
		if i == 0 {
			sep = ": "
		}
		st := status.Convert(a.err)
		fmt.Fprintf(&b, "%sbroker %s: %s: %s", sep, a.broker, st.Code(), st.Message())
	}
	return b.String()
}

func (e *callError) last() error { return e.attempts[len(e.attempts)-1].err }

// Unwrap returns the last broker's error.
func (e *callError) Unwrap() error { return e.last() }

// GRPCStatus returns the last broker's status.
func (e *callError) GRPCStatus() *status.Status { return status.Convert(e.last()) }
