// Package redistest starts throw-away redis-server processes for tests and
// the benchmark harness: each on a free loopback port, with no persistence
// unless asked, stopped when the test (or the harness) ends. Tests never
// touch a Redis they did not start.
//
// Start is the testing.TB wrapper; Launch is the process-starting core for
// programs that are not tests (bench/).
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

// Server is a running redis-server.
type Server struct {
	Addr string
	Dir  string // its working directory (logs, and AOF/RDB files when enabled)
	bin  string
	args []string
	cmd  *exec.Cmd
}

// Start launches redis-server on a free port with its files in a test
// temporary directory and stops it in t.Cleanup. extraArgs are appended to
// the command line (later options win, e.g. "--appendonly", "yes"). The
// test fails if redis-server is not installed (make test installs it).
func Start(t testing.TB, extraArgs ...string) *Server {
	t.Helper()
	s, err := Launch(t.TempDir(), extraArgs...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// User returns the redis-server arguments (for Start's or Launch's
// extraArgs) that define an ACL user (Redis ≥ 6.2) named name, enabled,
// with password and the ACL rules given, e.g. "~monitor:*", "+@all",
// "-@dangerous". The default user stays as it is (no password, every
// command): tests set up and inspect through it.
func User(name, password string, rules ...string) []string {
	return append([]string{"--user", name, "on", ">" + password}, rules...)
}

// Launch starts redis-server on a free loopback port with its files in
// dir and waits until it answers PING. The caller must Stop it.
func Launch(dir string, extraArgs ...string) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server not found (make deps installs it with apt-get): %w", err)
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, fmt.Errorf("find free port: %w", err)
		}
		s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Dir: dir, bin: bin}
		s.args = append([]string{
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir,
			"--logfile", filepath.Join(dir, fmt.Sprintf("redis-%d.log", port)),
		}, extraArgs...)
		s.cmd = exec.Command(bin, s.args...)
		s.cmd.SysProcAttr = procAttr()
		if err := s.cmd.Start(); err != nil {
			return nil, fmt.Errorf("start redis-server: %w", err)
		}
		if lastErr = waitReady(s.Addr, 10*time.Second); lastErr == nil {
			return s, nil
		}
		s.Stop()
	}
	return nil, fmt.Errorf("redis-server did not become ready: %w", lastErr)
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

// Restart starts the server again on the same port after Stop. The data
// set is empty unless persistence was enabled with extra arguments.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if err := s.Relaunch(); err != nil {
		t.Fatal(err)
	}
}

// Relaunch is Restart for programs that are not tests.
func (s *Server) Relaunch() error {
	s.Stop()
	s.cmd = exec.Command(s.bin, s.args...)
	s.cmd.SysProcAttr = procAttr()
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("restart redis-server: %w", err)
	}
	if err := waitReady(s.Addr, 10*time.Second); err != nil {
		return fmt.Errorf("restarted redis-server not ready: %w", err)
	}
	return nil
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
