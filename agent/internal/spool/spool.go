// Package spool is the agent's on-disk log of unacknowledged snapshots:
// every snapshot the agent collects is appended here before it is sent,
// and removed only when a broker acknowledges it as stored. It carries the
// agent's data across broker outages longer than memory would hold and
// across agent restarts and crashes; on start the held records are replayed
// before anything new.
//
// Layout: a directory of segment files named <id>.seg (16 hex digits,
// increasing), each the magic bytes followed by records (record.go: length,
// CRC-32C, protobuf snapshot), plus a small "acked" file naming the first
// unacknowledged record (segment id, index, CRC). Appends go to the newest
// segment; a segment that would pass SegmentBytes is sealed and a new one
// begun. A segment whose records are all acknowledged is deleted.
//
// Durability (fsync policy): each Append — one batch of snapshots popped
// from the ring — is written with one write and one fsync before Append
// returns; a new segment file is fsynced with its directory. The "acked"
// file is overwritten in place without fsync: after a power loss it may name
// an older record, so some acknowledged snapshots are sent again, which is
// harmless (the broker's writes are idempotent on host and timestamp).
//
// Damage: on Open, a record cut short at the end of a segment (a crash in
// the middle of a write) is skipped and logged; a record whose checksum or
// length is wrong ends that segment's scan (the rest of it is skipped and
// logged). Neither is fatal. Either costs one counted drop (DropCorrupt).
//
// Cap: when the segments pass MaxBytes, the oldest segment is deleted, even
// if unacknowledged, and its unacknowledged records are counted as dropped
// (DropFull): the newest data is kept.
//
// Disk failure: when a write or fsync fails, the records go to an
// in-memory segment instead (same format, same cap), counted in
// WriteErrors; a new disk segment is tried after DiskRetry. With an empty
// Dir the spool is memory-only.
//
// Positions: every record gets a position, increasing by one per record,
// for the life of the Spool (a reopened spool numbers from 0 again). The
// sender reads by position and acknowledges a prefix with Release.
//
// Concurrency: Append is called by one goroutine at a time (the writer);
// the others may be called from any goroutine. A write and its fsync run
// without the lock held, so readers are not stalled by a slow disk.
package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	monitorpb "github.com/monitorhq/monitor/proto"
)

// Drop reasons, in Stats.Dropped.
const (
	DropFull    = "spool_full"    // the cap was reached: the oldest segment went
	DropCorrupt = "spool_corrupt" // a record was torn or failed its checksum
)

// Options configure a Spool.
type Options struct {
	// Dir holds the segment files; "" keeps everything in memory.
	Dir string
	// MaxBytes caps the segments' total size.
	MaxBytes int64
	// SegmentBytes is the size at which a segment is sealed (at most
	// MaxBytes/2; 0 picks MaxBytes/16 within [64 KiB, 8 MiB]).
	SegmentBytes int64
	// DiskRetry is how long to stay on memory after a write error
	// (default 30 s).
	DiskRetry time.Duration
}

// Item is a snapshot read back with its position.
type Item struct {
	Pos  uint64
	Snap *monitorpb.Snapshot
}

// Stats describe the spool now and count events since Open.
type Stats struct {
	Records        uint64            // held, not yet acknowledged
	Bytes          int64             // size of the segments
	Segments       int               // segments, memory ones included
	MemorySegments int               // segments held in memory
	Appended       uint64            // records appended since Open
	Replayed       uint64            // unacknowledged records found at Open
	Dropped        map[string]uint64 // records lost, by DropFull, DropCorrupt
	WriteErrors    uint64            // failed writes or fsyncs
}

type segment struct {
	id    uint64
	first uint64  // position of its first record
	offs  []int64 // record offsets in the file or mem
	lens  []int32 // record lengths, header included
	size  int64   // bytes, magic included
	path  string  // "" for a memory segment
	f     *os.File
	mem   []byte
	// sealed: no more appends (full, from a previous run, or after a
	// write error).
	sealed bool
}

func (g *segment) end() uint64 { return g.first + uint64(len(g.offs)) }

// Spool is a durable log of snapshots; see the package comment.
type Spool struct {
	opts  Options
	log   *slog.Logger
	ready chan struct{}

	mu         sync.Mutex
	segs       []*segment // oldest first; the last is active (appended to)
	head, tail uint64     // positions [head, tail) are held
	nextID     uint64
	bytes      int64
	retryDisk  time.Time
	readBuf    []byte
	appended   uint64
	replayed   uint64
	dropFull   uint64
	dropBad    uint64
	writeErrs  uint64
	lastAck    [2]uint64 // the watermark last written
	// recent holds the snapshots of the latest appends, positions
	// [recentFirst, tail): the sender usually reads them right away, and
	// needs neither a disk read nor a decode for them.
	recent      []*monitorpb.Snapshot
	recentFirst uint64

	// encBuf belongs to the writer (Append).
	encBuf []byte
	lock   *os.File // the directory's LOCK file, held while open
	ackF   *os.File // the "acked" file, once written
}

const (
	ackFile   = "acked"
	segSuffix = ".seg"
	// recentMax bounds the decoded snapshots kept after Append.
	recentMax = 64
)

// Open opens (creating if need be) the spool in opts.Dir and indexes the
// records it holds; they are replayed first. Damaged records are skipped
// and logged, not fatal.
func Open(opts Options, logger *slog.Logger) (*Spool, error) {
	if opts.MaxBytes <= 0 {
		return nil, fmt.Errorf("spool: MaxBytes %d must be positive", opts.MaxBytes)
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = min(max(opts.MaxBytes/16, 64<<10), 8<<20)
	}
	opts.SegmentBytes = max(min(opts.SegmentBytes, opts.MaxBytes/2), 1)
	if opts.DiskRetry <= 0 {
		opts.DiskRetry = 30 * time.Second
	}
	s := &Spool{opts: opts, log: logger, ready: make(chan struct{}, 1), nextID: 1}
	if opts.Dir == "" {
		return s, nil
	}
	if err := os.MkdirAll(opts.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("create spool directory: %w", err)
	}
	lock, err := lockDir(opts.Dir)
	if err != nil {
		return nil, err
	}
	s.lock = lock
	if err := s.load(); err != nil {
		s.Close()
		return nil, err
	}
	s.replayed = s.tail - s.head
	if s.replayed > 0 {
		s.log.Info("spool holds unacknowledged snapshots from a previous run; sending them first",
			"dir", opts.Dir, "snapshots", s.replayed, "segments", len(s.segs), "bytes", s.bytes)
	}
	s.signal()
	return s, nil
}

// load indexes the segment files and applies the ack watermark.
func (s *Spool) load() error {
	entries, err := os.ReadDir(s.opts.Dir)
	if err != nil {
		return fmt.Errorf("read spool directory: %w", err)
	}
	var ids []uint64
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasSuffix(name, segSuffix) {
			continue
		}
		id, err := strconv.ParseUint(strings.TrimSuffix(name, segSuffix), 16, 64)
		if err != nil || id == 0 {
			s.log.Warn("spool: ignoring a file that is not a segment", "file", name)
			continue
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	ackSeg, ackIdx, ok := s.readAck()
	if ok {
		// Segment ids never go back, even when every file is gone: a new
		// segment must not sort before the watermark.
		s.nextID = max(s.nextID, ackSeg+1)
	}
	for _, id := range ids {
		s.nextID = max(s.nextID, id+1)
		path := filepath.Join(s.opts.Dir, fmt.Sprintf("%016x%s", id, segSuffix))
		if ok && id < ackSeg {
			// Fully acknowledged; its deletion did not happen before a crash.
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("remove acknowledged segment: %w", err)
			}
			continue
		}
		g, err := s.loadSegment(id, path)
		if err != nil {
			return err
		}
		if g == nil {
			continue
		}
		// Segments before the watermark's were deleted above, so the
		// watermark's segment, when present, is the first one loaded.
		g.first = s.tail
		s.tail = g.end()
		if ok && id == ackSeg {
			s.head = g.first + min(ackIdx, uint64(len(g.offs)))
		}
		s.segs = append(s.segs, g)
		s.bytes += g.size
	}
	// A segment the watermark passes entirely goes now.
	for len(s.segs) > 0 && s.segs[0].end() <= s.head {
		s.removeFirst()
	}
	return nil
}

// loadSegment reads and indexes one segment file; nil for an empty one
// (removed).
func (s *Spool) loadSegment(id uint64, path string) (*segment, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read spool segment: %w", err)
	}
	if len(b) < len(magic) || [8]byte(b[:8]) != magic {
		// A crash right after creating the file leaves it empty or with a
		// partial magic: nothing was ever acknowledged as written to it.
		s.log.Warn("spool: segment without a valid header; removing it", "file", path, "bytes", len(b))
		if len(b) > len(magic) {
			s.dropBad++
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove damaged segment: %w", err)
		}
		return nil, nil
	}
	offs, lens, err := scanRecords(b[len(magic):])
	for i := range offs {
		offs[i] += int64(len(magic))
	}
	if err != nil {
		s.dropBad++
		if errors.Is(err, errTorn) {
			s.log.Warn("spool: torn last record skipped (a write cut short by a crash)", "file", path, "records_kept", len(offs), "err", err)
		} else {
			s.log.Error("spool: corrupt record; the rest of the segment is skipped", "file", path, "records_kept", len(offs), "err", err)
		}
	}
	if len(offs) == 0 {
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove empty segment: %w", err)
		}
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open spool segment: %w", err)
	}
	end := offs[len(offs)-1] + int64(lens[len(lens)-1])
	return &segment{id: id, offs: offs, lens: lens, size: end, path: path, f: f, sealed: true}, nil
}

func (s *Spool) readAck() (seg, idx uint64, ok bool) {
	b, err := os.ReadFile(filepath.Join(s.opts.Dir, ackFile))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("spool: cannot read the ack watermark; replaying every segment", "err", err)
		}
		return 0, 0, false
	}
	if len(b) != 20 || crc32.Checksum(b[:16], crcTable) != binary.LittleEndian.Uint32(b[16:]) {
		s.log.Warn("spool: damaged ack watermark; replaying every segment")
		return 0, 0, false
	}
	return binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[8:]), true
}

// writeAck records that the first unacknowledged record is index idx of
// segment seg: 20 bytes written in place (one pwrite, no fsync) to the
// "acked" file, kept open. A torn write fails the checksum and the next Open
// replays every segment: duplicates, never a loss. Called with mu held.
func (s *Spool) writeAck(seg, idx uint64) {
	if s.opts.Dir == "" || s.lastAck == [2]uint64{seg, idx} {
		return
	}
	if s.ackF == nil {
		f, err := os.OpenFile(filepath.Join(s.opts.Dir, ackFile), os.O_RDWR|os.O_CREATE, 0o640)
		if err != nil {
			s.log.Warn("spool: cannot open the ack watermark; acknowledged snapshots may be sent again after a restart", "err", err)
			return
		}
		s.ackF = f
	}
	b := binary.LittleEndian.AppendUint64(make([]byte, 0, 20), seg)
	b = binary.LittleEndian.AppendUint64(b, idx)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
	if _, err := s.ackF.WriteAt(b, 0); err != nil {
		s.log.Warn("spool: cannot write the ack watermark; acknowledged snapshots may be sent again after a restart", "err", err)
		return
	}
	s.lastAck = [2]uint64{seg, idx}
}

// Append writes snaps as records, durably (see the package comment), and
// makes them readable. It returns an error only when a snapshot cannot be
// encoded; disk errors fall back to memory.
func (s *Spool) Append(snaps []*monitorpb.Snapshot) error {
	if len(snaps) == 0 {
		return nil
	}
	buf := s.encBuf[:0]
	rel := make([]int64, 0, len(snaps))
	lens := make([]int32, 0, len(snaps))
	encoded := make([]*monitorpb.Snapshot, 0, len(snaps))
	var encErr error
	for _, sn := range snaps {
		start := len(buf)
		buf = append(buf, make([]byte, headerLen)...)
		out, err := proto.MarshalOptions{}.MarshalAppend(buf, sn)
		if err != nil || len(out)-start-headerLen > maxRecord {
			encErr = errors.Join(encErr, fmt.Errorf("encode snapshot %s@%d: %w (or larger than %d bytes)", sn.GetHostId(), sn.GetTimestamp(), err, maxRecord))
			buf = buf[:start]
			continue
		}
		buf = out
		payload := buf[start+headerLen:]
		binary.LittleEndian.PutUint32(buf[start:], uint32(len(payload)))
		binary.LittleEndian.PutUint32(buf[start+4:], crc32.Checksum(payload, crcTable))
		rel = append(rel, int64(start))
		lens = append(lens, int32(len(buf)-start))
		encoded = append(encoded, sn)
	}
	if cap(buf) <= 4<<20 {
		s.encBuf = buf[:0]
	} else {
		s.encBuf = nil // do not keep a huge buffer after one huge batch
	}
	if len(rel) == 0 {
		return encErr
	}

	g := s.active(int64(len(buf)))
	base := g.size
	if g.f != nil {
		if err := writeSync(g.f, buf, base); err != nil {
			s.writeFailed(g, err)
			g = s.active(int64(len(buf)))
			base = g.size
		}
	}

	s.mu.Lock()
	if g.f == nil {
		g.mem = append(g.mem, buf...)
	}
	for i, r := range rel {
		g.offs = append(g.offs, base+r)
		g.lens = append(g.lens, lens[i])
	}
	g.size += int64(len(buf))
	s.bytes += int64(len(buf))
	if s.recentFirst+uint64(len(s.recent)) != s.tail {
		s.recent, s.recentFirst = s.recent[:0], s.tail
	}
	s.recent = append(s.recent, encoded...)
	if n := len(s.recent) - recentMax; n > 0 {
		s.recent = slices.Delete(s.recent, 0, n)
		s.recentFirst += uint64(n)
	}
	s.tail += uint64(len(rel))
	s.appended += uint64(len(rel))
	s.enforceCap()
	s.mu.Unlock()
	s.signal()
	return encErr
}

func writeSync(f *os.File, b []byte, off int64) error {
	if _, err := f.WriteAt(b, off); err != nil {
		return fmt.Errorf("write spool segment: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync spool segment: %w", err)
	}
	return nil
}

// writeFailed seals g after a failed write and moves appends to memory
// until DiskRetry has passed. The failed bytes past g's published size are
// garbage the next Open skips as a torn or corrupt tail.
func (s *Spool) writeFailed(g *segment, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writeErrs++
	s.retryDisk = time.Now().Add(s.opts.DiskRetry)
	s.log.Error("spool: write failed; keeping new snapshots in memory until the disk works again",
		"file", g.path, "retry_in", s.opts.DiskRetry, "err", err)
	s.sealLocked(g)
}

// active returns the segment to append need bytes to, sealing the current
// one and beginning a new one when it is full, when it is a memory segment
// and the disk may be retried, or when there is none.
func (s *Spool) active(need int64) *segment {
	s.mu.Lock()
	var g *segment
	if n := len(s.segs); n > 0 {
		g = s.segs[n-1]
	}
	useDisk := s.opts.Dir != "" && !time.Now().Before(s.retryDisk)
	if g != nil && !g.sealed && (g.size+need <= s.opts.SegmentBytes || len(g.offs) == 0) && (g.path != "" || !useDisk) {
		s.mu.Unlock()
		return g
	}
	id := s.nextID
	s.nextID++
	s.mu.Unlock()

	ng := &segment{id: id}
	if useDisk {
		if err := s.create(ng); err != nil {
			s.mu.Lock()
			s.writeErrs++
			s.retryDisk = time.Now().Add(s.opts.DiskRetry)
			s.mu.Unlock()
			s.log.Error("spool: cannot create a segment; keeping new snapshots in memory until the disk works again",
				"dir", s.opts.Dir, "retry_in", s.opts.DiskRetry, "err", err)
			ng = &segment{id: id}
		}
	}
	s.mu.Lock()
	if g != nil && !g.sealed {
		s.sealLocked(g)
	}
	ng.first = s.tail
	s.segs = append(s.segs, ng)
	s.bytes += ng.size
	s.mu.Unlock()
	return ng
}

// create makes ng's file with the magic, fsynced with its directory.
func (s *Spool) create(ng *segment) error {
	path := filepath.Join(s.opts.Dir, fmt.Sprintf("%016x%s", ng.id, segSuffix))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return fmt.Errorf("create spool segment: %w", err)
	}
	if err := writeSync(f, magic[:], 0); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if d, err := os.Open(s.opts.Dir); err == nil {
		_ = d.Sync() // the new name survives a power loss; best effort
		d.Close()
	}
	ng.path, ng.f, ng.size = path, f, int64(len(magic))
	return nil
}

// sealLocked ends appends to g; an empty disk segment is deleted at once.
// Called with mu held.
func (s *Spool) sealLocked(g *segment) {
	g.sealed = true
	if g.f != nil && len(g.offs) == 0 {
		g.f.Close()
		g.f = nil
		os.Remove(g.path)
	}
	// Otherwise the descriptor stays open for reads.
}

// enforceCap deletes the oldest segments while over MaxBytes, counting
// their unacknowledged records. Called with mu held.
func (s *Spool) enforceCap() {
	for s.bytes > s.opts.MaxBytes && len(s.segs) > 1 {
		g := s.segs[0]
		if g.end() > s.head {
			lost := g.end() - max(s.head, g.first)
			s.dropFull += lost
			s.log.Warn("spool is full; dropping its oldest unacknowledged snapshots", "max_bytes", s.opts.MaxBytes, "dropped", lost)
			s.head = g.end()
		}
		s.removeFirst()
	}
}

// removeFirst deletes the oldest segment. Called with mu held (or from
// Open).
func (s *Spool) removeFirst() {
	g := s.segs[0]
	s.segs = s.segs[1:]
	s.bytes -= g.size
	if g.f != nil {
		g.f.Close()
	}
	if g.path != "" {
		if err := os.Remove(g.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("spool: cannot remove an acknowledged segment", "file", g.path, "err", err)
		}
	}
	g.mem = nil
}

// Release acknowledges every record before position upTo: they are no
// longer returned, and segments holding only such records are deleted.
func (s *Spool) Release(upTo uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	upTo = min(upTo, s.tail)
	if upTo <= s.head {
		return
	}
	s.head = upTo
	if s.head > s.recentFirst {
		n := min(int(s.head-s.recentFirst), len(s.recent))
		s.recent = slices.Delete(s.recent, 0, n)
		s.recentFirst += uint64(n)
	}
	// The segment being appended to stays, even when fully acknowledged.
	for len(s.segs) > 0 && s.segs[0].end() <= s.head && (len(s.segs) > 1 || s.segs[0].sealed) {
		s.removeFirst()
	}
	if len(s.segs) > 0 {
		g := s.segs[0]
		s.writeAck(g.id, s.head-g.first)
	}
}

// Read returns records from position from on (positions already released
// or dropped are skipped): at most maxCount, and no more than maxBytes of
// records unless the first alone is larger. next is the position after
// the last one returned or skipped; a record that fails its checksum now
// (the disk changed under us) is skipped and counted.
func (s *Spool) Read(from uint64, maxCount int, maxBytes int64) (items []Item, next uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.readLocked(max(from, s.head), s.tail, maxCount, maxBytes)
}

// ReadRange returns the records still held in positions [from, to).
func (s *Spool) ReadRange(from, to uint64) []Item {
	s.mu.Lock()
	defer s.mu.Unlock()
	items, _ := s.readLocked(max(from, s.head), min(to, s.tail), int(min(to-min(from, to), 1<<20)), 1<<62)
	return items
}

func (s *Spool) readLocked(pos, end uint64, maxCount int, maxBytes int64) ([]Item, uint64) {
	var items []Item
	var total int64
	si := 0
	for pos < end && len(items) < maxCount {
		for si < len(s.segs) && s.segs[si].end() <= pos {
			si++
		}
		if si == len(s.segs) {
			break
		}
		g := s.segs[si]
		i := int(pos - g.first)
		// The run of records of this segment to read at once.
		j := i
		run := int64(0)
		for j < len(g.offs) && g.first+uint64(j) < end && len(items)+(j-i) < maxCount {
			l := int64(g.lens[j])
			if total+run+l > maxBytes && (len(items) > 0 || j > i) {
				break
			}
			run += l
			j++
		}
		if j == i {
			break // byte budget reached
		}
		var raw []byte
		var err error
		if g.first+uint64(i) < s.recentFirst || len(s.recent) == 0 {
			raw, err = s.readRun(g, i, j)
		}
		if err != nil {
			s.log.Error("spool: cannot read records; skipping them", "file", g.path, "records", j-i, "err", err)
			s.dropBad += uint64(j - i)
			pos = g.first + uint64(j)
			continue
		}
		for k := i; k < j; k++ {
			if p := g.first + uint64(k); p >= s.recentFirst && p < s.recentFirst+uint64(len(s.recent)) {
				items = append(items, Item{Pos: p, Snap: s.recent[p-s.recentFirst]})
				continue
			}
			off := g.offs[k] - g.offs[i]
			payload, _, err := decodeRecord(raw[off : off+int64(g.lens[k])])
			snap := &monitorpb.Snapshot{}
			if err == nil {
				err = proto.Unmarshal(payload, snap)
			}
			if err != nil {
				s.log.Error("spool: damaged record skipped", "file", g.path, "index", k, "err", err)
				s.dropBad++
				continue
			}
			items = append(items, Item{Pos: g.first + uint64(k), Snap: snap})
		}
		total += run
		pos = g.first + uint64(j)
	}
	return items, pos
}

// readRun returns the bytes of records [i, j) of g.
func (s *Spool) readRun(g *segment, i, j int) ([]byte, error) {
	from := g.offs[i]
	to := g.offs[j-1] + int64(g.lens[j-1])
	if g.f == nil {
		return g.mem[from:to], nil
	}
	n := int(to - from)
	if cap(s.readBuf) < n {
		s.readBuf = make([]byte, n)
	}
	b := s.readBuf[:n]
	if _, err := g.f.ReadAt(b, from); err != nil {
		return nil, err
	}
	if cap(s.readBuf) > 4<<20 {
		s.readBuf = nil
	}
	return b, nil
}

// Ready is signalled (capacity 1, so signals coalesce) after every Append
// and after Open found records.
func (s *Spool) Ready() <-chan struct{} { return s.ready }

func (s *Spool) signal() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// Len returns how many records are held (not yet acknowledged).
func (s *Spool) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int(s.tail - s.head)
}

// Bounds returns the position of the oldest record held and the position
// the next record will get.
func (s *Spool) Bounds() (head, tail uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.head, s.tail
}

// Stats returns the spool's figures.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{
		Records: s.tail - s.head, Bytes: s.bytes, Segments: len(s.segs),
		Appended: s.appended, Replayed: s.replayed, WriteErrors: s.writeErrs,
		Dropped: map[string]uint64{DropFull: s.dropFull, DropCorrupt: s.dropBad},
	}
	for _, g := range s.segs {
		if g.path == "" {
			st.MemorySegments++
		}
	}
	return st
}

// Durable reports whether the records held are all on disk (false with an
// empty Dir or while writes fall back to memory).
func (s *Spool) Durable() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.opts.Dir == "" {
		return false
	}
	for _, g := range s.segs {
		if g.path == "" && g.end() > s.head {
			return false
		}
	}
	return true
}

// Close closes the segment files. What is unacknowledged stays on disk for
// the next Open (a memory spool loses it). It returns how many records were
// held.
func (s *Spool) Close() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.segs {
		if g.f != nil {
			g.f.Close()
			g.f = nil
		}
		if g.path != "" && g.end() <= s.head {
			os.Remove(g.path) // nothing unacknowledged in it
		}
	}
	if s.ackF != nil {
		s.ackF.Close()
		s.ackF = nil
	}
	if s.lock != nil {
		s.lock.Close() // releases the flock
		s.lock = nil
	}
	return int(s.tail - s.head)
}
