package wspush

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/visualization/internal/push"
)

// countingConn records every write that reaches the socket.
type countingConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

func (c *countingConn) SetWriteDeadline(time.Time) error { return nil }

func TestCorkSendsABatchInOneWrite(t *testing.T) {
	under := &countingConn{}
	c := &corkConn{Conn: under, timeout: time.Second}
	if _, err := c.Write([]byte("a")); err != nil { // uncorked: goes out
		t.Fatal(err)
	}
	c.cork()
	for _, s := range []string{"b", "c", "d"} {
		if n, err := c.Write([]byte(s)); n != 1 || err != nil {
			t.Fatalf("corked write: %d %v", n, err)
		}
	}
	if len(under.writes) != 1 {
		t.Fatalf("%d writes reached the socket while corked, want only the first", len(under.writes))
	}
	if err := c.uncork(); err != nil {
		t.Fatal(err)
	}
	if len(under.writes) != 2 || string(under.writes[1]) != "bcd" {
		t.Fatalf("writes %q, want [a bcd]", under.writes)
	}
	// Past corkMax what is held goes out first, then the new bytes.
	c.cork()
	big := bytes.Repeat([]byte{'x'}, corkMax)
	_, _ = c.Write([]byte("e"))
	_, _ = c.Write(big)
	if len(under.writes) != 4 || string(under.writes[2]) != "e" || len(under.writes[3]) != corkMax {
		t.Fatalf("%d writes after overflowing the cork, want 4 (held e, then the big one)", len(under.writes))
	}
	if err := c.uncork(); err != nil || len(under.writes) != 4 {
		t.Fatalf("uncork with nothing held: %v, %d writes", err, len(under.writes))
	}
}

// A peer that reads nothing: the write deadline ends the flush.
func TestCorkFlushHasTheWriteDeadline(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := &corkConn{Conn: a, timeout: 50 * time.Millisecond}
	c.cork()
	_, _ = c.Write([]byte("stuck"))
	start := time.Now()
	err := c.uncork()
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("uncork to a peer that never reads: %v, want a deadline error", err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("uncork took %s", el)
	}
}

// Many queued messages leave corked and arrive complete and in order.
func TestSessionDeliversQueuedMessagesInOrder(t *testing.T) {
	hub := push.New(push.Options{QueueSize: 4096})
	h, err := New(Options{Hub: hub, Heartbeat: 5 * time.Second, ReadLimit: 1 << 14,
		Verify: func(string) (Identity, error) {
			return Identity{User: "u", Role: "viewer", Expires: time.Now().Add(time.Hour)}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	defer h.Wait()
	defer hub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &websocket.DialOptions{Subprotocols: []string{Protocol, BearerPrefix + "t"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	if _, data, err := c.Read(ctx); err != nil || !bytes.Contains(data, []byte(`"type":"hello"`)) {
		t.Fatalf("first message %s %v, want hello", data, err)
	}
	const n = 2000
	for i := range n {
		hub.Observe("h1", nil, int64(1000+i), []storage.Sample{{Series: "cpu.usage_percent", Value: float64(i), Unit: "%"}})
	}
	for i := range n {
		_, data, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		want := fmt.Sprintf(`"ts":%d,`, 1000+i)
		if !bytes.Contains(data, []byte(want)) {
			t.Fatalf("message %d is %s, want %s", i, data, want)
		}
	}
	if st := hub.Stats(); st.Folded != 0 {
		t.Fatalf("folded %d, want 0", st.Folded)
	}
}
