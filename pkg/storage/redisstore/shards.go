package redisstore

// ShardCount is the number of shards; with ShardOf it lets a write queue
// (pkg/queue) keep one lane per shard, so that an unreachable shard holds
// up only the hosts that live on it.
func (s *Store) ShardCount() int { return len(s.shards) }

// ShardOf is the index, in configuration order, of the shard that holds
// hostID's keys: the consistent-hash ring's choice.
func (s *Store) ShardOf(hostID string) int { return s.shardIndex(hostID) }
