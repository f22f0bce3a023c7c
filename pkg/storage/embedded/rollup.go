package embedded

import (
	"context"
	"fmt"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/pkg/storage/chunk"
)

// Rollup buckets (the package comment has the whole layout):
//
//	bucket "rollup_1m" / "rollup_1h"
//	    bucket {hostId}
//	        8-byte big-endian bucket start -> encoded aggregates
//	bucket "rollup_seen"
//	    bucket {hostId}
//	        8-byte big-endian hour start -> 450-byte bitmap; bit ts-start
//	        is set once the snapshot at ts has been counted
//
// A bucket's value is storage.AppendRollupBucket's encoding, as in Redis.
var (
	bucketRollupMinute = []byte("rollup_1m")
	bucketRollupHour   = []byte("rollup_1h")
	bucketRollupSeen   = []byte("rollup_seen")
)

const seenBytes = int(storage.Hour) / 8

func rollupBucket(res storage.Resolution) []byte {
	if res == storage.Hour {
		return bucketRollupHour
	}
	return bucketRollupMinute
}

type rollupKey struct {
	host  string
	res   storage.Resolution
	start int64
}

type seenKey struct {
	host  string
	start int64
}

// rollUp folds the call's snapshots into the rollups inside the write
// transaction: per host and timestamp the last snapshot of the call counts,
// only if its seen bit was clear and it is within the retention.
func (s *Store) rollUp(tx *bolt.Tx, snaps []storage.Snapshot) error {
	cutoff := s.cutoff()
	// The last snapshot per (host, timestamp), in call order.
	type hostTS struct {
		host string
		ts   int64
	}
	last := make(map[hostTS]int, len(snaps))
	for i := range snaps {
		if snaps[i].Timestamp >= cutoff {
			last[hostTS{snaps[i].HostID, snaps[i].Timestamp}] = i
		}
	}
	if len(last) == 0 {
		return nil
	}
	seenRoot := tx.Bucket(bucketRollupSeen)
	seen := map[seenKey][]byte{}
	acc := map[rollupKey]map[string]*storage.Aggregate{}
	var order []int
	for i := range snaps {
		sn := &snaps[i]
		if j, ok := last[hostTS{sn.HostID, sn.Timestamp}]; !ok || j != i {
			continue
		}
		hour := storage.Hour.BucketStart(sn.Timestamp)
		sk := seenKey{sn.HostID, hour}
		bits, ok := seen[sk]
		if !ok {
			bits = make([]byte, seenBytes)
			if b := seenRoot.Bucket([]byte(sn.HostID)); b != nil {
				copy(bits, b.Get(tsKey(nil, hour)))
			}
			seen[sk] = bits
		}
		bit := sn.Timestamp - hour
		if bits[bit/8]&(1<<(bit%8)) != 0 {
			continue // counted before
		}
		bits[bit/8] |= 1 << (bit % 8)
		order = chunk.SampleOrder(sn.Samples, order)
		for _, res := range storage.RollupResolutions() {
			k := rollupKey{sn.HostID, res, res.BucketStart(sn.Timestamp)}
			m := acc[k]
			if m == nil {
				m = make(map[string]*storage.Aggregate, len(sn.Samples))
				acc[k] = m
			}
			add := func(smp *storage.Sample) {
				a := m[smp.Series]
				if a == nil {
					a = &storage.Aggregate{}
					m[smp.Series] = a
				}
				a.Add(sn.Timestamp, smp.Value, smp.Unit)
			}
			if order == nil {
				for j := range sn.Samples {
					add(&sn.Samples[j])
				}
			} else {
				for _, j := range order {
					add(&sn.Samples[j])
				}
			}
		}
	}
	for k, bits := range seen {
		b, err := seenRoot.CreateBucketIfNotExists([]byte(k.host))
		if err != nil {
			return fmt.Errorf("create seen bucket of host %s: %w", k.host, err)
		}
		if err := b.Put(tsKey(nil, k.start), bits); err != nil {
			return fmt.Errorf("put seen bitmap %s@%d: %w", k.host, k.start, err)
		}
	}
	for k, m := range acc {
		if len(m) == 0 {
			continue
		}
		b, err := tx.Bucket(rollupBucket(k.res)).CreateBucketIfNotExists([]byte(k.host))
		if err != nil {
			return fmt.Errorf("create %s rollup bucket of host %s: %w", k.res, k.host, err)
		}
		key := tsKey(nil, k.start)
		var old []storage.SeriesAggregate
		if v := b.Get(key); v != nil {
			if old, err = storage.DecodeRollupBucket(nil, v, k.start, nil); err != nil {
				return fmt.Errorf("%s rollup %s@%d: %w", k.res, k.host, k.start, err)
			}
		}
		if err := b.Put(key, storage.AppendRollupBucket(nil, k.start, storage.MergeRollupBucket(old, m))); err != nil {
			return fmt.Errorf("put %s rollup %s@%d: %w", k.res, k.host, k.start, err)
		}
	}
	return nil
}

// RangeRollup returns the host's buckets of q.Resolution overlapping
// q.From..q.To, grouped by series.
func (s *Store) RangeRollup(ctx context.Context, q storage.RollupQuery) ([]storage.RollupSeries, error) {
	if err := storage.ValidateRollupQuery(&q); err != nil {
		return nil, fmt.Errorf("range rollup: %w", err)
	}
	if s.opts.NoRollups {
		return nil, fmt.Errorf("range rollup %s: %w", q.HostID, storage.ErrNoRollups)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("range rollup %s: %w", q.HostID, err)
	}
	from := max(q.Resolution.BucketStart(q.From), s.now().Add(-s.opts.Rollups.Of(q.Resolution)).Unix(), 0)
	if q.To < from {
		return nil, nil
	}
	bySeries := map[string]int{}
	var out []storage.RollupSeries
	var buf []storage.SeriesAggregate
	strs := map[string]string{}
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(rollupBucket(q.Resolution)).Bucket([]byte(q.HostID))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Seek(tsKey(nil, from)); k != nil; k, v = c.Next() {
			start := keyTS(k)
			if start > q.To {
				break
			}
			aggs, err := storage.DecodeRollupBucket(buf[:0], v, start, strs)
			if err != nil {
				return fmt.Errorf("bucket %d: %w", start, err)
			}
			buf = aggs
			for i := range aggs {
				a := &aggs[i]
				if q.Match != nil && !q.Match.Match(a.Series) {
					continue
				}
				j, ok := bySeries[a.Series]
				if !ok {
					j = len(out)
					bySeries[a.Series] = j
					out = append(out, storage.RollupSeries{Series: a.Series})
				}
				out[j].Points = append(out[j].Points, storage.RollupPoint{Start: start, Aggregate: a.Aggregate})
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("range rollup %s %s: %w", q.HostID, q.Resolution, err)
	}
	slices.SortFunc(out, func(a, b storage.RollupSeries) int { return strings.Compare(a.Series, b.Series) })
	return out, nil
}
