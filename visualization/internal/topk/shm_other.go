//go:build !linux

package topk

import (
	"errors"
	"time"
)

var errNoShm = errors.New("top-k shared memory is only implemented on Linux (/dev/shm)")

func openShmWriter(name string, k, maxMetrics int, ttl time.Duration) (*shmWriter, error) {
	return nil, errNoShm
}

func (w *shmWriter) close() error { return errNoShm }

// ReadShared returns a consistent copy of the top-k segment name; it is
// only implemented on Linux.
func ReadShared(name string) (Snapshot, error) { return Snapshot{}, errNoShm }
