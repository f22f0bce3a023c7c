package redisstore

// RingName is the shard's member on the hash ring: Name, or by default the
// address with "/db" appended when DB is not 0.
func (c ShardConfig) RingName() string { return c.name() }
