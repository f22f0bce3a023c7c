// Package service is the broker's gRPC server: the agents' Ingest stream,
// host registration and heartbeats, and the visualization server's queries
// and Subscribe stream. Domain errors become gRPC codes here and nowhere
// else.
//
// Ingest protocol (see proto/monitor.proto): every batch is validated on the
// stream's goroutine, then handed to the broker's write queue (pkg/queue),
// which coalesces the batches of many streams into one storage write per
// shard. A stream keeps receiving while its earlier batches are being
// written (up to Options.MaxInflightBatches) and acknowledges in sequence
// order, each batch only after storage reported it durable. When a write
// fails, or the queue is full, the stream gets FlowControl{resend_from_seq,
// retry_after} for the first batch in sequence order that was not stored,
// and ignores later batches until the agent resends from that sequence
// (go-back-N): acks stay cumulative and nothing unstored is ever
// acknowledged. A full queue never ends the stream.
//
// Drain makes every Ingest stream stop taking batches, closes the write
// queue (which writes what it holds at once and completes every batch),
// lets each stream acknowledge what was stored, and ends the streams with
// Unavailable so agents reconnect elsewhere. Drain must be called to stop
// the queue's workers.
package service

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/monitorhq/monitor/broker/internal/hub"
	"github.com/monitorhq/monitor/broker/internal/ingest"
	"github.com/monitorhq/monitor/pkg/queue"
	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// Options configure the service.
type Options struct {
	Limits       ingest.Limits
	WriteTimeout time.Duration // deadline of one storage write (the queue's flush)
	RetryAfter   time.Duration // asked of an agent in FlowControl
	// MaxInflightBatches is how many batches one Ingest stream may have
	// queued or being written; beyond it the stream stops reading (gRPC
	// flow control holds the agent). Default 16.
	MaxInflightBatches int
	// Queue tunes the write queue (zero fields: pkg/queue's defaults;
	// Queue.WriteTimeout defaults to WriteTimeout).
	Queue             queue.Config
	HeartbeatInterval time.Duration
	OfflineAfter      time.Duration
	MaxRange          time.Duration
	QueryTimeout      time.Duration
	Query             QueryOptions // resolution choice of range queries (query.go)
	SubscriberBuffer  int          // batches queued per Subscribe stream
	Now               func() time.Time
	// Ready, when set, holds back Ingest, Register and Heartbeat until it
	// is closed: a clustered broker closes it once it routes hosts by the
	// cluster's current storage ring, so it never writes by a stale one.
	Ready <-chan struct{}
	// OnRegister, when set, is told of every stored registration (the
	// broker records hosts in the cluster's registry). It must not block.
	OnRegister func(h storage.Host, at time.Time)
}

// Stats are the service's counters since start.
type Stats struct {
	BatchesAcked     uint64
	SnapshotsStored  uint64
	SamplesStored    uint64
	Rejections       uint64
	WriteFailures    uint64 // batches not stored because a write failed
	QueueFull        uint64 // batches refused because the write queue was full
	FlowControlSent  uint64
	IngestStreams    int64
	SubscriberDrops  uint64
	IgnoredAfterFlow uint64 // batches dropped because an earlier one was not stored
	Queue            queue.Stats
}

// Service implements monitorpb.MonitorServiceServer.
type Service struct {
	monitorpb.UnimplementedMonitorServiceServer

	store storage.Store
	queue *queue.Queue
	hub   *hub.Hub
	opts  Options
	log   *slog.Logger

	drainOnce sync.Once
	drain     chan struct{}

	fullLog, failLog logLimiter // flow-control warnings

	batchesAcked, snapshots, samples, rejections atomic.Uint64
	writeFailures, flowSent, ignored             atomic.Uint64
	queueFull                                    atomic.Uint64
	streams                                      atomic.Int64
}

// New returns a service over store and starts its write queue (one lane
// per shard when store is sharded, see pkg/queue). Call Drain to stop it.
func New(store storage.Store, opts Options, logger *slog.Logger) *Service {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.SubscriberBuffer <= 0 {
		opts.SubscriberBuffer = 1024
	}
	if opts.MaxInflightBatches <= 0 {
		opts.MaxInflightBatches = 16
	}
	if opts.Queue.WriteTimeout <= 0 {
		opts.Queue.WriteTimeout = opts.WriteTimeout
	}
	return &Service{
		store: store, queue: queue.New(store, opts.Queue, logger), hub: hub.New(),
		opts: opts, log: logger, drain: make(chan struct{}),
	}
}

// readyWait is how long a call waits for Ready before it is turned away
// (Unavailable: agents try another broker).
const readyWait = 5 * time.Second

// waitReady blocks until the broker routes by the cluster's ring (Ready),
// or fails with Unavailable when ctx ends or the service drains first.
func (s *Service) waitReady(ctx context.Context) error {
	if s.opts.Ready == nil {
		return nil
	}
	select {
	case <-s.opts.Ready:
		return nil
	default:
	}
	t := time.NewTimer(readyWait)
	defer t.Stop()
	select {
	case <-s.opts.Ready:
		return nil
	case <-s.drain:
		return errDraining
	case <-ctx.Done():
	case <-t.C:
	}
	return status.Error(codes.Unavailable, "broker is not ready: it has not applied the cluster's storage ring yet; try another broker")
}

// Drain stops ingest (see the package comment) and ends Subscribe streams.
// It returns when the write queue has written or failed everything it held;
// Ingest handlers then acknowledge what was stored and end.
func (s *Service) Drain() {
	s.drainOnce.Do(func() {
		close(s.drain)
		s.queue.Close()
		s.hub.Close()
	})
}

// Stats returns the counters.
func (s *Service) Stats() Stats {
	return Stats{
		BatchesAcked: s.batchesAcked.Load(), SnapshotsStored: s.snapshots.Load(),
		SamplesStored: s.samples.Load(), Rejections: s.rejections.Load(),
		WriteFailures: s.writeFailures.Load(), QueueFull: s.queueFull.Load(), FlowControlSent: s.flowSent.Load(),
		IngestStreams: s.streams.Load(), SubscriberDrops: s.hub.Dropped(),
		IgnoredAfterFlow: s.ignored.Load(), Queue: s.queue.Stats(),
	}
}
