//go:build linux

package topkshm

import (
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
)

// Create creates (or resets) the segment name ("/name") sized for
// maxMetrics slots of k entries, with mode 0600, writes its header (k,
// ttl) and maps it for writing. Like shm_open(3) it lives in /dev/shm, so
// the Go and C++ writers produce the same object. Close unlinks it.
func Create(name string, k, maxMetrics int, ttl time.Duration) (*Writer, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	if err := checkDims(k, maxMetrics); err != nil {
		return nil, err
	}
	slot := SlotSize(k)
	size := HeaderSize + maxMetrics*slot
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
	w := &Writer{name: name, mem: mem, k: k, slots: maxMetrics, slot: slot, scratch: make([]byte, slot)}
	w.initHeader(ttl)
	return w, nil
}

// Close unmaps and unlinks the segment; later calls do nothing.
func (w *Writer) Close() error {
	if w.mem == nil {
		return nil
	}
	err := syscall.Munmap(w.mem)
	w.mem = nil
	if rerr := os.Remove(shmPath(w.name)); err == nil && rerr != nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("close shm %s: %w", w.name, err)
	}
	return nil
}

// readBudget bounds how long ReadShared retries against a busy writer.
const readBudget = time.Second

// ReadShared returns a consistent copy of the top-k segment name (e.g.
// DefaultName) written by a Writer or the C++ engine in another process or
// this one. It maps /dev/shm/<name> read-only and copies it under the
// seqlock, retrying while a write is in progress (odd sequence) or happened
// during the copy (changed sequence); after a second of retries it gives up
// with ErrBusy. A missing segment is an error matching fs.ErrNotExist.
func ReadShared(name string) (Snapshot, error) {
	if err := CheckName(name); err != nil {
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
	if size < HeaderSize {
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
	if atomic.LoadUint64(word(mem, offMagic)) != Magic {
		return Snapshot{}, ErrNotTopK
	}
	hdr := make([]byte, HeaderSize)
	copyWords(hdr, mem[:HeaderSize])
	if v := native.Uint32(hdr[offVersion:]); v != Version {
		return Snapshot{}, fmt.Errorf("%w: version %d", ErrNotTopK, v)
	}
	slot := int(native.Uint32(hdr[offSlotSize:]))
	maxMetrics := int(native.Uint32(hdr[offMaxMetrics:]))
	if slot <= 0 || HeaderSize+maxMetrics*slot > len(mem) {
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
		n := HeaderSize + min(metricCount(atomic.LoadUint64(word(mem, offMaxMetrics))), maxMetrics)*slot
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
		if c := int(native.Uint32(buf[offMetricCount:])); HeaderSize+c*slot > n {
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
