//go:build !linux

package collector

import "errors"

// statfs is Linux-only here; the agent's collectors read /proc and /sys.
func statfs(string) (fsUsage, error) {
	return fsUsage{}, errors.New("filesystem usage is read on Linux only")
}
