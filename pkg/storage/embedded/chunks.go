package embedded

import (
	"bytes"
	"cmp"
	"fmt"
	"math"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/pkg/storage/chunk"
)

// Sealed chunks (format 2; the package comment has the whole layout):
//
//	bucket "chunks"
//	    bucket {hostId}
//	        8-byte big-endian window start {w} (a multiple of 3600) ->
//	        the window's snapshots as one pkg/storage/chunk chunk
//
// A write stores each snapshot as a record in "snapshots" (fsynced before
// the call returns: nothing acknowledged is lost to a crash). Once a
// window has ended more than sealDelay ago its records are sealed: merged
// with the window's chunk (late data gets records for a window sealed
// already; the record wins a timestamp both hold, it is the newer write),
// encoded as one chunk, and deleted, all in one transaction — a crash
// leaves either the records or the chunk, never neither. Reads merge both
// forms the same way, so a record and its sealed copy never show twice.
// Files of format 1 (records only) are read as they are and sealed by the
// sweeper, hour by hour, in the background.
var bucketChunks = []byte("chunks")

const (
	// chunkSpan is the window a chunk covers, in seconds, aligned to Unix
	// time as the hour rollups and the Redis compact layout's chunks are.
	chunkSpan = int64(3600)
	// sealDelay is how long after its window's end a window is sealed:
	// late snapshots of an agent that reconnects usually arrive by then.
	sealDelay = int64(120)
	// sealBatch bounds the windows one sweeping transaction seals.
	sealBatch = 8
)

func windowOf(ts int64) int64 { return storage.Resolution(chunkSpan).BucketStart(ts) }

// lastClosed is the newest window that may be sealed at now.
func lastClosed(now int64) int64 { return windowOf(now-sealDelay) - chunkSpan }

// hostNeedsSeal reports whether the host's oldest record is in a closed
// window.
func hostNeedsSeal(tx *bolt.Tx, id []byte, now int64) bool {
	b := tx.Bucket(bucketSnapshots).Bucket(id)
	if b == nil {
		return false
	}
	k, _ := b.Cursor().First()
	return k != nil && windowOf(keyTS(k)) <= lastClosed(now)
}

// sealHost seals up to limit of the host's closed windows that hold
// records, oldest first, skipping those skip reports (may be nil); more
// reports that closed windows may be left.
func (s *Store) sealHost(tx *bolt.Tx, id []byte, limit int, skip func(w int64) bool) (sealed int, more bool, err error) {
	recs := tx.Bucket(bucketSnapshots).Bucket(id)
	if recs == nil {
		return 0, false, nil
	}
	closed := lastClosed(s.now().Unix())
	d := chunk.NewDecoder()
	host := string(id)
	for k, _ := recs.Cursor().First(); k != nil && windowOf(keyTS(k)) <= closed; {
		w := windowOf(keyTS(k))
		if skip == nil || !skip(w) {
			if sealed == limit {
				return sealed, true, nil
			}
			if err := s.sealWindow(tx, recs, d, host, w); err != nil {
				return sealed, false, err
			}
			sealed++
		}
		k, _ = recs.Cursor().Seek(tsKey(nil, w+chunkSpan)) // the window's keys may be gone: seek afresh
	}
	return sealed, false, nil
}

// sealWindow merges window w's records into its chunk and deletes them.
func (s *Store) sealWindow(tx *bolt.Tx, recs *bolt.Bucket, d *chunk.Decoder, host string, w int64) error {
	var fresh []storage.Snapshot
	var keys [][]byte
	c := recs.Cursor()
	end := tsKey(nil, w+chunkSpan)
	for k, v := c.Seek(tsKey(nil, w)); k != nil && bytes.Compare(k, end) < 0; k, v = c.Next() {
		sn := storage.Snapshot{HostID: host, Timestamp: keyTS(k)}
		if err := d.DecodeRecord(v, nil, &sn); err != nil {
			return fmt.Errorf("seal window %d of host %s: snapshot %d: %w", w, host, sn.Timestamp, err)
		}
		fresh = append(fresh, sn)
		keys = append(keys, slices.Clone(k))
	}
	cb, err := tx.Bucket(bucketChunks).CreateBucketIfNotExists([]byte(host))
	if err != nil {
		return fmt.Errorf("create chunk bucket of host %s: %w", host, err)
	}
	key := tsKey(nil, w)
	var old []storage.Snapshot
	if v := cb.Get(key); v != nil {
		if old, err = d.Decode(nil, v, host, math.MinInt64, math.MaxInt64, nil); err != nil {
			return fmt.Errorf("seal window %d of host %s: chunk: %w", w, host, err)
		}
	}
	merged := chunk.Merge(old, fresh)
	cut := s.cutoff()
	i, _ := slices.BinarySearchFunc(merged, cut, func(sn storage.Snapshot, t int64) int { return cmp.Compare(sn.Timestamp, t) })
	merged = merged[i:]
	if len(merged) == 0 {
		if err := cb.Delete(key); err != nil {
			return err
		}
	} else {
		enc, err := chunk.Encode(nil, merged)
		if err != nil {
			return fmt.Errorf("seal window %d of host %s: %w", w, host, err)
		}
		if err := cb.Put(key, enc); err != nil {
			return fmt.Errorf("put chunk %s@%d: %w", host, w, err)
		}
	}
	for _, k := range keys {
		if err := recs.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// sealAfterWrite seals, in a transaction of its own, one closed window of
// each host a write found with some, skipping the windows the write
// touched (more late data for them tends to follow: the sweeper seals
// them). A failure is logged, not returned: the write is stored.
func (s *Store) sealAfterWrite(hosts []string, touched map[string][]int64) {
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, h := range hosts {
			ws := touched[h]
			if _, _, err := s.sealHost(tx, []byte(h), 1, func(w int64) bool { return slices.Contains(ws, w) }); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.logger.Warn("embedded storage: sealing chunks failed; the records stay readable and the sweeper tries again", "err", err)
	}
}

// sealAll seals every closed window of every host, sealBatch windows per
// transaction; it returns early when Close is called. A host whose window
// does not seal (a corrupt record or chunk) is logged and skipped, so it
// holds up neither the others nor the retention sweep (which deletes its
// old records in time).
func (s *Store) sealAll() (int, error) {
	var ids [][]byte
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSnapshots).ForEachBucket(func(k []byte) error {
			if hostNeedsSeal(tx, k, s.now().Unix()) {
				ids = append(ids, slices.Clone(k))
			}
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("list hosts to seal: %w", err)
	}
	total := 0
	for _, id := range ids {
		for more := true; more; {
			select {
			case <-s.stop:
				return total, nil
			default:
			}
			var n int
			err := s.db.Update(func(tx *bolt.Tx) error {
				var err error
				n, more, err = s.sealHost(tx, id, sealBatch, nil)
				return err
			})
			if err != nil {
				s.logger.Warn("embedded storage: sealing a host's chunks failed; its records stay readable", "host", string(id), "err", err)
				break
			}
			total += n
		}
	}
	return total, nil
}

// readChunks appends the host's chunked snapshots with from <= ts <= to
// (windows overlapping the span), in time order.
func readChunks(tx *bolt.Tx, d *chunk.Decoder, dst []storage.Snapshot, host string, from, to int64, m *storage.Matcher) ([]storage.Snapshot, error) {
	b := tx.Bucket(bucketChunks).Bucket([]byte(host))
	if b == nil {
		return dst, nil
	}
	c := b.Cursor()
	for k, v := c.Seek(tsKey(nil, max(windowOf(from), 0))); k != nil && keyTS(k) <= to; k, v = c.Next() {
		var err error
		if dst, err = d.Decode(dst, v, host, from, to, m); err != nil {
			return dst, fmt.Errorf("chunk %d: %w", keyTS(k), err)
		}
	}
	return dst, nil
}

// lastChunked returns the newest chunk's value and its last timestamp.
func lastChunked(tx *bolt.Tx, id []byte) ([]byte, int64, error) {
	b := tx.Bucket(bucketChunks).Bucket(id)
	if b == nil {
		return nil, 0, nil
	}
	k, v := b.Cursor().Last()
	if k == nil {
		return nil, 0, nil
	}
	_, last, _, err := chunk.Span(v)
	if err != nil {
		return nil, 0, fmt.Errorf("chunk %d: %w", keyTS(k), err)
	}
	return v, last, nil
}
