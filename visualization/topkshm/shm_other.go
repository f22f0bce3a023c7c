//go:build !linux

package topkshm

import (
	"errors"
	"time"
)

var errNoShm = errors.New("top-k shared memory is only implemented on Linux (/dev/shm)")

// Create creates the segment name; it is only implemented on Linux.
func Create(name string, k, maxMetrics int, ttl time.Duration) (*Writer, error) {
	return nil, errNoShm
}

// Close unmaps and unlinks the segment; it is only implemented on Linux.
func (w *Writer) Close() error { return errNoShm }

// ReadShared returns a consistent copy of the top-k segment name; it is
// only implemented on Linux.
func ReadShared(name string) (Snapshot, error) { return Snapshot{}, errNoShm }
