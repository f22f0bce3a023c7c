//go:build cgo

package cpp

/*
#cgo CXXFLAGS: -O2 -std=c++17 -Wall -Wextra
#cgo LDFLAGS: -lrt
#include <stdlib.h>
#include "topk.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"time"
	"unsafe"
)

// Results of Update below zero: the update was refused and nothing changed.
const (
	ErrInvalid     = int64(C.TOPK_ERR_INVALID)      // NaN/Inf value, empty or oversize name
	ErrStale       = int64(C.TOPK_ERR_STALE)        // older than the stored sample, or already expired
	ErrMetricsFull = int64(C.TOPK_ERR_METRICS_FULL) // a new metric beyond the configured maximum
)

// Limits on input names, as topk.h defines them.
const (
	MaxHostLen   = int(C.TOPK_MAX_HOST_LEN)
	MaxMetricLen = int(C.TOPK_MAX_METRIC_LEN)
)

// The shared-memory layout as topk.h defines it; visualization/topkshm
// holds the Go side, and topk's tests check that the two agree.
const (
	ShmMagic      = uint64(C.TOPK_SHM_MAGIC)
	ShmVersion    = int(C.TOPK_SHM_VERSION)
	ShmHeaderSize = int(C.TOPK_SHM_HEADER_SIZE)
	ShmNameWidth  = int(C.TOPK_SHM_NAME_WIDTH)
	ShmHostWidth  = int(C.TOPK_SHM_HOST_WIDTH)
	ShmSlotHead   = int(C.TOPK_SHM_SLOT_HEAD)
	ShmEntrySize  = int(C.TOPK_SHM_ENTRY_SIZE)
)

// Engine is one C++ engine. Its memory is C memory, freed by Close (or,
// as a safety net, when the Engine is garbage collected).
type Engine struct {
	t       *C.mon_topk
	cleanup runtime.Cleanup
	out     []C.mon_topk_entry
	hosts   []byte
}

// New returns an engine exporting k entries per metric, expiring entries
// ttl after their timestamp, holding at most maxMetrics metrics, and
// exporting to the POSIX shared-memory segment shmName ("" for none).
func New(k int, ttl time.Duration, maxMetrics int, shmName string) (*Engine, error) {
	if k <= 0 || k > 1<<20 || maxMetrics <= 0 || maxMetrics > 1<<20 {
		return nil, fmt.Errorf("new C++ top-k engine: k %d and max metrics %d must be in [1, 2^20]", k, maxMetrics)
	}
	var cname *C.char
	if shmName != "" {
		cname = C.CString(shmName)
		defer C.free(unsafe.Pointer(cname))
	}
	var errbuf [256]C.char
	t := C.mon_topk_new(C.uint32_t(k), C.int64_t(ttl), C.uint32_t(maxMetrics), cname, &errbuf[0], C.size_t(len(errbuf)))
	if t == nil {
		return nil, errors.New("new C++ top-k engine: " + C.GoString(&errbuf[0]))
	}
	e := &Engine{t: t}
	e.cleanup = runtime.AddCleanup(e, func(t *C.mon_topk) { C.mon_topk_free(t) }, t)
	return e, nil
}

// cstr returns s's bytes for a call: Go memory without Go pointers, which
// cgo lets C read for the duration of the call (C copies what it keeps).
func cstr(s string) *C.char { return (*C.char)(unsafe.Pointer(unsafe.StringData(s))) }

// Update sets host's latest value of metric; ts is in Unix seconds and now
// in Unix nanoseconds. It returns a negative Err* or (metricID<<1)|changed.
func (e *Engine) Update(metric, host string, value float64, ts, now int64) int64 {
	return int64(C.mon_topk_update(e.t, cstr(metric), C.size_t(len(metric)), cstr(host), C.size_t(len(host)),
		C.double(value), C.int64_t(ts), C.int64_t(now)))
}

// Expire drops the entries expired at now and returns the ids of the
// metrics whose top K changed, in changed[:0]; cap(changed) must be at
// least the number of metrics, or the ids beyond it are not reported.
func (e *Engine) Expire(now int64, changed []uint32) []uint32 {
	changed = changed[:cap(changed)]
	var p *C.uint32_t
	if len(changed) > 0 {
		p = (*C.uint32_t)(unsafe.Pointer(&changed[0]))
	}
	n := int(C.mon_topk_expire(e.t, C.int64_t(now), p, C.size_t(len(changed))))
	return changed[:min(n, len(changed))]
}

// Publish writes the changed metrics' top K to the shared segment.
func (e *Engine) Publish(now int64) { C.mon_topk_publish(e.t, C.int64_t(now)) }

// Top calls fn for the best min(k, hosts) entries of metric id, best first.
// host is only valid during the call.
func (e *Engine) Top(id uint32, k int, fn func(host []byte, value float64, ts int64)) {
	if k <= 0 {
		return
	}
	if cap(e.out) < k {
		e.out = make([]C.mon_topk_entry, k)
		e.hosts = make([]byte, k*MaxHostLen)
	}
	n := int(C.mon_topk_top(e.t, C.uint32_t(id), C.uint32_t(k), &e.out[0], (*C.char)(unsafe.Pointer(&e.hosts[0])), C.size_t(len(e.hosts))))
	for i := range n {
		o := e.out[i]
		fn(e.hosts[o.host_off:o.host_off+o.host_len], float64(o.value), int64(o.ts))
	}
}

// Len returns how many hosts metric id holds.
func (e *Engine) Len(id uint32) int { return int(C.mon_topk_len(e.t, C.uint32_t(id))) }

// Close frees the engine and unlinks its segment; the Engine must not be
// used afterwards.
func (e *Engine) Close() {
	if e.t == nil {
		return
	}
	e.cleanup.Stop()
	C.mon_topk_free(e.t)
	e.t = nil
}
