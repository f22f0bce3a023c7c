package collector

import "syscall"

// statfs reads a filesystem's size and inodes as df does: sizes in
// fragment-size units (f_frsize), "avail" what unprivileged users may use.
func statfs(path string) (fsUsage, error) {
	var s syscall.Statfs_t
	if err := syscall.Statfs(path, &s); err != nil {
		return fsUsage{}, err
	}
	bs := uint64(s.Frsize)
	if bs == 0 {
		bs = uint64(s.Bsize)
	}
	return fsUsage{
		total: s.Blocks * bs, free: s.Bfree * bs, avail: s.Bavail * bs,
		inodes: s.Files, inodesFree: s.Ffree, hasInodes: s.Files > 0,
	}, nil
}
