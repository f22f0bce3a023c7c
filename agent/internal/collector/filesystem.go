package collector

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	monitorpb "github.com/monitorhq/monitor/proto"
)

// pseudoFS are filesystem types with no disk behind them (or whose usage
// says nothing about one), as node_exporter's default exclusions plus
// tmpfs/ramfs.
var pseudoFS = map[string]bool{
	"autofs": true, "binfmt_misc": true, "bpf": true, "cgroup": true, "cgroup2": true,
	"configfs": true, "debugfs": true, "devpts": true, "devtmpfs": true, "efivarfs": true,
	"erofs": true, "fuse.lxcfs": true, "fuse.gvfsd-fuse": true, "fuse.portal": true, "fusectl": true,
	"hugetlbfs": true, "iso9660": true, "mqueue": true, "nsfs": true, "overlay": true,
	"proc": true, "procfs": true, "pstore": true, "ramfs": true, "rpc_pipefs": true,
	"securityfs": true, "selinuxfs": true, "squashfs": true, "sysfs": true, "tmpfs": true,
	"tracefs": true, "none": true,
}

// skipMount matches mount points that are views of the system, not storage.
var skipMount = regexp.MustCompile(`^/(dev|proc|sys|run/credentials/.+|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)`)

// mount is one line of mountinfo.
type mount struct {
	Device, Point, FSType string
}

// fsUsage is what statfs reports, in bytes and inodes.
type fsUsage struct {
	total, free, avail uint64
	inodes, inodesFree uint64
	hasInodes          bool
}

// Filesystem reports space and inode usage per mounted filesystem. Each
// mount's statfs runs in its own goroutine: a hung one (a stale NFS
// server) costs that mount's metrics only, and is not called again until
// it returns.
type Filesystem struct {
	paths  Paths
	fr     fileReader
	statfs func(path string) (fsUsage, error)

	mu   sync.Mutex
	busy map[string]*atomic.Bool // mount point → a statfs is running
}

// NewFilesystem returns the filesystem collector.
func NewFilesystem(paths Paths) *Filesystem {
	return &Filesystem{paths: paths, statfs: statfs, busy: map[string]*atomic.Bool{}}
}

// Name implements Collector.
func (*Filesystem) Name() string { return "filesystem" }

type fsResult struct {
	m   mount
	u   fsUsage
	err error
}

// Collect implements Collector. A mount whose usage cannot be read (no
// permission, vanished, hung) is left out and named in the error; the other
// mounts are still returned.
func (c *Filesystem) Collect(ctx context.Context) ([]*monitorpb.Metric, error) {
	b, err := c.fr.read(c.paths.proc("self", "mountinfo"))
	if err != nil {
		return nil, fmt.Errorf("list mounts: %w", err)
	}
	mounts := usageMounts(parseMountinfo(b))
	results := make(chan fsResult, len(mounts)) // buffered: a late result never blocks
	var errs []error
	pending := 0
	for _, m := range mounts {
		busy := c.busyFlag(m.Point)
		if !busy.CompareAndSwap(false, true) {
			errs = append(errs, fmt.Errorf("usage of %s: the previous statfs has not returned", m.Point))
			continue
		}
		pending++
		go func() {
			u, err := c.statfs(m.Point)
			busy.Store(false)
			results <- fsResult{m: m, u: u, err: err}
		}()
	}
	got := make([]fsResult, 0, len(mounts))
wait:
	for pending > 0 {
		select {
		case r := <-results:
			pending--
			if r.err != nil {
				errs = append(errs, fmt.Errorf("usage of %s: %w", r.m.Point, r.err))
				continue
			}
			got = append(got, r)
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("usage of %d mounts: %w", pending, ctx.Err()))
			break wait
		}
	}
	sort.Slice(got, func(i, j int) bool { return got[i].m.Point < got[j].m.Point })

	var out []*monitorpb.Metric
	h, n, low := monitorpb.Priority_PRIORITY_HIGH, monitorpb.Priority_PRIORITY_NORMAL, monitorpb.Priority_PRIORITY_LOW
	for _, r := range got {
		u, mp := r.u, r.m.Point
		if u.total == 0 {
			continue
		}
		used := u.total - min(u.free, u.total)
		out = add(out, "disk.total_bytes", "bytes", n, float64(u.total), "mount", mp)
		out = add(out, "disk.used_bytes", "bytes", n, float64(used), "mount", mp)
		out = add(out, "disk.free_bytes", "bytes", n, float64(u.avail), "mount", mp)
		out = add(out, "disk.used_percent", "%", h, round(percent(float64(used), float64(used+u.avail)), gaugePercentDecimals), "mount", mp)
		if u.hasInodes && u.inodes > 0 {
			iused := u.inodes - min(u.inodesFree, u.inodes)
			out = add(out, "disk.inodes_total", "", low, float64(u.inodes), "mount", mp)
			out = add(out, "disk.inodes_used", "", low, float64(iused), "mount", mp)
			out = add(out, "disk.inodes_free", "", low, float64(u.inodesFree), "mount", mp)
			out = add(out, "disk.inodes_used_percent", "%", n, round(percent(float64(iused), float64(u.inodes)), gaugePercentDecimals), "mount", mp)
		}
	}
	c.forgetGone(mounts)
	return out, errors.Join(errs...)
}

func (c *Filesystem) busyFlag(point string) *atomic.Bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.busy[point]
	if f == nil {
		f = &atomic.Bool{}
		c.busy[point] = f
	}
	return f
}

// forgetGone drops the flags of mounts that are gone and idle.
func (c *Filesystem) forgetGone(mounts []mount) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.busy) <= len(mounts) {
		return
	}
	keep := make(map[string]bool, len(mounts))
	for _, m := range mounts {
		keep[m.Point] = true
	}
	for p, f := range c.busy {
		if !keep[p] && !f.Load() {
			delete(c.busy, p)
		}
	}
}

// parseMountinfo reads /proc/self/mountinfo: "id parent major:minor root
// mountpoint options [optional…] - fstype source superoptions". Mount
// points have spaces and such escaped as \040 (octal).
func parseMountinfo(b []byte) []mount {
	var out []mount
	lines(b, func(line []byte) bool {
		sep := bytes.Index(line, []byte(" - "))
		if sep < 0 {
			return true
		}
		point := field(line[:sep], 4)
		fstype := field(line[sep+3:], 0)
		source := field(line[sep+3:], 1)
		if point == nil || fstype == nil {
			return true
		}
		out = append(out, mount{Device: unescapeMount(string(source)), Point: unescapeMount(string(point)), FSType: string(fstype)})
		return true
	})
	return out
}

// unescapeMount undoes the kernel's octal escapes (\040 space, \011 tab,
// \012 newline, \134 backslash).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// usageMounts keeps the mounts worth a usage reading: real filesystems,
// outside system views, one mount per block device (bind mounts of the
// same filesystem report the same usage; the shortest mount point wins),
// in mount point order.
func usageMounts(parts []mount) []mount {
	byKey := map[string]mount{}
	for _, p := range parts {
		if pseudoFS[p.FSType] || strings.HasPrefix(p.FSType, "cgroup") || p.Device == "none" ||
			p.Point == "" || skipMount.MatchString(p.Point) {
			continue
		}
		key := p.Point
		if strings.HasPrefix(p.Device, "/dev/") {
			key = p.Device
		}
		if old, ok := byKey[key]; !ok || len(p.Point) < len(old.Point) {
			byKey[key] = p
		}
	}
	out := make([]mount, 0, len(byKey))
	for _, p := range byKey {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Point < out[j].Point })
	return out
}
