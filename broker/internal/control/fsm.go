// Package control is the broker cluster's control plane: a hashicorp/raft
// replicated state machine holding the members, the storage shards and ring
// version, the host registry, cluster settings and alert rules. Samples never
// pass through it (DESIGN.md §2): only small, rare writes do.
//
// Log entries are one type byte (monitorpb.CommandType) followed by the
// protobuf payload named in proto/control.proto, dispatched by a switch in
// Apply (Nomad's fsm.go). Apply is deterministic: it never reads the clock
// or does I/O; timestamps travel inside the commands. Snapshot clones the
// state under the read lock; Persist does the encoding and I/O.
//
// Concurrency: FSM methods are called by raft from one goroutine (Apply,
// Restore) and may run concurrently with the readers (State, Member, ...),
// which take the read lock.
package control

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	monitorpb "github.com/monitorhq/monitor/proto"
)

// FSM is the replicated state.
type FSM struct {
	mu      sync.RWMutex
	state   *monitorpb.ControlState
	index   uint64        // last applied log index
	changed chan struct{} // closed and replaced by every change
}

// NewFSM returns an empty state machine.
func NewFSM() *FSM {
	return &FSM{state: &monitorpb.ControlState{}, changed: make(chan struct{})}
}

// Changed returns a channel that is closed at the next change of the
// state. Take a new one after each close (the etcd watch idiom without
// per-watcher bookkeeping).
func (f *FSM) Changed() <-chan struct{} {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.changed
}

func (f *FSM) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// Encode builds a log entry: the type byte, then the payload.
func Encode(typ monitorpb.CommandType, msg proto.Message) ([]byte, error) {
	b, err := proto.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", typ, err)
	}
	return append([]byte{byte(typ)}, b...), nil
}

// Apply applies one committed entry. It returns an error value (not a Go
// error return: raft hands it back to the caller of Apply on the leader)
// when the command is malformed; the state is then unchanged.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	if len(l.Data) == 0 {
		return fmt.Errorf("control: empty log entry at index %d", l.Index)
	}
	typ, payload := monitorpb.CommandType(l.Data[0]), l.Data[1:]
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index = l.Index
	st := f.state
	switch typ {
	case monitorpb.CommandType_COMMAND_TYPE_PUT_MEMBER:
		var m monitorpb.Member
		if err := unmarshal(typ, payload, &m); err != nil {
			return err
		}
		st.Members = putBy(st.Members, &m, func(x *monitorpb.Member) string { return x.GetId() })
	case monitorpb.CommandType_COMMAND_TYPE_REMOVE_MEMBER:
		var m monitorpb.RemoveMember
		if err := unmarshal(typ, payload, &m); err != nil {
			return err
		}
		st.Members = slices.DeleteFunc(st.Members, func(x *monitorpb.Member) bool { return x.GetId() == m.GetId() })
	case monitorpb.CommandType_COMMAND_TYPE_PUT_SHARD:
		var s monitorpb.Shard
		if err := unmarshal(typ, payload, &s); err != nil {
			return err
		}
		if err := putShard(st, &s, l.AppendedAt.UnixMilli()); err != nil {
			return err
		}
	case monitorpb.CommandType_COMMAND_TYPE_REMOVE_SHARD:
		var s monitorpb.RemoveShard
		if err := unmarshal(typ, payload, &s); err != nil {
			return err
		}
		if err := removeShard(st, s.GetId()); err != nil {
			return err
		}
	case monitorpb.CommandType_COMMAND_TYPE_INIT_SHARDS:
		var in monitorpb.InitShards
		if err := unmarshal(typ, payload, &in); err != nil {
			return err
		}
		if len(st.Shards) > 0 {
			return rejectf("the cluster already has %d storage shards; add more with AddShard", len(st.Shards))
		}
		var shards []*monitorpb.Shard
		for _, s := range in.GetShards() {
			if s.GetId() == "" || s.GetDraining() {
				return rejectf("initial shard %q: empty id or draining", s.GetId())
			}
			shards = putBy(shards, s, func(x *monitorpb.Shard) string { return x.GetId() })
		}
		if len(shards) == 0 {
			return rejectf("no initial shards")
		}
		st.Shards = shards
		st.RingVersion++
		now := l.AppendedAt.UnixMilli()
		st.Migration = &monitorpb.Migration{RingVersion: st.RingVersion, FromVersion: st.RingVersion - 1,
			ToShards: RingOf(shards), Done: true, StartedUnixMs: now, FinishedUnixMs: now}
	case monitorpb.CommandType_COMMAND_TYPE_PUT_MIGRATION:
		var m monitorpb.Migration
		if err := unmarshal(typ, payload, &m); err != nil {
			return err
		}
		if cur := st.GetMigration(); cur == nil || cur.GetRingVersion() != m.GetRingVersion() {
			return rejectf("migration progress for ring version %d is stale (the current ring change is to version %d)",
				m.GetRingVersion(), cur.GetRingVersion())
		}
		st.Migration = &m
	case monitorpb.CommandType_COMMAND_TYPE_REGISTER_HOST:
		var h monitorpb.RegisteredHost
		if err := unmarshal(typ, payload, &h); err != nil {
			return err
		}
		i := slices.IndexFunc(st.Hosts, func(x *monitorpb.RegisteredHost) bool { return x.GetHostId() == h.GetHostId() })
		if i >= 0 && st.Hosts[i].GetFirstRegistered() != 0 {
			h.FirstRegistered = st.Hosts[i].GetFirstRegistered()
		}
		if h.FirstRegistered == 0 {
			h.FirstRegistered = h.GetLastRegistered()
		}
		st.Hosts = putBy(st.Hosts, &h, func(x *monitorpb.RegisteredHost) string { return x.GetHostId() })
	case monitorpb.CommandType_COMMAND_TYPE_PUT_SETTING:
		var s monitorpb.Setting
		if err := unmarshal(typ, payload, &s); err != nil {
			return err
		}
		st.Settings = putBy(st.Settings, &s, func(x *monitorpb.Setting) string { return x.GetKey() })
	case monitorpb.CommandType_COMMAND_TYPE_PUT_ALERT_RULE:
		var r monitorpb.AlertRule
		if err := unmarshal(typ, payload, &r); err != nil {
			return err
		}
		st.AlertRules = putBy(st.AlertRules, &r, func(x *monitorpb.AlertRule) string { return x.GetId() })
	case monitorpb.CommandType_COMMAND_TYPE_DELETE_ALERT_RULE:
		var r monitorpb.DeleteAlertRule
		if err := unmarshal(typ, payload, &r); err != nil {
			return err
		}
		st.AlertRules = slices.DeleteFunc(st.AlertRules, func(x *monitorpb.AlertRule) bool { return x.GetId() == r.GetId() })
	default:
		return fmt.Errorf("control: unknown command type %d at index %d", typ, l.Index)
	}
	f.notifyLocked()
	return nil
}

// RejectedError is a command the state refuses (a rule of the control
// plane, not a malformed entry); callers get FailedPrecondition.
type RejectedError struct{ msg string }

func (e *RejectedError) Error() string { return e.msg }

func rejectf(format string, args ...any) error {
	return &RejectedError{msg: fmt.Sprintf(format, args...)}
}

// RingOf lists the ids of the shards on the ring: every shard that is not
// draining, in id order.
func RingOf(shards []*monitorpb.Shard) []string {
	var ids []string
	for _, s := range shards {
		if !s.GetDraining() {
			ids = append(ids, s.GetId())
		}
	}
	return ids
}

// Migrating reports whether a ring change is still moving hosts.
func Migrating(st *monitorpb.ControlState) bool {
	m := st.GetMigration()
	return m != nil && !m.GetDone()
}

// putShard adds or updates a shard. A change of the ring (a new shard, or
// one starting or stopping to drain) bumps the ring version and starts a
// migration from the old ring to the new one; only one runs at a time.
func putShard(st *monitorpb.ControlState, s *monitorpb.Shard, nowMs int64) error {
	if s.GetId() == "" {
		return rejectf("shard id is empty")
	}
	before := RingOf(st.Shards)
	next := putBy(slices.Clone(st.Shards), s, func(x *monitorpb.Shard) string { return x.GetId() })
	after := RingOf(next)
	if slices.Equal(before, after) {
		st.Shards = next
		return nil
	}
	if len(after) == 0 {
		return rejectf("cannot drain shard %s: it is the last shard on the ring", s.GetId())
	}
	if Migrating(st) {
		m := st.GetMigration()
		return rejectf("a ring change to version %d is still moving hosts (%d of %d moved); change the ring again when it is done",
			m.GetRingVersion(), m.GetHostsMoved(), m.GetHostsTotal())
	}
	st.Shards = next
	st.RingVersion++
	m := &monitorpb.Migration{RingVersion: st.RingVersion, FromVersion: st.RingVersion - 1,
		FromShards: before, ToShards: after, StartedUnixMs: nowMs}
	if len(before) == 0 {
		// The first shards of a new cluster: nothing to move.
		m.Done, m.FinishedUnixMs = true, nowMs
	}
	st.Migration = m
	return nil
}

// removeShard takes a drained shard off the cluster. A shard on the ring
// must drain first, and a draining shard until its hosts have moved.
func removeShard(st *monitorpb.ControlState, id string) error {
	i := slices.IndexFunc(st.Shards, func(x *monitorpb.Shard) bool { return x.GetId() == id })
	if i < 0 {
		return nil
	}
	if !st.Shards[i].GetDraining() {
		return rejectf("shard %s is on the ring; drain it first (monitorctl shard remove drains it, then removes it)", id)
	}
	if Migrating(st) && slices.Contains(st.GetMigration().GetFromShards(), id) {
		return rejectf("shard %s is still draining", id)
	}
	st.Shards = slices.Delete(st.Shards, i, i+1)
	return nil
}

func unmarshal(typ monitorpb.CommandType, b []byte, m proto.Message) error {
	if err := proto.Unmarshal(b, m); err != nil {
		return fmt.Errorf("control: decode %s: %w", typ, err)
	}
	return nil
}

// putBy replaces the element with the same key or inserts x, keeping the
// slice sorted by key so the state (and its snapshot) is canonical.
func putBy[T any](s []T, x T, key func(T) string) []T {
	k := key(x)
	i, found := slices.BinarySearchFunc(s, k, func(e T, k string) int {
		switch ek := key(e); {
		case ek < k:
			return -1
		case ek > k:
			return 1
		}
		return 0
	})
	if found {
		s[i] = x
		return s
	}
	return slices.Insert(s, i, x)
}

// State returns a deep copy of the current state.
func (f *FSM) State() *monitorpb.ControlState {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return proto.Clone(f.state).(*monitorpb.ControlState)
}

// Cluster returns a copy of the state without its large parts (the host
// registry, alert rules and settings): members, shards, ring version and
// migration.
func (f *FSM) Cluster() *monitorpb.ControlState {
	f.mu.RLock()
	defer f.mu.RUnlock()
	st := f.state
	out := &monitorpb.ControlState{RingVersion: st.GetRingVersion()}
	for _, m := range st.GetMembers() {
		out.Members = append(out.Members, proto.Clone(m).(*monitorpb.Member))
	}
	for _, sh := range st.GetShards() {
		out.Shards = append(out.Shards, proto.Clone(sh).(*monitorpb.Shard))
	}
	if st.GetMigration() != nil {
		out.Migration = proto.Clone(st.GetMigration()).(*monitorpb.Migration)
	}
	return out
}

// ShardHosts counts the registered hosts each shard of the current ring
// owns, without copying the registry.
func (f *FSM) ShardHosts(vnodes int) map[string]uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return ShardHosts(f.state, vnodes)
}

// AppliedIndex is the index of the last applied entry.
func (f *FSM) AppliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.index
}

// Host returns the registry's record of a host (nil when absent); the
// caller must not modify it.
func (f *FSM) Host(id string) *monitorpb.RegisteredHost {
	f.mu.RLock()
	defer f.mu.RUnlock()
	hs := f.state.GetHosts()
	i, ok := slices.BinarySearchFunc(hs, id, func(h *monitorpb.RegisteredHost, id string) int {
		return strings.Compare(h.GetHostId(), id)
	})
	if !ok {
		return nil
	}
	return hs[i]
}

// HostCount is the number of hosts in the registry.
func (f *FSM) HostCount() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.state.GetHosts())
}

// Setting returns a setting's value.
func (f *FSM) Setting(key string) (string, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for _, s := range f.state.GetSettings() {
		if s.GetKey() == key {
			return s.GetValue(), true
		}
	}
	return "", false
}

// Snapshot captures the state for raft; the copy is taken here, the
// encoding and I/O happen in Persist.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &snapshot{state: f.State()}, nil
}

// Restore replaces the state with a snapshot's.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("control: read snapshot: %w", err)
	}
	st := &monitorpb.ControlState{}
	if err := proto.Unmarshal(b, st); err != nil {
		return fmt.Errorf("control: decode snapshot: %w", err)
	}
	f.mu.Lock()
	f.state = st
	f.notifyLocked()
	f.mu.Unlock()
	return nil
}

type snapshot struct{ state *monitorpb.ControlState }

func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(s.state)
	if err == nil {
		_, err = sink.Write(b)
	}
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("control: persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *snapshot) Release() {}
