// Package embedded is the single-machine storage backend: storage.Store in
// one bbolt file (dir/monitor.db), for `monitor standalone` and brokers
// without Redis.
//
// # Layout
//
//	bucket "meta"
//	    "format" -> one byte, the layout version (2)
//	bucket "hosts"
//	    {hostId} -> JSON host record: the agent's info and labels,
//	                first_seen, last_registered, last_heartbeat (Unix s)
//	bucket "snapshots"
//	    bucket {hostId}
//	        8-byte big-endian timestamp -> encoded snapshot (a pkg/storage/chunk record:
//	        version byte, tags, samples sorted by series, each value a
//	        float64 or a zigzag varint when integral): the open hour, and
//	        late data for hours sealed already
//	bucket "chunks"
//	    bucket {hostId}
//	        8-byte big-endian hour start -> the hour's snapshots sealed
//	        into one pkg/storage/chunk chunk (chunks.go)
//	bucket "rollup_1m", "rollup_1h"
//	    bucket {hostId}
//	        8-byte big-endian bucket start -> the bucket's aggregates, one
//	        per series: min, max, sum, count, last and its timestamp, unit
//	        (rollup.go)
//	bucket "rollup_seen"
//	    bucket {hostId}
//	        8-byte big-endian hour start -> 450-byte bitmap of the
//	        timestamps of the hour already counted in the rollups
//
// Big-endian keys keep a host's snapshots in time order, so a range is a
// cursor seek and a walk in each form, and the newest snapshot is the last
// key of one of them. An hour is sealed into a chunk once it is over
// (chunks.go): about 2 bytes per sample instead of about 34. The
// rollups follow storage.Store's contract exactly as the Redis backend does
// (counted once per host and timestamp, in the snapshots' transaction).
// Files written before rollups existed get the rollup buckets on Open and
// rollups from then on; files of format 1 (records only, no chunks) are
// upgraded on Open and their past hours sealed by the sweeper.
//
// # Retention
//
// A sweeper goroutine owned by the Store (started by Open, stopped and
// joined by Close) runs every SweepInterval, and once right after Open: it
// deletes snapshots older than Retention (by timestamp), rollup buckets
// older than their resolution's retention (by bucket start), seen bitmaps
// of hours that no longer accept data (start + 1 h older than Retention),
// empty host buckets, and host records inactive for longer than HostTTL
// (activity: registration, heartbeat, newest data). Reads apply the same
// cut-offs, so nothing older is ever returned whatever the sweeper's
// progress.
//
// # Durability and concurrency
//
// Each WriteSnapshots is one bbolt read-write transaction, fsynced before
// it returns. bbolt allows one writer and many readers at once; a Store is
// safe for concurrent use. Only one process may open the file: a second
// Open fails after a second instead of waiting.
package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/pkg/storage/chunk"
)

// FileName is the database file inside the data directory.
const FileName = "monitor.db"

// formatVersion is the file's layout version: 2 adds the chunks bucket.
// A file of version 1 (records only) is upgraded on Open; a binary that
// knows only version 1 refuses a version 2 file instead of missing the
// sealed hours.
const (
	formatVersion  = 2
	formatNoChunks = 1
)

// Defaults.
const (
	DefaultSweepInterval = 10 * time.Minute
	// sweepBatch bounds how many keys one sweeping transaction deletes, so
	// writers never wait long behind the sweeper.
	sweepBatch = 10_000
)

var (
	bucketMeta      = []byte("meta")
	bucketHosts     = []byte("hosts")
	bucketSnapshots = []byte("snapshots")
	keyFormat       = []byte("format")
)

// Options configures a Store. Zero fields take the defaults noted.
type Options struct {
	// Retention is how long snapshots are kept; default 7 days.
	Retention time.Duration
	// SweepInterval is how often expired data is deleted; default 10m.
	SweepInterval time.Duration
	// HostTTL is how long a host registration outlives the host's last
	// activity; default Retention.
	HostTTL time.Duration
	// Rollups is how long each rollup resolution is kept; default 30 days
	// of minutes and a year of hours.
	Rollups storage.RollupRetention
	// NoRollups turns rollups off: nothing is aggregated at write time and
	// RangeRollup returns storage.ErrNoRollups.
	NoRollups bool
	// Now is the clock retention is computed from; default time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() (Options, error) {
	if o.Retention == 0 {
		o.Retention = storage.DefaultRetention
	}
	if o.SweepInterval == 0 {
		o.SweepInterval = DefaultSweepInterval
	}
	if o.HostTTL == 0 {
		o.HostTTL = o.Retention
	}
	o.Rollups = o.Rollups.WithDefaults()
	if o.Now == nil {
		o.Now = time.Now
	}
	if err := o.Rollups.Validate(); err != nil {
		return o, err
	}
	switch {
	case o.Retention < time.Second:
		return o, fmt.Errorf("retention %v is shorter than 1s", o.Retention)
	case o.SweepInterval < time.Millisecond:
		return o, fmt.Errorf("sweep interval %v is shorter than 1ms", o.SweepInterval)
	case o.HostTTL < time.Second:
		return o, fmt.Errorf("host TTL %v is shorter than 1s", o.HostTTL)
	}
	return o, nil
}

// Store is the embedded backend. Create it with Open.
type Store struct {
	db     *bolt.DB
	opts   Options
	logger *slog.Logger
	now    func() time.Time

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

var _ storage.Store = (*Store)(nil)

// Open opens (creating if needed) dir/monitor.db and starts the sweeper.
func Open(dir string, opts Options, logger *slog.Logger) (*Store, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("open embedded store: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("open embedded store: create %s: %w", dir, err)
	}
	path := filepath.Join(dir, FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, FreelistType: bolt.FreelistMapType})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open embedded store %s: the file is locked (is another broker using it?)", path)
		}
		return nil, fmt.Errorf("open embedded store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		switch v := meta.Get(keyFormat); {
		case v == nil:
			if err := meta.Put(keyFormat, []byte{formatVersion}); err != nil {
				return err
			}
		case len(v) == 1 && v[0] == formatNoChunks:
			logger.Info("embedded storage: upgrading the file to layout version 2; past hours are sealed into chunks in the background", "path", path)
			if err := meta.Put(keyFormat, []byte{formatVersion}); err != nil {
				return err
			}
		case len(v) != 1 || v[0] != formatVersion:
			return fmt.Errorf("layout version %v is not %d (written by another version?)", v, formatVersion)
		}
		for _, b := range [][]byte{bucketHosts, bucketSnapshots, bucketChunks, bucketRollupMinute, bucketRollupHour, bucketRollupSeen} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open embedded store %s: %w", path, err)
	}
	s := &Store{db: db, opts: opts, logger: logger, now: opts.Now, stop: make(chan struct{}), done: make(chan struct{})}
	go s.sweeper()
	logger.Info("embedded storage opened", "path", path, "retention", opts.Retention)
	return s, nil
}

// Close stops the sweeper, waits for it, and closes the file. It waits for
// transactions in flight. It is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.done
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("close embedded store: %w", err)
		}
	})
	return s.closeErr
}

// Ping reports whether the file is open.
func (s *Store) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.View(func(tx *bolt.Tx) error { return nil })
}

// cutoff is the oldest timestamp reads still return.
func (s *Store) cutoff() int64 { return s.now().Add(-s.opts.Retention).Unix() }

func tsKey(b []byte, ts int64) []byte { return binary.BigEndian.AppendUint64(b, uint64(ts)) }

func keyTS(k []byte) int64 { return int64(binary.BigEndian.Uint64(k)) }

// WriteSnapshots validates every snapshot first (nothing is written if one
// is refused), encodes them, then stores them in one transaction.
func (s *Store) WriteSnapshots(ctx context.Context, snaps []storage.Snapshot) error {
	if len(snaps) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("write snapshots: %w", err)
	}
	size := 0
	for i := range snaps {
		if err := storage.ValidateSnapshot(&snaps[i]); err != nil {
			return fmt.Errorf("write snapshots: snapshot %d: %w", i, err)
		}
		size += 32
		for k, v := range snaps[i].Tags {
			size += len(k) + len(v) + 2
		}
		for j := range snaps[i].Samples {
			size += len(snaps[i].Samples[j].Series) + len(snaps[i].Samples[j].Unit) + 12
		}
	}
	// Encode outside the transaction: the write lock is held only for the
	// puts. bbolt needs keys and values to stay valid until commit; slices
	// of an arena that later grows keep the old backing array alive.
	arena := make([]byte, 0, size)
	keys := make([][]byte, len(snaps))
	vals := make([][]byte, len(snaps))
	for i := range snaps {
		start := len(arena)
		arena = tsKey(arena, snaps[i].Timestamp)
		keys[i] = arena[start:len(arena):len(arena)]
		start = len(arena)
		arena = chunk.AppendRecord(arena, &snaps[i])
		vals[i] = arena[start:len(arena):len(arena)]
	}
	// The windows the call touched, per host, and the hosts with closed
	// windows to seal once the write is stored.
	touched := map[string][]int64{}
	var toSeal []string
	err := s.db.Update(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketSnapshots)
		var b *bolt.Bucket
		var bHost string
		for i := range snaps {
			if b == nil || snaps[i].HostID != bHost {
				var err error
				if b, err = root.CreateBucketIfNotExists([]byte(snaps[i].HostID)); err != nil {
					return fmt.Errorf("create bucket for host %s: %w", snaps[i].HostID, err)
				}
				b.FillPercent = 0.9 // keys mostly arrive in increasing order
				bHost = snaps[i].HostID
			}
			if err := b.Put(keys[i], vals[i]); err != nil {
				return fmt.Errorf("put snapshot %s@%d: %w", snaps[i].HostID, snaps[i].Timestamp, err)
			}
			ws := touched[bHost]
			if w := windowOf(snaps[i].Timestamp); !slices.Contains(ws, w) {
				touched[bHost] = append(ws, w)
			}
		}
		now := s.now().Unix()
		for h := range touched {
			if hostNeedsSeal(tx, []byte(h), now) {
				toSeal = append(toSeal, h)
			}
		}
		if s.opts.NoRollups {
			return nil
		}
		return s.rollUp(tx, snaps)
	})
	if err != nil {
		return fmt.Errorf("write %d snapshots: %w", len(snaps), err)
	}
	if len(toSeal) > 0 {
		slices.Sort(toSeal)
		s.sealAfterWrite(toSeal, touched)
	}
	return nil
}

// Range returns the host's snapshots with From <= timestamp <= To, never
// older than the retention.
func (s *Store) Range(ctx context.Context, q storage.RangeQuery) ([]storage.Snapshot, error) {
	if err := storage.ValidateHostID(q.HostID); err != nil {
		return nil, fmt.Errorf("range: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("range %s: %w", q.HostID, err)
	}
	from := max(q.From, s.cutoff(), 1)
	if q.To < from {
		return nil, nil
	}
	var out []storage.Snapshot
	err := s.db.View(func(tx *bolt.Tx) error {
		d := chunk.NewDecoder()
		sealed, err := readChunks(tx, d, nil, q.HostID, from, q.To, q.Match)
		if err != nil {
			return err
		}
		defer func() { out = dropEmpty(chunk.Merge(sealed, out), q.Match) }()
		b := tx.Bucket(bucketSnapshots).Bucket([]byte(q.HostID))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		n := 0
		for k, v := c.Seek(tsKey(nil, from)); k != nil; k, v = c.Next() {
			ts := keyTS(k)
			if ts > q.To {
				break
			}
			if n++; n%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			snap := storage.Snapshot{HostID: q.HostID, Timestamp: ts}
			if err := d.DecodeRecord(v, q.Match, &snap); err != nil {
				return fmt.Errorf("snapshot %d: %w", ts, err)
			}
			out = append(out, snap)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("range %s: %w", q.HostID, err)
	}
	return out, nil
}

// Latest returns the host's newest snapshot within the retention.
func (s *Store) Latest(ctx context.Context, hostID string) (storage.Snapshot, bool, error) {
	if err := storage.ValidateHostID(hostID); err != nil {
		return storage.Snapshot{}, false, fmt.Errorf("latest: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return storage.Snapshot{}, false, fmt.Errorf("latest %s: %w", hostID, err)
	}
	var snap storage.Snapshot
	ok := false
	cut := s.cutoff()
	err := s.db.View(func(tx *bolt.Tx) error {
		var k, v []byte
		if b := tx.Bucket(bucketSnapshots).Bucket([]byte(hostID)); b != nil {
			k, v = b.Cursor().Last()
		}
		sealed, last, err := lastChunked(tx, []byte(hostID))
		if err != nil {
			return err
		}
		d := chunk.NewDecoder()
		switch {
		case k != nil && keyTS(k) >= last: // the record wins a timestamp both hold
			if keyTS(k) < cut {
				return nil
			}
			snap = storage.Snapshot{HostID: hostID, Timestamp: keyTS(k)}
			if err := d.DecodeRecord(v, nil, &snap); err != nil {
				return fmt.Errorf("snapshot %d: %w", snap.Timestamp, err)
			}
		case sealed != nil:
			if last < cut {
				return nil
			}
			got, err := d.Decode(nil, sealed, hostID, last, last, nil)
			if err != nil {
				return fmt.Errorf("snapshot %d: %w", last, err)
			}
			if len(got) != 1 {
				return fmt.Errorf("snapshot %d: the chunk that ends with it decoded to %d snapshots", last, len(got))
			}
			snap = got[0]
		default:
			return nil
		}
		ok = true
		return nil
	})
	if err != nil {
		return storage.Snapshot{}, false, fmt.Errorf("latest %s: %w", hostID, err)
	}
	return snap, ok, nil
}

// hostRecord is a host's registration as stored in the hosts bucket.
type hostRecord struct {
	Hostname       string            `json:"hostname,omitempty"`
	OS             string            `json:"os,omitempty"`
	Platform       string            `json:"platform,omitempty"`
	Kernel         string            `json:"kernel,omitempty"`
	Arch           string            `json:"arch,omitempty"`
	CPUCount       uint32            `json:"cpu_count,omitempty"`
	MemoryBytes    uint64            `json:"memory_bytes,omitempty"`
	Labels         map[string]string `json:"labels,omitempty"`
	AgentVersion   string            `json:"agent_version,omitempty"`
	BootTime       int64             `json:"boot_time,omitempty"`
	FirstSeen      int64             `json:"first_seen"`
	LastRegistered int64             `json:"last_registered"`
	LastHeartbeat  int64             `json:"last_heartbeat,omitempty"`
}

func (r *hostRecord) host(id string) storage.Host {
	return storage.Host{
		ID: id, Hostname: r.Hostname, OS: r.OS, Platform: r.Platform, Kernel: r.Kernel, Arch: r.Arch,
		CPUCount: r.CPUCount, MemoryBytes: r.MemoryBytes, Labels: r.Labels, AgentVersion: r.AgentVersion,
		BootTime: r.BootTime, FirstSeen: r.FirstSeen, LastRegistered: r.LastRegistered, LastHeartbeat: r.LastHeartbeat,
	}
}

// activity is the newest of the record's times and the host's newest data.
func (r *hostRecord) activity(lastData int64) int64 {
	return max(r.LastRegistered, r.LastHeartbeat, lastData)
}

// lastData returns the timestamp of the host's newest snapshot (0: none),
// a record or the end of the newest chunk (an unreadable chunk counts as
// none here: Range and Latest report it).
func lastData(tx *bolt.Tx, id []byte) int64 {
	var last int64
	if b := tx.Bucket(bucketSnapshots).Bucket(id); b != nil {
		if k, _ := b.Cursor().Last(); k != nil {
			last = keyTS(k)
		}
	}
	if _, t, err := lastChunked(tx, id); err == nil {
		last = max(last, t)
	}
	return last
}

// dropEmpty omits snapshots a matcher left without samples.
func dropEmpty(snaps []storage.Snapshot, m *storage.Matcher) []storage.Snapshot {
	if m == nil {
		return snaps
	}
	return slices.DeleteFunc(snaps, func(s storage.Snapshot) bool { return len(s.Samples) == 0 })
}

// liveRecord returns the host's registration unless it has lapsed (no
// activity within HostTTL): a lapsed registration counts as none, as an
// expired key does in Redis.
func (s *Store) liveRecord(tx *bolt.Tx, id []byte) (*hostRecord, int64, error) {
	last := lastData(tx, id)
	v := tx.Bucket(bucketHosts).Get(id)
	if v == nil {
		return nil, last, nil
	}
	var r hostRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, last, fmt.Errorf("decode host record %s: %w", id, err)
	}
	if r.activity(last) < s.now().Add(-s.opts.HostTTL).Unix() {
		return nil, last, nil
	}
	return &r, last, nil
}

// RegisterHost stores h's info, keeping FirstSeen and LastHeartbeat of a
// live registration, and returns the stored record with LastData.
func (s *Store) RegisterHost(ctx context.Context, h storage.Host, at time.Time) (storage.Host, error) {
	if err := storage.ValidateHostID(h.ID); err != nil {
		return storage.Host{}, fmt.Errorf("register host: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return storage.Host{}, fmt.Errorf("register host %s: %w", h.ID, err)
	}
	var out storage.Host
	err := s.db.Update(func(tx *bolt.Tx) error {
		id := []byte(h.ID)
		prev, last, err := s.liveRecord(tx, id)
		if err != nil {
			return err
		}
		r := hostRecord{
			Hostname: h.Hostname, OS: h.OS, Platform: h.Platform, Kernel: h.Kernel, Arch: h.Arch,
			CPUCount: h.CPUCount, MemoryBytes: h.MemoryBytes, AgentVersion: h.AgentVersion, BootTime: h.BootTime,
			FirstSeen: at.Unix(), LastRegistered: at.Unix(),
		}
		if len(h.Labels) > 0 {
			r.Labels = h.Labels
		}
		if prev != nil {
			r.FirstSeen, r.LastHeartbeat = prev.FirstSeen, prev.LastHeartbeat
		}
		v, err := json.Marshal(&r)
		if err != nil {
			return fmt.Errorf("encode host record: %w", err)
		}
		if err := tx.Bucket(bucketHosts).Put(id, v); err != nil {
			return err
		}
		out = r.host(h.ID)
		if last >= s.cutoff() {
			out.LastData = last
		}
		return nil
	})
	if err != nil {
		return storage.Host{}, fmt.Errorf("register host %s: %w", h.ID, err)
	}
	return out, nil
}

// Heartbeat records a heartbeat of a registered host; known is false when
// the host has no live registration.
func (s *Store) Heartbeat(ctx context.Context, hostID string, at time.Time) (bool, error) {
	if err := storage.ValidateHostID(hostID); err != nil {
		return false, fmt.Errorf("heartbeat: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("heartbeat %s: %w", hostID, err)
	}
	known := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		id := []byte(hostID)
		r, _, err := s.liveRecord(tx, id)
		if err != nil || r == nil {
			return err
		}
		r.LastHeartbeat = at.Unix()
		v, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("encode host record: %w", err)
		}
		known = true
		return tx.Bucket(bucketHosts).Put(id, v)
	})
	if err != nil {
		return false, fmt.Errorf("heartbeat %s: %w", hostID, err)
	}
	return known, nil
}

// Hosts lists every host with activity within the retention: live
// registrations, and hosts that only sent data (ID and LastData only).
func (s *Store) Hosts(ctx context.Context) ([]storage.Host, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	cut := s.cutoff()
	var out []storage.Host
	err := s.db.View(func(tx *bolt.Tx) error {
		// Hosts with a record, records or chunks: the buckets iterate in
		// id order, merge them.
		var ids [][]byte
		for _, root := range [][]byte{bucketHosts, bucketSnapshots, bucketChunks} {
			var next [][]byte
			c := tx.Bucket(root).Cursor()
			k, _ := c.First()
			i := 0
			for k != nil || i < len(ids) {
				switch {
				case k == nil || (i < len(ids) && bytes.Compare(ids[i], k) < 0):
					next = append(next, ids[i])
					i++
				case i == len(ids) || bytes.Compare(k, ids[i]) < 0:
					next = append(next, k)
					k = nextKey(c)
				default:
					next = append(next, k)
					k = nextKey(c)
					i++
				}
			}
			ids = next
		}
		for _, id := range ids {
			r, last, err := s.liveRecord(tx, id)
			if err != nil {
				return err
			}
			if last < cut {
				last = 0
			}
			var h storage.Host
			switch {
			case r != nil && r.activity(last) >= cut:
				h = r.host(string(id))
			case last > 0:
				h = storage.Host{ID: string(id)}
			default:
				continue
			}
			h.LastData = last
			out = append(out, h)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	return out, nil
}

func nextKey(c *bolt.Cursor) []byte {
	k, _ := c.Next()
	return k
}

// sweeper deletes expired data until Close.
func (s *Store) sweeper() {
	defer close(s.done)
	t := time.NewTicker(s.opts.SweepInterval)
	defer t.Stop()
	for {
		if err := s.sweep(); err != nil {
			s.logger.Error("embedded storage sweep failed", "err", err)
		}
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

// sweep runs one pass; it returns early (nil) when Close is called.
func (s *Store) sweep() error {
	sealed, err := s.sealAll()
	if err != nil {
		return err
	}
	now := s.now()
	// Per root bucket, keys (timestamps or bucket starts) below the cut go.
	roots := []struct {
		name []byte
		cut  int64
	}{
		{bucketSnapshots, s.cutoff()},
		// A chunk is needed while its window's last second is.
		{bucketChunks, s.cutoff() - chunkSpan + 1},
		{bucketRollupMinute, now.Add(-s.opts.Rollups.Minute).Unix()},
		{bucketRollupHour, now.Add(-s.opts.Rollups.Hour).Unix()},
		// An hour's bitmap is needed while the hour's last second is
		// within the retention.
		{bucketRollupSeen, s.cutoff() - int64(storage.Hour) + 1},
	}
	deleted, buckets := 0, 0
	for _, root := range roots {
		var hostIDs [][]byte
		err := s.db.View(func(tx *bolt.Tx) error {
			return tx.Bucket(root.name).ForEachBucket(func(k []byte) error {
				hostIDs = append(hostIDs, slices.Clone(k))
				return nil
			})
		})
		if err != nil {
			return fmt.Errorf("list host buckets of %s: %w", root.name, err)
		}
		for _, id := range hostIDs {
			for {
				select {
				case <-s.stop:
					return nil
				default:
				}
				n, more, gone, err := s.sweepHost(root.name, id, root.cut)
				if err != nil {
					return fmt.Errorf("sweep %s of host %s: %w", root.name, id, err)
				}
				deleted += n
				if gone {
					buckets++
				}
				if !more {
					break
				}
			}
		}
	}
	lapsed := 0
	err = s.db.Update(func(tx *bolt.Tx) error {
		hosts := tx.Bucket(bucketHosts)
		var dead [][]byte
		err := hosts.ForEach(func(k, _ []byte) error {
			r, _, err := s.liveRecord(tx, k)
			if err != nil {
				s.logger.Warn("embedded storage: dropping unreadable host record", "host", string(k), "err", err)
			}
			if r == nil {
				dead = append(dead, slices.Clone(k))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range dead {
			if err := hosts.Delete(k); err != nil {
				return err
			}
		}
		lapsed = len(dead)
		return nil
	})
	if err != nil {
		return fmt.Errorf("sweep host records: %w", err)
	}
	if sealed+deleted+buckets+lapsed > 0 {
		s.logger.Debug("embedded storage swept", "sealed_windows", sealed, "keys", deleted, "host_buckets", buckets, "host_records", lapsed)
	}
	return nil
}

// sweepHost deletes up to sweepBatch keys below cut from the host's bucket
// under rootName in one transaction; more reports that some may be left,
// gone that the host's bucket was emptied and removed.
func (s *Store) sweepHost(rootName, id []byte, cut int64) (n int, more, gone bool, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		root := tx.Bucket(rootName)
		b := root.Bucket(id)
		if b == nil {
			return nil
		}
		// Collect, then delete: deleting under a live cursor skips keys.
		var old [][]byte
		c := b.Cursor()
		for k, _ := c.First(); k != nil && keyTS(k) < cut; k, _ = c.Next() {
			if len(old) == sweepBatch {
				more = true
				break
			}
			old = append(old, slices.Clone(k))
		}
		for _, k := range old {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		n = len(old)
		if !more {
			if k, _ := b.Cursor().First(); k == nil {
				gone = true
				return root.DeleteBucket(id)
			}
		}
		return nil
	})
	return n, more, gone, err
}
