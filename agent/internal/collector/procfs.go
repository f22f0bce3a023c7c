package collector

import (
	"bytes"
	"path/filepath"
	"strconv"
)

// Paths are where the kernel's pseudo filesystems are mounted: /proc and
// /sys on a host, or e.g. /host/proc when the agent runs in a container
// with the host's mounted there (node_exporter's --path.procfs).
type Paths struct {
	Proc string
	Sys  string
}

// HostPaths are the usual mount points.
var HostPaths = Paths{Proc: "/proc", Sys: "/sys"}

func (p Paths) proc(elem ...string) string {
	return filepath.Join(append([]string{p.Proc}, elem...)...)
}
func (p Paths) sys(elem ...string) string { return filepath.Join(append([]string{p.Sys}, elem...)...) }

// fileReader reads small pseudo files into a buffer it keeps, so a
// collector that reads the same files every round does not allocate for
// them. Not safe for concurrent use; each collector owns one.
type fileReader struct{ buf []byte }

// read returns the content of path; the slice is valid until the next read.
func (r *fileReader) read(path string) ([]byte, error) {
	if r.buf == nil {
		r.buf = make([]byte, 0, 8<<10)
	}
	b, err := readInto(path, r.buf[:0])
	if err != nil {
		return nil, err
	}
	r.buf = b
	return b, nil
}

// lines calls fn for each line of b (without the newline) until fn returns
// false.
func lines(b []byte, fn func(line []byte) bool) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		var line []byte
		if i < 0 {
			line, b = b, nil
		} else {
			line, b = b[:i], b[i+1:]
		}
		if !fn(line) {
			return
		}
	}
}

// field returns the i-th whitespace-separated field of line (0-based), or
// nil.
func field(line []byte, i int) []byte {
	for {
		for len(line) > 0 && isSpace(line[0]) {
			line = line[1:]
		}
		if len(line) == 0 {
			return nil
		}
		end := 0
		for end < len(line) && !isSpace(line[end]) {
			end++
		}
		if i == 0 {
			return line[:end]
		}
		i--
		line = line[end:]
	}
}

// fieldsInto splits line on whitespace into dst (reused) and returns it.
func fieldsInto(dst [][]byte, line []byte) [][]byte {
	dst = dst[:0]
	for {
		for len(line) > 0 && isSpace(line[0]) {
			line = line[1:]
		}
		if len(line) == 0 {
			return dst
		}
		end := 0
		for end < len(line) && !isSpace(line[end]) {
			end++
		}
		dst = append(dst, line[:end])
		line = line[end:]
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// atou parses a decimal unsigned integer; ok is false for anything else.
func atou(b []byte) (v uint64, ok bool) {
	if len(b) == 0 {
		return 0, false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}

// atof parses a decimal number such as /proc/uptime's "2679.45".
func atof(b []byte) (float64, bool) {
	v, err := strconv.ParseFloat(string(b), 64)
	return v, err == nil
}
