package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"

	"github.com/monitorhq/monitor/visualization"
)

// vizProc is a bin/visualization started by the harness: its own process,
// so its CPU and file descriptors are its own (10,000 WebSocket clients
// need 10,000 descriptors on each side; the soft limit here is 20,000).
type vizProc struct {
	cmd     *exec.Cmd
	addr    string
	metrics string // its Prometheus listener
	log     string
	token   string
	args    string
	done    chan error
}

var vizSeq int

const benchPassword = "bench-password"

// startViz runs bin/visualization on a free port against brokers, with
// one viewer user, and returns when a login succeeds.
func (h *harness) startViz(ctx context.Context, brokers []string, maxClients int) (*vizProc, error) {
	vizSeq++
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(h.tmp, fmt.Sprintf("viz-%d", vizSeq))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	hash, err := visualization.HashPassword(benchPassword)
	if err != nil {
		return nil, err
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	quoted := make([]string, len(brokers))
	for i, b := range brokers {
		quoted[i] = strconv.Quote(b)
	}
	// Every client of the harness comes from 127.0.0.1: no per-address
	// cap (the default, 512, is for real clients).
	metrics, err := freeAddr()
	if err != nil {
		return nil, err
	}
	yaml := fmt.Sprintf(`http_listen: %q
metrics_listen: %q
quic_listen: ""
max_connections: %d
max_connections_per_ip: 0
brokers: [%s]
topk:
  shm_name: ""
websocket:
  max_clients: %d
auth:
  jwt_secret: %q
  login_burst: 50
  users:
    - username: bench
      password_hash: %q
      role: viewer
`, addr, metrics, maxClients+100, strings.Join(quoted, ", "), maxClients, hex.EncodeToString(secret), hash)
	path := filepath.Join(dir, "visualization.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "visualization.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	v := &vizProc{cmd: exec.Command(filepath.Join(h.bin, "visualization"), "-config", path, "-log-level", "warn"), addr: addr, metrics: metrics, log: logPath,
		args: fmt.Sprintf("bin/visualization -config <brokers: [BROKER] max_connections_per_ip: 0 websocket: {max_clients: %d} auth: {one viewer}>", maxClients), done: make(chan error, 1)}
	v.cmd.Stdout, v.cmd.Stderr = logf, logf
	if err := v.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start visualization: %w", err)
	}
	go func() {
		v.done <- v.cmd.Wait()
		logf.Close()
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		v.token, err = login("http://" + addr)
		if err == nil {
			return v, nil
		}
		select {
		case werr := <-v.done:
			return nil, fmt.Errorf("visualization exited before serving (%v); log:\n%s", werr, tail(logPath))
		case <-ctx.Done():
			v.kill()
			return nil, ctx.Err()
		default:
		}
		if time.Now().After(deadline) {
			v.kill()
			return nil, fmt.Errorf("visualization not serving after 20s: %v; log:\n%s", err, tail(logPath))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func login(base string) (string, error) {
	resp, err := http.Post(base+"/api/v1/auth/login", "application/json", strings.NewReader(`{"username":"bench","password":"`+benchPassword+`"}`))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.AccessToken == "" {
		return "", fmt.Errorf("login: %s %v", resp.Status, err)
	}
	return tok.AccessToken, nil
}

func (v *vizProc) wsURL() string { return "ws://" + v.addr + "/api/v1/ws" }

func (v *vizProc) cpu() time.Duration {
	if st := v.cmd.ProcessState; st != nil {
		return st.UserTime() + st.SystemTime()
	}
	return 0
}

func (v *vizProc) stop() error {
	_ = v.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-v.done:
		if err != nil {
			return fmt.Errorf("visualization exited with %v after SIGTERM; log:\n%s", err, tail(v.log))
		}
		return nil
	case <-time.After(30 * time.Second):
		v.kill()
		return errors.New("visualization did not exit within 30s of SIGTERM")
	}
}

func (v *vizProc) kill() {
	_ = v.cmd.Process.Kill()
	<-v.done
}

// wsConn is one WebSocket client of the harness. onMessage sees every
// message with the time it was read.
type wsConn struct {
	conn  *websocket.Conn
	wg    sync.WaitGroup
	hello chan struct{} // closed at the first message (hello: joined)
	subd  chan struct{} // closed at the "subscribed" answer
}

func dialWS(ctx context.Context, url, token string, subscribe []byte, onMessage func(data []byte, at time.Time)) (*wsConn, error) {
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(dctx, url, &websocket.DialOptions{Subprotocols: []string{"monitor.v1", "bearer." + token}})
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(1 << 20)
	c := &wsConn{conn: conn, hello: make(chan struct{}), subd: make(chan struct{})}
	if subscribe != nil {
		if err := conn.Write(dctx, websocket.MessageText, subscribe); err != nil {
			conn.CloseNow()
			return nil, err
		}
	}
	c.wg.Go(func() {
		first, subscribed := true, false
		for {
			_, data, err := conn.Read(context.Background())
			if err != nil {
				return
			}
			at := time.Now()
			if first {
				first = false
				close(c.hello)
			}
			if !subscribed && bytes.HasPrefix(data, []byte(`{"type":"subscribed"`)) {
				subscribed = true
				close(c.subd)
			}
			onMessage(data, at)
		}
	})
	return c, nil
}

// wait waits for ch (hello or subscribed) up to d.
func (c *wsConn) wait(ch chan struct{}, d time.Duration) error {
	select {
	case <-ch:
		return nil
	case <-time.After(d):
		return errors.New("no answer from the visualization server")
	}
}

func (c *wsConn) close() {
	c.conn.CloseNow()
	c.wg.Wait()
}

// sampleValues calls f with the series and value of every sample of a
// "sample" message, without decoding the whole message into maps.
func sampleValues(data []byte, f func(series []byte, value float64)) {
	if !bytes.HasPrefix(data, []byte(`{"type":"sample"`)) {
		return
	}
	rest := data
	for {
		i := bytes.Index(rest, []byte(`"series":"`))
		if i < 0 {
			return
		}
		rest = rest[i+len(`"series":"`):]
		j := bytes.IndexByte(rest, '"')
		if j < 0 {
			return
		}
		series := rest[:j]
		k := bytes.Index(rest, []byte(`"value":`))
		if k < 0 {
			return
		}
		rest = rest[k+len(`"value":`):]
		end := bytes.IndexAny(rest, ",}")
		if end < 0 {
			return
		}
		v, err := strconv.ParseFloat(string(rest[:end]), 64)
		if err == nil {
			f(series, v)
		}
		rest = rest[end:]
	}
}

// counters scrapes the visualization server's /metrics for the counters
// named (without the monitor_visualization_ prefix); missing ones are 0.
func (v *vizProc) counters(names ...string) map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get("http://" + v.metrics + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		for _, n := range names {
			if rest, ok := strings.CutPrefix(line, "monitor_visualization_"+n+" "); ok {
				out[n], _ = strconv.ParseFloat(strings.TrimSpace(rest), 64)
			}
		}
	}
	return out
}
