package connlimit

import (
	"io"
	"net"
	"testing"
	"time"
)

// TestLimits holds connections open through a real loopback listener and
// checks that the ones past each limit are closed at once and counted,
// and that a closed connection frees its slot.
func TestLimits(t *testing.T) {
	for _, tc := range []struct {
		name       string
		max, perIP int
		reason     string
	}{
		{"total", 2, 0, ReasonMax},
		{"per ip", 0, 2, ReasonPerIP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			l := Wrap(raw, tc.max, tc.perIP, nil)
			defer l.Close()
			accepted := make(chan net.Conn, 8)
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					accepted <- c
				}
			}()
			dial := func() net.Conn {
				c, err := net.Dial("tcp", raw.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				return c
			}
			a, b := dial(), dial()
			defer a.Close()
			defer b.Close()
			sa, sb := <-accepted, <-accepted
			third := dial()
			defer third.Close()
			// The listener closes the third at once: a read sees EOF or a reset.
			_ = third.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, err := third.Read(make([]byte, 1)); err == nil || err == io.ErrNoProgress {
				t.Fatalf("third connection read: %v; want it closed by the listener", err)
			}
			if got := l.Refused()[tc.reason]; got != 1 {
				t.Fatalf("refused[%s] = %d, want 1", tc.reason, got)
			}
			if l.Open() != 2 {
				t.Fatalf("open = %d, want 2", l.Open())
			}
			sa.Close()
			sa.Close() // a second Close must not free a second slot
			if l.Open() != 1 {
				t.Fatalf("open after close = %d, want 1", l.Open())
			}
			d := dial()
			defer d.Close()
			select {
			case sd := <-accepted:
				sd.Close()
			case <-time.After(30 * time.Second):
				t.Fatal("a connection within the limit was not accepted after a slot freed")
			}
			sb.Close()
		})
	}
}
