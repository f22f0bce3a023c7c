package topkshm

import (
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"
)

// MaxK and MaxMetrics bound the segment's dimensions (as the C++ binding
// does).
const (
	MaxK       = 1 << 20
	MaxMetrics = 1 << 20
)

// Writer is the pure-Go writer of a segment (the Go engine's export). A
// publish is one seqlock write section: Begin, WriteSlot for each changed
// metric, End; readers see the section whole or not at all.
type Writer struct {
	name     string
	mem      []byte
	k        int
	slots    int // max metrics
	slot     int // bytes per slot
	scratch  []byte
	exported int // slots in use
	seq      uint64
	writing  bool
}

var errClosed = errors.New("top-k segment writer is closed")

func checkDims(k, maxMetrics int) error {
	if k < 1 || k > MaxK || maxMetrics < 1 || maxMetrics > MaxMetrics {
		return fmt.Errorf("top-k segment: k %d and max metrics %d must be in [1, 2^20]", k, maxMetrics)
	}
	return nil
}

// Begin opens a write section: readers retry until End.
func (w *Writer) Begin() error {
	switch {
	case w.mem == nil:
		return errClosed
	case w.writing:
		return errors.New("top-k segment: Begin inside a write section")
	}
	seq := word(w.mem, offSeq)
	w.seq = atomic.LoadUint64(seq)
	atomic.StoreUint64(seq, w.seq+1)
	w.writing = true
	return nil
}

// End closes the write section, recording updated as the writer's clock
// at this publish. Without an open section it does nothing.
func (w *Writer) End(updated time.Time) {
	if !w.writing {
		return
	}
	hdr := w.scratch[:8]
	// metric_count (offset 28) shares the word at 24 with max_metrics.
	native.PutUint32(hdr[0:], uint32(w.slots))
	native.PutUint32(hdr[4:], uint32(w.exported))
	atomic.StoreUint64(word(w.mem, offMaxMetrics), native.Uint64(hdr))
	atomic.StoreUint64(word(w.mem, offUpdated), uint64(updated.UnixNano()))
	atomic.StoreUint64(word(w.mem, offSeq), w.seq+2)
	w.writing = false
}

// WriteSlot writes slot id (the metric's dense id, 0, 1, … in order of
// first appearance) with the metric's name and top entries, best first,
// inside a write section. A name over NameWidth bytes cannot be exported:
// the engines leave such a metric's slot empty and do not call WriteSlot.
func (w *Writer) WriteSlot(id int, metric string, top []Entry) error {
	switch {
	case w.mem == nil:
		return errClosed
	case !w.writing:
		return fmt.Errorf("top-k segment: write slot %d outside a write section", id)
	case id < 0 || id >= w.slots:
		return fmt.Errorf("top-k segment: slot %d is outside [0, %d)", id, w.slots)
	case metric == "" || len(metric) > NameWidth:
		return fmt.Errorf("top-k segment: metric name of %d bytes does not fit [1, %d]", len(metric), NameWidth)
	case len(top) > w.k:
		return fmt.Errorf("top-k segment: %d entries for metric %q, k is %d", len(top), metric, w.k)
	}
	for _, e := range top {
		if e.Host == "" || len(e.Host) > HostWidth {
			return fmt.Errorf("top-k segment: host id of %d bytes for metric %q does not fit [1, %d]", len(e.Host), metric, HostWidth)
		}
	}
	b := w.scratch[:w.slot]
	clear(b)
	putName(b[:NameWidth], metric)
	native.PutUint32(b[NameWidth:], uint32(len(top)))
	for i, c := range top {
		e := b[SlotHead+i*EntrySize:]
		putName(e[:HostWidth], c.Host)
		native.PutUint64(e[HostWidth:], math.Float64bits(c.Value))
		native.PutUint64(e[HostWidth+8:], uint64(c.TS))
	}
	off := HeaderSize + id*w.slot
	storeWords(w.mem[off:off+w.slot], b)
	w.exported = max(w.exported, id+1)
	return nil
}

// putName writes s NUL-padded to a width-byte field.
func putName(dst []byte, s string) {
	n := copy(dst, s)
	clear(dst[n:])
}

// initHeader fills a zeroed segment's header, magic last.
func (w *Writer) initHeader(ttl time.Duration) {
	h := make([]byte, HeaderSize)
	native.PutUint32(h[offVersion:], Version)
	native.PutUint32(h[offK:], uint32(w.k))
	native.PutUint32(h[offMaxMetrics:], uint32(w.slots))
	native.PutUint32(h[offNameWidth:], NameWidth)
	native.PutUint32(h[offHostWidth:], HostWidth)
	native.PutUint32(h[offSlotSize:], uint32(w.slot))
	native.PutUint64(h[offTTL:], uint64(ttl))
	storeWords(w.mem[16:], h[16:])
	atomic.StoreUint64(word(w.mem, offMagic), Magic)
}
