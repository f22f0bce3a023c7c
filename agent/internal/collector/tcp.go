package collector

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	monitorpb "github.com/monitorhq/monitor/proto"
)

// tcpStates are the kernel's TCP states by their number in /proc/net/tcp's
// "st" column (include/net/tcp_states.h); NEW_SYN_RECV (12), a request
// socket, counts as syn_recv.
var tcpStates = [...]string{
	1: "established", 2: "syn_sent", 3: "syn_recv", 4: "fin_wait1", 5: "fin_wait2",
	6: "time_wait", 7: "close", 8: "close_wait", 9: "last_ack", 10: "listen", 11: "closing",
}

// TCPStates counts TCP sockets (IPv4 and IPv6) by state, streaming
// /proc/net/tcp and /proc/net/tcp6 through a fixed buffer: memory does not
// grow with the number of connections. Its cost does not depend much on the
// connections either: the kernel walks its whole established-socket hash
// table for each file (262144 buckets on a 24 GiB host: about 4 ms of
// kernel CPU per file, per round). That is why it is off by default, as
// node_exporter's tcpstat collector is; the tcp collector gives the main
// figures at almost no cost.
type TCPStates struct {
	paths Paths
	br    *bufio.Reader
}

// NewTCPStates returns the tcp_states collector.
func NewTCPStates(paths Paths) *TCPStates { return &TCPStates{paths: paths} }

// Name implements Collector.
func (*TCPStates) Name() string { return "tcp_states" }

// Collect implements Collector. Every state is reported, 0 included, so the
// series exist from the first round.
func (c *TCPStates) Collect(ctx context.Context) ([]*monitorpb.Metric, error) {
	var counts [len(tcpStates)]uint64
	for _, name := range []string{"tcp", "tcp6"} {
		err := c.count(c.paths.proc("net", name), &counts)
		if errors.Is(err, fs.ErrNotExist) && name == "tcp6" {
			continue // IPv6 disabled
		}
		if err != nil {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	var out []*monitorpb.Metric
	for st, name := range tcpStates {
		if name != "" {
			out = add(out, "net.tcp_connections", "", monitorpb.Priority_PRIORITY_NORMAL, float64(counts[st]), "state", name)
		}
	}
	return out, nil
}

func (c *TCPStates) count(path string, counts *[len(tcpStates)]uint64) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read tcp sockets: %w", err)
	}
	defer f.Close()
	if c.br == nil {
		c.br = bufio.NewReaderSize(f, 64<<10)
	} else {
		c.br.Reset(f)
	}
	first := true
	for {
		line, err := c.br.ReadSlice('\n')
		if len(line) > 0 && !first {
			// "  sl  local_address rem_address   st …": st is the 4th field, hex.
			if st := field(line, 3); len(st) == 2 {
				if v, ok := hexByte(st); ok {
					if v == 12 {
						v = 3
					}
					if int(v) < len(counts) {
						counts[v]++
					}
				}
			}
		}
		first = false
		if errors.Is(err, io.EOF) {
			return nil
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer cannot be a socket line; skip
			// the rest of it.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = c.br.ReadSlice('\n')
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
	}
}

func hexByte(b []byte) (byte, bool) {
	var v byte
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | (c - '0')
		case c >= 'A' && c <= 'F':
			v = v<<4 | (c - 'A' + 10)
		case c >= 'a' && c <= 'f':
			v = v<<4 | (c - 'a' + 10)
		default:
			return 0, false
		}
	}
	return v, true
}
