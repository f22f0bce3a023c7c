// Package brokerclient is the visualization server's gRPC client to the
// broker cluster: the read RPCs (ListHosts, Latest, QueryRange) with a
// deadline on every call and failover across the configured brokers.
//
// Calls go to the broker that answered last; when it is unavailable or does
// not answer within the timeout, the call moves on to the next broker in the
// list, and the one that answers becomes the broker for later calls. Only
// read-only RPCs pass through here, so trying one on a second broker is
// always safe. Other errors (invalid argument, not found, ...) are the
// broker's answer and are returned at once.
//
// Connections are insecure (plaintext) for now; TLS comes with the issue that
// secures every hop. Concurrency: a Client is safe for concurrent use; it
// starts no goroutines of its own beyond gRPC's, which Close ends.
package brokerclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

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
	addrs   []string
	conns   []*grpc.ClientConn
	stubs   []monitorpb.MonitorServiceClient
	current atomic.Int64 // index of the broker that answered last
}

// New returns a client of the brokers at addrs (gRPC host:port), each call
// bounded by timeout. It does not dial: connections are made on first use
// and re-made after failures, so a broker that is down at start-up is not
// an error.
func New(addrs []string, timeout time.Duration, logger *slog.Logger) (*Client, error) {
	if len(addrs) == 0 {
		return nil, errors.New("broker client: no broker address")
	}
	if timeout <= 0 {
		return nil, fmt.Errorf("broker client: timeout %s is not positive", timeout)
	}
	c := &Client{logger: logger, timeout: timeout}
	for _, addr := range addrs {
		conn, err := grpc.NewClient(addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvBytes)),
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: reconnectMaxDelay},
				MinConnectTimeout: timeout,
			}),
		)
		if err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("broker client for %s: %w", addr, err)
		}
		c.addrs = append(c.addrs, addr)
		c.conns = append(c.conns, conn)
		c.stubs = append(c.stubs, monitorpb.NewMonitorServiceClient(conn))
	}
	return c, nil
}

// Len returns the number of configured brokers.
func (c *Client) Len() int { return len(c.addrs) }

// ListHosts returns every host the brokers know, sorted by id.
func (c *Client) ListHosts(ctx context.Context) ([]*monitorpb.HostStatus, error) {
	resp, err := call(ctx, c, "list hosts", func(ctx context.Context, s monitorpb.MonitorServiceClient) (*monitorpb.ListHostsResponse, error) {
		return s.ListHosts(ctx, &monitorpb.ListHostsRequest{})
	})
	if err != nil {
		return nil, err
	}
	return resp.GetHosts(), nil
}

// Latest returns the host's newest snapshot, or nil (and no error) when the
// host has no data.
func (c *Client) Latest(ctx context.Context, hostID string) (*monitorpb.Snapshot, error) {
	resp, err := call(ctx, c, "latest of host "+hostID, func(ctx context.Context, s monitorpb.MonitorServiceClient) (*monitorpb.LatestResponse, error) {
		return s.Latest(ctx, &monitorpb.LatestRequest{HostId: hostID})
	})
	if err != nil {
		return nil, err
	}
	return resp.GetSnapshot(), nil
}

// QueryRange runs a range query.
func (c *Client) QueryRange(ctx context.Context, req *monitorpb.QueryRangeRequest) (*monitorpb.QueryRangeResponse, error) {
	return call(ctx, c, "query range of host "+req.GetHostId(), func(ctx context.Context, s monitorpb.MonitorServiceClient) (*monitorpb.QueryRangeResponse, error) {
		return s.QueryRange(ctx, req)
	})
}

// Reachable returns how many brokers have a ready connection, connecting to
// idle ones and waiting at most until ctx ends. It sends no RPC, so a health
// check costs the brokers nothing.
func (c *Client) Reachable(ctx context.Context) int {
	var (
		wg sync.WaitGroup
		n  atomic.Int64
	)
	for _, conn := range c.conns {
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
	var errs []error
	for i, conn := range c.conns {
		if err := conn.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close connection to broker %s: %w", c.addrs[i], err))
		}
	}
	return errors.Join(errs...)
}

// call runs rpc on the current broker and fails over to the next ones, each
// attempt with its own deadline, until one answers or all were tried.
func call[T any](ctx context.Context, c *Client, op string, rpc func(context.Context, monitorpb.MonitorServiceClient) (T, error)) (T, error) {
	var zero T
	n := len(c.stubs)
	first := int(c.current.Load())
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
		res, err := rpc(actx, c.stubs[idx])
		cancel()
		if err == nil {
			if idx != first && c.current.CompareAndSwap(int64(first), int64(idx)) {
				c.logger.Info("switched to another broker", "op", op, "broker", c.addrs[idx], "previous", c.addrs[first])
			}
			return res, nil
		}
		e.attempts = append(e.attempts, attempt{broker: c.addrs[idx], err: err})
		if ctx.Err() != nil || !failover(err) || (callerBound && status.Code(err) == codes.DeadlineExceeded) {
			break
		}
		if i < n-1 {
			c.logger.Warn("broker call failed, trying the next broker", "op", op, "broker", c.addrs[idx], "err", err)
		}
	}
	return zero, e
}

// failover reports whether err means "this broker cannot answer now" rather
// than an answer about the request.
func failover(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
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
