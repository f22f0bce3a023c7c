// Package redistest starts throw-away redis-server processes for tests: each
// on a free loopback port, with no persistence, stopped when the test ends.
// Tests never touch a Redis they did not start.
package redistest

import (
	"bufio"
	"context"
	"fmt"
	"net"

	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Server is a running redis-server owned by one test.
type Server struct {
	Addr string
	bin  string
	args []string
	cmd  *exec.Cmd
}

// Start launches redis-server on a free port and stops it in t.Cleanup. The
// test fails if redis-server is not installed (make test installs it).
func Start(t testing.TB, extraArgs ...string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found (make test installs it with apt-get): %v", err)
	}
	dir := t.TempDir()
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("find free port: %v", err)
		}
		s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), bin: bin}
		s.args = append([]string{
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir,
			"--logfile", filepath.Join(dir, fmt.Sprintf("redis-%d.log", port)),
		}, extraArgs...)
		s.cmd = exec.Command(bin, s.args...)
		if err := s.cmd.Start(); err != nil {
			t.Fatalf("start redis-server: %v", err)
		}
		if lastErr = waitReady(s.Addr, 10*time.Second); lastErr == nil {
			t.Cleanup(s.Stop)
			return s
		}
		s.Stop()
	}
	t.Fatalf("redis-server did not become ready: %v", lastErr)
	return nil
}

// Stop kills the server and waits for it to exit. It is safe to call twice.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Restart starts the server again on the same port after Stop (the data set
// is empty: persistence is off).
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	s.cmd = exec.Command(s.bin, s.args...)
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("restart redis-server: %v", err)
	}
	if err := waitReady(s.Addr, 10*time.Second); err != nil {
		t.Fatalf("restarted redis-server not ready: %v", err)
	}
}

// Do sends one inline command and returns the raw first reply line; enough
// for readiness checks without a client library.
func Do(ctx context.Context, addr, cmd string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := fmt.Fprintf(c, "%s\r\n", cmd); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return line, err
}

func waitReady(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		var line string
		line, err = Do(ctx, addr, "PING")
		cancel()
		if err == nil && line == "+PONG\r\n" {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("unexpected reply %q", line)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Available reports whether redis-server is on PATH.
func Available() bool {
	_, err := exec.LookPath("redis-server")
	return err == nil
}
