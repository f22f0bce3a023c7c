package redisstore

// ShardCount is the number of shards on the current ring; with ShardOf it
// lets a write queue (pkg/queue) keep one lane per shard, so that an
// unreachable shard holds up only the hosts that live on it. It changes
// with SetTopology.
func (s *Store) ShardCount() int {
	t := s.topo.Load()
	if t == nil {
		return 0
	}
	return len(t.cur)
}

// ShardOf is the index, in the current ring's order (Topology.Shards), of
// the shard that holds hostID's keys: the consistent-hash ring's choice.
// After SetTopology an index may name another shard and may be past an
// earlier ShardCount: a caller that keeps per-index state across a ring
// change must rebuild it (by ShardName) when Topology().Version changes.
func (s *Store) ShardOf(hostID string) int {
	t := s.topo.Load()
	if t == nil || len(t.cur) == 1 {
		return 0
	}
	return t.ring.LookupIndex(hostID)
}

// ShardName is the name (ring member) of the current ring's shard at index
// i, "" when there is none.
func (s *Store) ShardName(i int) string {
	t := s.topo.Load()
	if t == nil || i < 0 || i >= len(t.cur) {
		return ""
	}
	return t.cur[i].name
}

// OwnerOf is the name of the shard that holds hostID's keys on the current
// ring (where writes go).
func (s *Store) OwnerOf(hostID string) string {
	t := s.topo.Load()
	if t == nil {
		return ""
	}
	return t.owner(hostID).name
}
