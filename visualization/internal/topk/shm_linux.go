//go:build linux

package topk

import (
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
)

// openShmWriter creates (or resets) the segment name sized for maxMetrics
// slots of k entries and maps it for writing. Like shm_open(3) it lives in
// /dev/shm, so both engines produce the same object.
func openShmWriter(name string, k, maxMetrics int, ttl time.Duration) (*shmWriter, error) {
	if err := checkShmName(name); err != nil {
		return nil, err
	}
	slot := slotSize(k)
	size := shmHeaderSize + maxMetrics*slot
	f, err := os.OpenFile(shmPath(name), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open shm %s: %w", name, err)
	}
	defer f.Close()
	if err := f.Truncate(int64(size)); err != nil {
		os.Remove(shmPath(name))
		return nil, fmt.Errorf("size shm %s to %d bytes: %w", name, size, err)
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		os.Remove(shmPath(name))
		return nil, fmt.Errorf("mmap shm %s (%d bytes): %w", name, size, err)
	}
	w := &shmWriter{name: name, mem: mem, k: k, slot: slot, scratch: make([]byte, max(slot, 16))}
	w.initHeader(maxMetrics, ttl)
	return w, nil
}

// close unmaps and unlinks the segment.
func (w *shmWriter) close() error {
	err := syscall.Munmap(w.mem)
	w.mem = nil
	if rerr := os.Remove(shmPath(w.name)); err == nil {
		err = rerr
	}
	return err
}

// readBudget bounds how long ReadShared retries against a busy writer.
const readBudget = time.Second

// ReadShared returns a consistent copy of the top-k segment name (e.g.
// "/monitor-topk") written by this package's engines in another process or
// this one. It needs no cgo: it maps /dev/shm/<name> read-only and copies
// it under the seqlock, retrying while a write is in progress (odd
// sequence) or happened during the copy (changed sequence); after a second
// of retries it gives up with ErrBusy.
func ReadShared(name string) (Snapshot, error) {
	if err := checkShmName(name); err != nil {
		return Snapshot{}, err
	}
	f, err := os.Open(shmPath(name))
	if err != nil {
		return Snapshot{}, fmt.Errorf("open top-k segment %s: %w", name, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Snapshot{}, fmt.Errorf("stat top-k segment %s: %w", name, err)
	}
	size := int(st.Size())
	if size < shmHeaderSize {
		return Snapshot{}, fmt.Errorf("top-k segment %s: %w: %d bytes", name, ErrNotTopK, size)
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return Snapshot{}, fmt.Errorf("mmap top-k segment %s: %w", name, err)
	}
	defer syscall.Munmap(mem)
	s, err := readMapped(mem)
	if err != nil {
		return Snapshot{}, fmt.Errorf("read top-k segment %s: %w", name, err)
	}
	return s, nil
}

// readMapped is the seqlock reader over a mapped segment.
func readMapped(mem []byte) (Snapshot, error) {
	if atomic.LoadUint64(word(mem, offMagic)) != shmMagic {
		return Snapshot{}, ErrNotTopK
	}
	hdr := make([]byte, shmHeaderSize)
	copyWords(hdr, mem[:shmHeaderSize])
	if v := native.Uint32(hdr[offVersion:]); v != shmVersion {
		return Snapshot{}, fmt.Errorf("%w: version %d", ErrNotTopK, v)
	}
	slot := int(native.Uint32(hdr[offSlotSize:]))
	maxMetrics := int(native.Uint32(hdr[offMaxMetrics:]))
	if slot <= 0 || shmHeaderSize+maxMetrics*slot > len(mem) {
		return Snapshot{}, fmt.Errorf("%w: %d slots of %d bytes do not fit %d bytes", ErrNotTopK, maxMetrics, slot, len(mem))
	}
	var buf []byte
	deadline := time.Now().Add(readBudget)
	for attempt := 0; ; attempt++ {
		if attempt > 0 && attempt%64 == 0 {
			if time.Now().After(deadline) {
				return Snapshot{}, ErrBusy
			}
			runtime.Gosched()
		}
		s1 := atomic.LoadUint64(word(mem, offSeq))
		if s1&1 != 0 {
			continue
		}
		n := shmHeaderSize + min(metricCount(atomic.LoadUint64(word(mem, offMaxMetrics))), maxMetrics)*slot
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		copyWords(buf, mem[:n])
		if atomic.LoadUint64(word(mem, offSeq)) != s1 {
			continue
		}
		native.PutUint64(buf[offSeq:], s1)
		// The copy holds the count current at s1, possibly more slots than
		// copied if it grew before the first load of seq: trim to the copy.
		if c := int(native.Uint32(buf[offMetricCount:])); shmHeaderSize+c*slot > n {
			continue
		}
		return decode(buf)
	}
}

// metricCount extracts metric_count (offset 28) from the header word at
// offset 24, which it shares with max_metrics.
func metricCount(w uint64) int {
	var b [8]byte
	native.PutUint64(b[:], w)
	return int(native.Uint32(b[4:]))
}
