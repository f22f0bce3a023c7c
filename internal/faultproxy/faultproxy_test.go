package faultproxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echo starts a line echo server and returns its address.
func echo(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return l.Addr().String()
}

func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := r.ReadString('\n')
	if err != nil || line != msg+"\n" {
		t.Fatalf("echo of %q = %q, %v", msg, line, err)
	}
}

func TestPassDelayBlackholeReset(t *testing.T) {
	p, err := New(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	roundTrip(t, c, r, "hello")

	// Latency: a round trip crosses the proxy twice.
	p.Delay(50 * time.Millisecond)
	start := time.Now()
	roundTrip(t, c, r, "slow")
	if took := time.Since(start); took < 100*time.Millisecond {
		t.Fatalf("delayed round trip took %s, less than twice the 50ms latency", took)
	}
	p.Delay(0)

	// Black hole: nothing arrives, then everything, in order.
	p.Blackhole(true)
	if _, err := c.Write([]byte("held-1\nheld-2\n")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := r.ReadString('\n'); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read through a black hole = %v, want a timeout", err)
	}
	p.Blackhole(false)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for _, want := range []string{"held-1\n", "held-2\n"} {
		if line, err := r.ReadString('\n'); err != nil || line != want {
			t.Fatalf("after the black hole: %q, %v; want %q", line, err, want)
		}
	}

	// Reset: the client sees the connection die.
	if n := p.ResetAll(); n != 1 {
		t.Fatalf("reset %d connections, want 1", n)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.ReadString('\n'); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after reset = %v, want a connection error", err)
	}

	// Refuse: new connections die at once; Heal lets them through.
	p.Refuse(true)
	// The proxy resets a refused connection as soon as it accepts it; the
	// reset may already reach the dialer (connection reset by peer), or
	// the first read.
	if c2, err := net.Dial("tcp", p.Addr()); err == nil {
		_ = c2.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c2.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read on a refused connection = %v", err)
		}
		c2.Close()
	} else if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("dial a refusing proxy: %v; want a connection that dies at once", err)
	}
	p.Heal()
	c3, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	roundTrip(t, c3, bufio.NewReader(c3), strings.Repeat("x", 100000))
	st := p.Stats()
	if st.Accepted != 3 || st.Refused != 1 || st.Resets != 1 || st.Bytes == 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestResetWhileBlackholed must not hang: a reset frees a held link.
func TestResetWhileBlackholed(t *testing.T) {
	p, err := New(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c, bufio.NewReader(c), "up")
	p.Blackhole(true)
	_, _ = c.Write([]byte("stuck\n"))
	p.Partition()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}
