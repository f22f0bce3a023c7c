// Package migrate is the broker cluster's shard migrator: after a ring
// change (a storage shard added, or one draining) it moves every host whose
// owner changed from the old shard to the new one, live, while agents keep
// writing and clients keep reading.
//
// It runs on the Raft leader only. Brokers write to the new ring as soon as
// they apply the ring change; reads consult both owners until the
// migration is done (redisstore's Topology.Previous), so nothing written
// before or during the move disappears from queries. Progress — hosts
// found and moved, keys copied, the last host moved, the last error — is
// written through Raft (PUT_MIGRATION), so `monitorctl status` shows it on
// any member and a new leader resumes the same migration: moving a host is
// idempotent (redisstore.MoveHost), and the hosts left are found again on
// the old owners.
//
// Concurrency: a Migrator runs one migration at a time, from one
// goroutine (Run).
package migrate

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/monitorhq/monitor/pkg/hash"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// Mover is the storage's side of a move (pkg/storage/redisstore.Store).
type Mover interface {
	// HostsOn lists the hosts with keys on a shard.
	HostsOn(ctx context.Context, shard string) ([]string, error)
	// MoveHost copies a host's keys from one shard to another, merging,
	// then deletes them on the first; it is idempotent.
	MoveHost(ctx context.Context, hostID, from, to string) (keys int, err error)
}

// Options tune a Migrator.
type Options struct {
	VirtualNodes int           // of the storage ring; default pkg/hash's
	Settle       time.Duration // wait before the first move, so every broker applies the new ring; default 1 s
	Progress     time.Duration // least time between two progress writes; default 1 s
	Rescans      int           // passes over the old owners after the first, for stragglers; default 2
	Now          func() time.Time
}

// Migrator moves hosts after ring changes.
type Migrator struct {
	mover Mover
	save  func(ctx context.Context, m *monitorpb.Migration) error
	opts  Options
	log   *slog.Logger
}

// New returns a migrator that moves hosts with mover and records progress
// with save (a PUT_MIGRATION through Raft).
func New(mover Mover, save func(ctx context.Context, m *monitorpb.Migration) error, opts Options, logger *slog.Logger) *Migrator {
	if opts.VirtualNodes <= 0 {
		opts.VirtualNodes = hash.DefaultVirtualNodes
	}
	if opts.Settle == 0 {
		opts.Settle = time.Second
	}
	if opts.Progress <= 0 {
		opts.Progress = time.Second
	}
	if opts.Rescans <= 0 {
		opts.Rescans = 2
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Migrator{mover: mover, save: save, opts: opts, log: logger}
}

type move struct{ host, from, to string }

// Run carries migration m to the end and records it done. It returns
// ctx's error when stopped (leadership lost, shutdown) and the last error
// when a move keeps failing (after recording it in the progress); the
// caller runs it again.
func (mg *Migrator) Run(ctx context.Context, m *monitorpb.Migration) error {
	m = proto.Clone(m).(*monitorpb.Migration)
	if m.GetDone() {
		return nil
	}
	to, err := hash.New(m.GetToShards(), mg.opts.VirtualNodes)
	if err != nil {
		return fmt.Errorf("migration to ring %d: %w", m.GetRingVersion(), err)
	}
	start := mg.opts.Now()
	mg.log.Info("migration running", "ring_version", m.GetRingVersion(), "from", m.GetFromShards(), "to", m.GetToShards(),
		"hosts_moved", m.GetHostsMoved())
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(mg.opts.Settle):
	}
	lastSave := time.Time{}
	save := func(force bool) error {
		if !force && mg.opts.Now().Sub(lastSave) < mg.opts.Progress {
			return nil
		}
		lastSave = mg.opts.Now()
		return mg.save(ctx, m)
	}
	movedHere := 0
	for pass := 0; pass <= mg.opts.Rescans; pass++ {
		moves, scanned, err := mg.scan(ctx, m.GetFromShards(), to)
		if err != nil {
			m.Error = err.Error()
			_ = save(true)
			return err
		}
		if pass == 0 {
			m.HostsScanned = uint64(scanned)
			m.HostsTotal = m.GetHostsMoved() + uint64(len(moves))
			if err := save(true); err != nil {
				return err
			}
		} else {
			m.HostsTotal += uint64(len(moves))
		}
		if len(moves) == 0 {
			break
		}
		for _, mv := range moves {
			keys, err := mg.mover.MoveHost(ctx, mv.host, mv.from, mv.to)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				m.Error = fmt.Sprintf("move host %s from %s to %s: %v", mv.host, mv.from, mv.to, err)
				_ = save(true)
				return fmt.Errorf("migration to ring %d: %s", m.GetRingVersion(), m.Error)
			}
			m.HostsMoved++
			m.KeysCopied += uint64(keys)
			m.Cursor = mv.host
			m.Error = ""
			movedHere++
			if err := save(false); err != nil {
				return err
			}
		}
	}
	m.Done = true
	m.FinishedUnixMs = mg.opts.Now().UnixMilli()
	if err := save(true); err != nil {
		return err
	}
	took := mg.opts.Now().Sub(start)
	rate := 0.0
	if s := took.Seconds(); s > 0 {
		rate = float64(movedHere) / s
	}
	mg.log.Info("migration done", "ring_version", m.GetRingVersion(), "hosts_moved", m.GetHostsMoved(),
		"keys_copied", m.GetKeysCopied(), "took", took.Round(time.Millisecond), "hosts_per_second", rate)
	return nil
}

// scan finds every host on the old owners whose owner on the new ring is
// another shard.
func (mg *Migrator) scan(ctx context.Context, from []string, to *hash.Ring) ([]move, int, error) {
	var moves []move
	scanned := 0
	for _, sh := range from {
		hosts, err := mg.mover.HostsOn(ctx, sh)
		if err != nil {
			return nil, 0, fmt.Errorf("list hosts on shard %s: %w", sh, err)
		}
		scanned += len(hosts)
		for _, h := range hosts {
			if owner := to.Lookup(h); owner != sh {
				moves = append(moves, move{host: h, from: sh, to: owner})
			}
		}
	}
	slices.SortFunc(moves, func(a, b move) int {
		return cmp.Or(cmp.Compare(a.host, b.host), cmp.Compare(a.from, b.from))
	})
	return moves, scanned, nil
}
