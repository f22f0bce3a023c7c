// Package storage is the broker's storage abstraction: what a backend must do
// to hold snapshots and the host registry, the shared data model, and the
// rules that keep untrusted names out of keys.
//
// Two backends implement Store: pkg/storage/redisstore (the seed's exact Redis key
// layout, see docs/storage.md) and pkg/storage/embedded (bbolt on local disk,
// for one machine). Both pass the same conformance suite
// (pkg/storage/storagetest).
//
// Concurrency: every Store method is safe for concurrent use. Writes are
// idempotent: writing the same host and timestamp again replaces the stored
// snapshot, so an agent's retry never creates a duplicate.
//
// # Rollups
//
// Besides the raw snapshots a backend keeps rollups (the seed's window
// aggregates, rollup.go): per host, series and bucket of one minute and one
// hour, the min, max, sum, count and last value, each resolution with its
// own retention. They are maintained as data arrives, in the same write
// as the snapshots, and are idempotent under at-least-once delivery: each
// (host, timestamp) is counted once. The snapshot counted is the first one
// stored for that timestamp (within one WriteSnapshots call, the last of the
// call's duplicates, as for the raw data); a later rewrite with different
// values replaces the raw snapshot but not its share of the rollups — an
// agent's resend carries the same values, and min/max cannot be un-counted.
// Snapshots older than the raw retention are neither returned nor rolled
// up.
package storage

import (
	"context"
	"errors"
	"time"
)

// Sample is one value of one series in a snapshot. Series is the canonical
// series key, Name{k=v,...} with labels sorted by key (see SeriesKey).
type Sample struct {
	Series string
	Value  float64
	Unit   string
}

// Snapshot is one host's samples at one timestamp (Unix seconds).
type Snapshot struct {
	HostID    string
	Timestamp int64
	Tags      map[string]string
	Samples   []Sample
}

// Host is a host as registered by its agent, with the times the broker saw
// it. LastData is the timestamp of the newest stored snapshot (0: none);
// liveness (heartbeats) and freshness (data) are kept apart on purpose.
type Host struct {
	ID           string
	Hostname     string
	OS           string
	Platform     string
	Kernel       string
	Arch         string
	CPUCount     uint32
	MemoryBytes  uint64
	Labels       map[string]string
	AgentVersion string
	BootTime     int64

	FirstSeen      int64 // Unix seconds of the first registration (0: never registered)
	LastRegistered int64
	LastHeartbeat  int64
	LastData       int64
}

// RangeQuery selects one host's snapshots with From <= timestamp <= To.
// Match, when set, keeps only the samples whose series it accepts; snapshots
// left with no samples are omitted.
type RangeQuery struct {
	HostID string
	From   int64
	To     int64
	Match  *Matcher
}

// Store is the contract every storage backend implements.
type Store interface {
	// WriteSnapshots stores snapshots (each validated with ValidateSnapshot
	// by the caller; a backend still refuses keys that would break its
	// layout with ErrInvalid, and then writes nothing of the call). It
	// returns only after the data is durable in the backend's terms; on
	// error nothing may be assumed stored.
	WriteSnapshots(ctx context.Context, snaps []Snapshot) error
	// Range returns matching snapshots in ascending timestamp order, each
	// snapshot's samples sorted by series. Data older than the retention is
	// never returned, even before the backend has expired it.
	Range(ctx context.Context, q RangeQuery) ([]Snapshot, error)
	// RangeRollup returns the host's buckets of q.Resolution that overlap
	// q.From..q.To, grouped by series (sorted by series key), each series'
	// points in ascending time; series the matcher refuses and buckets
	// older than the resolution's retention (by bucket start) are left
	// out. A resolution other than Minute or Hour is ErrInvalid; a store
	// opened without rollups returns ErrNoRollups.
	RangeRollup(ctx context.Context, q RollupQuery) ([]RollupSeries, error)
	// Latest returns the host's newest snapshot; ok is false when it has none.
	Latest(ctx context.Context, hostID string) (snap Snapshot, ok bool, err error)
	// RegisterHost records a registration at time at, keeping FirstSeen,
	// and returns the stored record.
	RegisterHost(ctx context.Context, h Host, at time.Time) (Host, error)
	// Heartbeat records a heartbeat. known is false when the host has no
	// registration (the agent should register again).
	Heartbeat(ctx context.Context, hostID string, at time.Time) (known bool, err error)
	// Hosts lists every host that registered or sent data within the
	// retention, sorted by ID.
	Hosts(ctx context.Context) ([]Host, error)
	// Ping reports whether the backend is reachable.
	Ping(ctx context.Context) error
	// Close releases the backend. It does not cancel in-flight calls.
	Close() error
}

// ErrInvalid marks input that a backend refuses because it would break the
// key layout (a host id or series name outside the allowed charset).
var ErrInvalid = errors.New("invalid input")

// Retention is how long samples and host records are kept; the seed's 7 days.
const DefaultRetention = 7 * 24 * time.Hour
