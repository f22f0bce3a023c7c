//go:build !cgo

package topk

import "time"

// Implementation names the engine New uses in this build ("c++17" or "go").
const Implementation = "go"

func newCore(k int, ttl time.Duration, maxMetrics int, shmName string) (core, error) {
	return newGoCore(k, ttl, maxMetrics, shmName)
}
