package topk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"
)

// The shared-memory layout, version 1; visualization/internal/cpp/topk.h
// defines the same constants and docs/analysis.md draws it. Integers and
// floats are in host byte order (the segment never leaves the machine);
// every field is 8-byte aligned so readers and writers can move it with
// 64-bit atomic loads and stores.
const (
	shmMagic      = 0x314B504F544E4F4D // "MONTOPK1" as little-endian bytes
	shmVersion    = 1
	shmHeaderSize = 64
	shmNameWidth  = 128 // metric name, NUL-padded (a 128-byte name has no NUL)
	shmHostWidth  = 128 // host id, NUL-padded
	shmSlotHead   = 136 // name + uint32 entry count + uint32 reserved
	shmEntrySize  = 144 // host + float64 value + int64 ts

	// header field offsets
	offMagic       = 0
	offSeq         = 8
	offVersion     = 16
	offK           = 20
	offMaxMetrics  = 24
	offMetricCount = 28
	offNameWidth   = 32
	offHostWidth   = 36
	offSlotSize    = 40
	offUpdated     = 48
	offTTL         = 56
)

// Limits on names, as the C++ engine has them.
const (
	maxHostLen   = 128
	maxMetricLen = 1024
)

var native = binary.NativeEndian

// ErrBusy is returned by ReadShared when the writer kept the segment busy
// for the whole retry budget.
var ErrBusy = errors.New("top-k segment kept changing during the read")

// ErrNotTopK is returned by ReadShared for a segment that is not (or not
// yet) a version-1 top-k segment.
var ErrNotTopK = errors.New("not a version 1 top-k segment")

// Snapshot is one consistent copy of a top-k segment.
type Snapshot struct {
	Seq     uint64        `json:"seq"`     // seqlock sequence of the copy (even)
	K       int           `json:"k"`       // entries per metric in the segment
	TTL     time.Duration `json:"ttl"`     // entry lifetime the writer applies
	Updated time.Time     `json:"updated"` // writer's clock at its last publish
	Metrics []MetricTop   `json:"metrics"` // in slot order (first appearance)
}

// MetricTop is one metric's top K, best first.
type MetricTop struct {
	Metric  string  `json:"metric"`
	Entries []Entry `json:"entries"`
}

// checkShmName accepts POSIX shm names of the portable form "/name".
func checkShmName(name string) error {
	if len(name) < 2 || name[0] != '/' || strings.ContainsRune(name[1:], '/') || len(name) > 255 || strings.ContainsRune(name, 0) {
		return fmt.Errorf("shm name %q: want \"/name\" with no other slash, at most 255 bytes", name)
	}
	return nil
}

// shmPath is where Linux keeps the POSIX shm object name.
func shmPath(name string) string { return "/dev/shm/" + name[1:] }

func slotSize(k int) int { return shmSlotHead + k*shmEntrySize }

// word returns the 8-byte word of mem at off (8-aligned) for atomic use.
func word(mem []byte, off int) *uint64 { return (*uint64)(unsafe.Pointer(&mem[off])) }

// copyWords copies src to dst with 64-bit atomic loads (src in shared
// memory): Go's atomics are ordered among themselves, which is what the
// seqlock reader needs between its data loads and its second load of seq.
func copyWords(dst []byte, src []byte) {
	for off := 0; off+8 <= len(src); off += 8 {
		native.PutUint64(dst[off:], atomic.LoadUint64(word(src, off)))
	}
}

// storeWords copies src to dst (shared memory) with 64-bit atomic stores,
// ordered after the odd sequence store for the same reason.
func storeWords(dst []byte, src []byte) {
	for off := 0; off+8 <= len(src); off += 8 {
		atomic.StoreUint64(word(dst, off), native.Uint64(src[off:]))
	}
}

// shmWriter is the pure-Go writer of the segment (the Go twin's export).
type shmWriter struct {
	name     string
	mem      []byte
	k        int
	slot     int
	scratch  []byte
	exported int
}

// putName writes s NUL-padded to a width-byte field.
func putName(dst []byte, s string) {
	n := copy(dst, s)
	clear(dst[n:])
}

// beginWrite and endWrite bracket a seqlock write section.
func (w *shmWriter) beginWrite() uint64 {
	seq := word(w.mem, offSeq)
	s := atomic.LoadUint64(seq)
	atomic.StoreUint64(seq, s+1)
	return s
}

func (w *shmWriter) endWrite(s uint64, now int64) {
	hdr := w.scratch[:16]
	// metric_count (offset 28) shares the word at 24 with max_metrics.
	native.PutUint32(hdr[0:], uint32((len(w.mem)-shmHeaderSize)/w.slot))
	native.PutUint32(hdr[4:], uint32(w.exported))
	atomic.StoreUint64(word(w.mem, offMaxMetrics), native.Uint64(hdr))
	atomic.StoreUint64(word(w.mem, offUpdated), uint64(now))
	atomic.StoreUint64(word(w.mem, offSeq), s+2)
}

// writeSlot writes metric id's name and top entries; inside a write section.
func (w *shmWriter) writeSlot(id int, metric string, top []cached) {
	b := w.scratch[:w.slot]
	clear(b)
	putName(b[:shmNameWidth], metric)
	native.PutUint32(b[shmNameWidth:], uint32(len(top)))
	for i, c := range top {
		e := b[shmSlotHead+i*shmEntrySize:]
		putName(e[:shmHostWidth], c.host)
		native.PutUint64(e[shmHostWidth:], math.Float64bits(c.value))
		native.PutUint64(e[shmHostWidth+8:], uint64(c.ts))
	}
	off := shmHeaderSize + id*w.slot
	storeWords(w.mem[off:off+w.slot], b)
	w.exported = max(w.exported, id+1)
}

// initHeader fills a zeroed segment's header, magic last.
func (w *shmWriter) initHeader(maxMetrics int, ttl time.Duration) {
	h := make([]byte, shmHeaderSize)
	native.PutUint32(h[offVersion:], shmVersion)
	native.PutUint32(h[offK:], uint32(w.k))
	native.PutUint32(h[offMaxMetrics:], uint32(maxMetrics))
	native.PutUint32(h[offNameWidth:], shmNameWidth)
	native.PutUint32(h[offHostWidth:], shmHostWidth)
	native.PutUint32(h[offSlotSize:], uint32(w.slot))
	native.PutUint64(h[offTTL:], uint64(ttl))
	storeWords(w.mem[16:], h[16:])
	atomic.StoreUint64(word(w.mem, offMagic), shmMagic)
}

// decode parses a consistent copy of the segment (header and the slots in
// use) into a Snapshot.
func decode(b []byte) (Snapshot, error) {
	k := int(native.Uint32(b[offK:]))
	slot := int(native.Uint32(b[offSlotSize:]))
	count := int(native.Uint32(b[offMetricCount:]))
	if native.Uint32(b[offNameWidth:]) != shmNameWidth || native.Uint32(b[offHostWidth:]) != shmHostWidth || slot != slotSize(k) {
		return Snapshot{}, fmt.Errorf("%w: widths or slot size do not match version 1", ErrNotTopK)
	}
	s := Snapshot{
		Seq:     native.Uint64(b[offSeq:]),
		K:       k,
		TTL:     time.Duration(native.Uint64(b[offTTL:])),
		Updated: time.Unix(0, int64(native.Uint64(b[offUpdated:]))),
	}
	for i := range count {
		sb := b[shmHeaderSize+i*slot:][:slot]
		name := cName(sb[:shmNameWidth])
		if name == "" {
			continue // a metric whose name is too long to export
		}
		n := int(native.Uint32(sb[shmNameWidth:]))
		if n > k {
			return Snapshot{}, fmt.Errorf("%w: slot %d holds %d entries, k is %d", ErrNotTopK, i, n, k)
		}
		mt := MetricTop{Metric: name, Entries: make([]Entry, n)}
		for j := range n {
			e := sb[shmSlotHead+j*shmEntrySize:]
			mt.Entries[j] = Entry{
				Host:  cName(e[:shmHostWidth]),
				Value: math.Float64frombits(native.Uint64(e[shmHostWidth:])),
				TS:    int64(native.Uint64(e[shmHostWidth+8:])),
			}
		}
		s.Metrics = append(s.Metrics, mt)
	}
	return s, nil
}

func cName(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
