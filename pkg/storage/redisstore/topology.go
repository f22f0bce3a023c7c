package redisstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/monitorhq/monitor/pkg/hash"
)

// Topology is the ring the store writes to, and during a migration the ring
// it moves from.
type Topology struct {
	// Version is the ring version (the control plane's); SetTopology
	// refuses an older one than the store has.
	Version uint64
	// Shards is the current ring, in order: ring members are the shards'
	// names (ShardConfig.Name, or the address).
	Shards []ShardConfig
	// Previous is non-empty while hosts move: the old ring. Reads of a host
	// whose owner in it differs from its current owner consult both.
	Previous []ShardConfig
}

// ErrClosed is returned by calls on a closed Store.
var ErrClosed = errors.New("redis storage is closed")

// topology is one immutable Topology with its open shards and rings. The
// store holds the current one in an atomic pointer; every call pins the one
// it loaded (acquire) so that SetTopology never closes a client under it.
//
// Reference counts: refs counts the store (1 while current) and the calls
// in flight; when it reaches zero the topology releases its shards, and a
// shard whose last topology let go of it is closed. Once zero, refs never
// rises again (acquire refuses it and loads the newer topology).
type topology struct {
	conf     Topology
	cur      []*shard
	ring     *hash.Ring
	prev     []*shard // nil: no move in progress
	prevRing *hash.Ring
	byName   map[string]*shard // every shard of either ring
	refs     atomic.Int64
}

// owner is the shard of hostID on the current ring.
func (t *topology) owner(hostID string) *shard {
	if len(t.cur) == 1 {
		return t.cur[0]
	}
	return t.cur[t.ring.LookupIndex(hostID)]
}

// prevOwner is hostID's owner on the previous ring when that differs from
// cur (its current owner): the shard it may still be moving from. Nil
// otherwise.
func (t *topology) prevOwner(hostID string, cur *shard) *shard {
	if t.prev == nil {
		return nil
	}
	p := t.prev[0]
	if len(t.prev) > 1 {
		p = t.prev[t.prevRing.LookupIndex(hostID)]
	}
	if p == cur {
		return nil
	}
	return p
}

// acquire pins the current topology for one call; release it after.
func (s *Store) acquire() (*topology, error) {
	for {
		t := s.topo.Load()
		if t == nil {
			return nil, ErrClosed
		}
		for {
			n := t.refs.Load()
			if n == 0 {
				break // replaced and drained meanwhile: load the newer one
			}
			if t.refs.CompareAndSwap(n, n+1) {
				return t, nil
			}
		}
	}
}

// release unpins t; the last user of a replaced topology closes the shards
// no other topology holds.
func (s *Store) release(t *topology) {
	if t.refs.Add(-1) == 0 {
		if err := t.drop(); err != nil {
			s.logger.Warn("closing redis shards of a replaced ring", "version", t.conf.Version, "err", err)
		}
	}
}

func (t *topology) drop() error {
	var errs []error
	for _, sh := range t.byName {
		if sh.refs.Add(-1) == 0 {
			errs = append(errs, sh.close())
		}
	}
	return errors.Join(errs...)
}

// SetTopology switches the store to t: writes go to the owners on
// t.Shards from the next call on, and reads of hosts whose owner on
// t.Previous differs consult both (see the package doc). Shards already
// open under the same name and settings are reused; new ones are
// connected, pinged and given the rollup script first, so an unreachable
// new shard is an error and leaves the store as it was. Shards in neither
// ring are closed once the calls still using them have finished.
//
// A version older than the store's is refused (the control plane applies
// ring changes in order); the same version may be set again, e.g. to clear
// Previous when a migration is done.
//
// After SetTopology, ShardCount and ShardOf describe the new ring: an
// index may now name another shard, and the count may differ.
func (s *Store) SetTopology(ctx context.Context, t Topology) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.topo.Load()
	if old == nil {
		return ErrClosed
	}
	if t.Version < old.conf.Version {
		return fmt.Errorf("set redis ring version %d: the store is already at version %d", t.Version, old.conf.Version)
	}
	nt, err := s.buildTopology(ctx, t, old)
	if err != nil {
		return fmt.Errorf("set redis ring version %d: %w", t.Version, err)
	}
	s.topo.Store(nt)
	s.release(old) // the store's own reference
	s.logger.Info("redis ring changed", "version", t.Version, "shards", t.Shards, "previous", t.Previous)
	return nil
}

// Topology returns the store's current topology (a copy).
func (s *Store) Topology() Topology {
	t := s.topo.Load()
	if t == nil {
		return Topology{}
	}
	return cloneTopology(t.conf)
}

func cloneTopology(t Topology) Topology {
	clone := func(in []ShardConfig) []ShardConfig {
		if in == nil {
			return nil
		}
		out := make([]ShardConfig, len(in))
		for i, sc := range in {
			sc.Replicas = slices.Clone(sc.Replicas)
			sc.ClusterAddrs = slices.Clone(sc.ClusterAddrs)
			out[i] = sc
		}
		return out
	}
	return Topology{Version: t.Version, Shards: clone(t.Shards), Previous: clone(t.Previous)}
}

// validateRing checks one ring's shard list.
func validateRing(list []ShardConfig) error {
	seen := map[string]int{}
	for i, sc := range list {
		if err := sc.validate(i); err != nil {
			return err
		}
		if j, dup := seen[sc.name()]; dup {
			return fmt.Errorf("shard %d: %s is listed twice (also shard %d)", i+1, sc.name(), j)
		}
		seen[sc.name()] = i + 1
	}
	return nil
}

func sameShard(a, b ShardConfig) bool {
	return a.Name == b.Name && a.Addr == b.Addr && slices.Equal(a.Replicas, b.Replicas) &&
		a.Username == b.Username && a.Password == b.Password && a.DB == b.DB && a.TLS == b.TLS &&
		a.Cluster == b.Cluster && slices.Equal(a.ClusterAddrs, b.ClusterAddrs)
}

// buildTopology opens what conf needs, reusing old's shards (old is the
// current topology, or nil in New; the caller holds s.mu). The result has
// refs 1, the store's reference.
func (s *Store) buildTopology(ctx context.Context, conf Topology, old *topology) (*topology, error) {
	if len(conf.Shards) == 0 {
		return nil, errors.New("no shards configured")
	}
	if err := validateRing(conf.Shards); err != nil {
		return nil, err
	}
	if err := validateRing(conf.Previous); err != nil {
		return nil, fmt.Errorf("previous ring: %w", err)
	}
	conf = cloneTopology(conf)
	if len(conf.Previous) == 0 {
		conf.Previous = nil
	}
	t := &topology{conf: conf, byName: map[string]*shard{}}
	ok := false
	defer func() {
		if !ok {
			_ = t.drop()
		}
	}()
	open := func(sc ShardConfig) (*shard, error) {
		name := sc.name()
		if sh := t.byName[name]; sh != nil {
			if !sameShard(sh.conf, sc) {
				return nil, fmt.Errorf("shard %s is in both rings with different settings", name)
			}
			return sh, nil
		}
		if old != nil {
			if sh := old.byName[name]; sh != nil && sameShard(sh.conf, sc) {
				sh.refs.Add(1) // old holds it: it is open
				t.byName[name] = sh
				return sh, nil
			}
		}
		sh, err := openShard(sc, name, s.cfg.KeyPrefix, s.cfg.ReadFromReplicas)
		if err != nil {
			return nil, err
		}
		sh.refs.Store(1)
		t.byName[name] = sh
		if err := sh.client.Ping(ctx).Err(); err != nil {
			return nil, fmt.Errorf("ping shard %s: %w", name, err)
		}
		if !s.cfg.NoRollups {
			if err := rollupCommit.Load(ctx, sh.client).Err(); err != nil {
				return nil, fmt.Errorf("load the rollup script on shard %s: %w", name, err)
			}
		}
		return sh, nil
	}
	names := func(list []ShardConfig) []string {
		out := make([]string, len(list))
		for i, sc := range list {
			out[i] = sc.name()
		}
		return out
	}
	for _, sc := range conf.Shards {
		sh, err := open(sc)
		if err != nil {
			return nil, err
		}
		t.cur = append(t.cur, sh)
	}
	var err error
	if t.ring, err = hash.New(names(conf.Shards), s.cfg.VirtualNodes); err != nil {
		return nil, err
	}
	if conf.Previous != nil {
		for _, sc := range conf.Previous {
			sh, err := open(sc)
			if err != nil {
				return nil, err
			}
			t.prev = append(t.prev, sh)
		}
		if t.prevRing, err = hash.New(names(conf.Previous), s.cfg.VirtualNodes); err != nil {
			return nil, err
		}
	}
	t.refs.Store(1)
	ok = true
	return t, nil
}

// all is every shard of either ring: the current ring in order, then the
// previous ring's others.
func (t *topology) all() []*shard {
	out := slices.Clone(t.cur)
	for _, sh := range t.prev {
		if !slices.Contains(out, sh) {
			out = append(out, sh)
		}
	}
	return out
}
