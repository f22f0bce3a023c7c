// Package hub fans stored snapshots out to Subscribe streams. Publish never
// blocks: every subscriber has a bounded queue, and when it is full the batch
// is dropped for that subscriber only and counted; the count reaches the
// subscriber with its next delivered batch as a gap marker, so a slow reader
// knows to catch up with a range query.
//
// Hub is safe for concurrent use.
package hub

import (
	"sync"

	"github.com/monitorhq/monitor/pkg/storage"
)

// Delivery is one message for a subscriber.
type Delivery struct {
	Snapshots []storage.Snapshot
	Dropped   uint64 // batches missed since the previous delivery
}

// Hub holds the subscribers.
type Hub struct {
	mu      sync.Mutex
	subs    map[*Subscription]struct{}
	closed  bool
	dropped uint64 // batches dropped for any subscriber, ever; guarded by mu
}

// New returns an empty hub.
func New() *Hub { return &Hub{subs: map[*Subscription]struct{}{}} }

// Subscription is one subscriber's queue.
type Subscription struct {
	hub     *Hub
	hosts   map[string]struct{} // nil: every host
	ch      chan Delivery
	mu      sync.Mutex // guards dropped
	dropped uint64
	total   uint64
}

// Subscribe registers a subscriber for hosts (empty: all) with a queue of
// size batches. The channel is closed by Close or when the hub closes.
func (h *Hub) Subscribe(hosts []string, size int) *Subscription {
	s := &Subscription{hub: h, ch: make(chan Delivery, size)}
	if len(hosts) > 0 {
		s.hosts = make(map[string]struct{}, len(hosts))
		for _, id := range hosts {
			s.hosts[id] = struct{}{}
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		close(s.ch)
		return s
	}
	h.subs[s] = struct{}{}
	return s
}

// C returns the subscriber's queue.
func (s *Subscription) C() <-chan Delivery { return s.ch }

// Dropped returns how many batches this subscriber has missed in total.
func (s *Subscription) Dropped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// Close unregisters the subscriber.
func (s *Subscription) Close() {
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[s]; ok {
		delete(h.subs, s)
		close(s.ch)
	}
}

// Dropped returns how many batches were dropped for any subscriber since
// New, including subscribers still connected (so a stuck stream shows on
// /metrics while it is stuck, not only when it ends).
func (h *Hub) Dropped() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.dropped
}

// Len returns the number of subscribers.
func (h *Hub) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// Publish offers stored snapshots to every subscriber without blocking.
func (h *Hub) Publish(snaps []storage.Snapshot) {
	if len(snaps) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		batch := snaps
		if s.hosts != nil {
			batch = nil
			for i := range snaps {
				if _, ok := s.hosts[snaps[i].HostID]; ok {
					batch = append(batch, snaps[i])
				}
			}
			if len(batch) == 0 {
				continue
			}
		}
		s.mu.Lock()
		select {
		case s.ch <- Delivery{Snapshots: batch, Dropped: s.dropped}:
			s.dropped = 0
		default:
			s.dropped++
			s.total++
			h.dropped++
		}
		s.mu.Unlock()
	}
}

// Close ends every subscription; later Subscribe calls get a closed queue.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for s := range h.subs {
		delete(h.subs, s)
		close(s.ch)
	}
}
