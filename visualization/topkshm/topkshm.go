// Package topkshm is the Top-K shared-memory segment: its layout, the
// pure-Go seqlock writer and the reader. The visualization server's Top-K
// engines (visualization/internal/topk: a C++17 engine under cgo and a
// pure-Go twin) export every metric's current top K to a POSIX
// shared-memory object ("/monitor-topk" by default); other processes on
// the machine — `monitorctl top` — read it with ReadShared. The package
// needs no cgo and imports nothing of the server, so a reader links none of
// it. visualization/internal/cpp/topk.h defines the same layout for the C++
// writer, and docs/analysis.md draws it.
//
// Concurrency: ReadShared is safe for concurrent use, in any number of
// processes, while a writer writes: it retries under the seqlock until it
// has a consistent copy. A Writer is not safe for concurrent use: one
// writer owns a segment and serialises its calls.
package topkshm

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

// DefaultName is the segment name the visualization server exports to
// unless configured otherwise.
const DefaultName = "/monitor-topk"

// The layout, version 1; topk.h's TOPK_SHM_* constants have the same
// values. Integers and floats are in host byte order (the segment never
// leaves the machine); every field is 8-byte aligned so readers and writers
// can move it with 64-bit atomic loads and stores.
const (
	Magic      = 0x314B504F544E4F4D // "MONTOPK1" as little-endian bytes
	Version    = 1
	HeaderSize = 64  // bytes before the first slot
	NameWidth  = 128 // metric name, NUL-padded (a 128-byte name has no NUL)
	HostWidth  = 128 // host id, NUL-padded
	SlotHead   = 136 // bytes of a slot before its entries: name + uint32 entry count + uint32 reserved
	EntrySize  = 144 // bytes of an entry: host + float64 value + int64 ts
)

// Header field offsets.
const (
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
	TTL     time.Duration `json:"ttl_ns"`  // entry lifetime the writer applies
	Updated time.Time     `json:"updated"` // writer's clock at its last publish
	Metrics []MetricTop   `json:"metrics"` // in slot order (first appearance)
}

// MetricTop is one metric's top K, best first.
type MetricTop struct {
	Metric  string  `json:"metric"`
	Entries []Entry `json:"entries"`
}

// Entry is one ranked host of a metric.
type Entry struct {
	Host  string  `json:"host"`
	Value float64 `json:"value"`
	TS    int64   `json:"ts"` // sample time, Unix seconds
}

// CheckName accepts POSIX shm names of the portable form "/name".
func CheckName(name string) error {
	if len(name) < 2 || name[0] != '/' || strings.ContainsRune(name[1:], '/') || len(name) > 255 || strings.ContainsRune(name, 0) {
		return fmt.Errorf("shm name %q: want \"/name\" with no other slash, at most 255 bytes", name)
	}
	return nil
}

// shmPath is where Linux keeps the POSIX shm object name.
func shmPath(name string) string { return "/dev/shm/" + name[1:] }

// SlotSize returns the bytes of one metric's slot in a segment of k
// entries per metric.
func SlotSize(k int) int { return SlotHead + k*EntrySize }

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

// decode parses a consistent copy of the segment (header and the slots in
// use) into a Snapshot.
func decode(b []byte) (Snapshot, error) {
	k := int(native.Uint32(b[offK:]))
	slot := int(native.Uint32(b[offSlotSize:]))
	count := int(native.Uint32(b[offMetricCount:]))
	if native.Uint32(b[offNameWidth:]) != NameWidth || native.Uint32(b[offHostWidth:]) != HostWidth || slot != SlotSize(k) {
		return Snapshot{}, fmt.Errorf("%w: widths or slot size do not match version 1", ErrNotTopK)
	}
	s := Snapshot{
		Seq:     native.Uint64(b[offSeq:]),
		K:       k,
		TTL:     time.Duration(native.Uint64(b[offTTL:])),
		Updated: time.Unix(0, int64(native.Uint64(b[offUpdated:]))),
	}
	for i := range count {
		sb := b[HeaderSize+i*slot:][:slot]
		name := cName(sb[:NameWidth])
		if name == "" {
			continue // a metric whose name is too long to export
		}
		n := int(native.Uint32(sb[NameWidth:]))
		if n > k {
			return Snapshot{}, fmt.Errorf("%w: slot %d holds %d entries, k is %d", ErrNotTopK, i, n, k)
		}
		mt := MetricTop{Metric: name, Entries: make([]Entry, n)}
		for j := range n {
			e := sb[SlotHead+j*EntrySize:]
			mt.Entries[j] = Entry{
				Host:  cName(e[:HostWidth]),
				Value: math.Float64frombits(native.Uint64(e[HostWidth:])),
				TS:    int64(native.Uint64(e[HostWidth+8:])),
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
