// Package service is the broker's gRPC server: the agents' Ingest stream,
// host registration and heartbeats, and the visualization server's queries
// and Subscribe stream. Domain errors become gRPC codes here and nowhere
// else.
//
// Ingest protocol (see proto/monitor.proto): batches are processed in order
// per stream; a batch is acknowledged only after storage reported it
// durable. When a write fails the stream gets FlowControl{resend_from_seq,
// retry_after} and ignores later batches until the agent resends from that
// sequence (go-back-N), so acks stay cumulative and nothing unstored is ever
// acknowledged.
//
// Drain makes every Ingest handler finish the batch it is writing, send its
// ack and end the stream with Unavailable, so agents reconnect elsewhere.
package service

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/monitorhq/monitor/broker/internal/hub"
	"github.com/monitorhq/monitor/broker/internal/ingest"
	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// Options configure the service.
type Options struct {
	Limits            ingest.Limits
	WriteTimeout      time.Duration
	RetryAfter        time.Duration
	HeartbeatInterval time.Duration
	OfflineAfter      time.Duration
	MaxRange          time.Duration
	QueryTimeout      time.Duration
	SubscriberBuffer  int // batches queued per Subscribe stream
	Now               func() time.Time
}

// Stats are the service's counters since start.
type Stats struct {
	BatchesAcked     uint64
	SnapshotsStored  uint64
	SamplesStored    uint64
	Rejections       uint64
	WriteFailures    uint64
	FlowControlSent  uint64
	IngestStreams    int64
	SubscriberDrops  uint64
	IgnoredAfterFlow uint64
}

// Service implements monitorpb.MonitorServiceServer.
type Service struct {
	monitorpb.UnimplementedMonitorServiceServer

	store storage.Store
	hub   *hub.Hub
	opts  Options
	log   *slog.Logger

	drainOnce sync.Once
	drain     chan struct{}

	batchesAcked, snapshots, samples, rejections atomic.Uint64
	writeFailures, flowSent, ignored, subDrops   atomic.Uint64
	streams                                      atomic.Int64
}

// New returns a service over store.
func New(store storage.Store, opts Options, logger *slog.Logger) *Service {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.SubscriberBuffer <= 0 {
		opts.SubscriberBuffer = 1024
	}
	return &Service{store: store, hub: hub.New(), opts: opts, log: logger, drain: make(chan struct{})}
}

// Drain stops ingest (see the package comment) and ends Subscribe streams.
func (s *Service) Drain() {
	s.drainOnce.Do(func() {
		close(s.drain)
		s.hub.Close()
	})
}

// Stats returns the counters.
func (s *Service) Stats() Stats {
	return Stats{
		BatchesAcked: s.batchesAcked.Load(), SnapshotsStored: s.snapshots.Load(),
		SamplesStored: s.samples.Load(), Rejections: s.rejections.Load(),
		WriteFailures: s.writeFailures.Load(), FlowControlSent: s.flowSent.Load(),
		IngestStreams: s.streams.Load(), SubscriberDrops: s.subDrops.Load(),
		IgnoredAfterFlow: s.ignored.Load(),
	}
}
