// Package e2e runs the built binaries and the components together against
// real redis-server processes, real gRPC on loopback and real signals.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "monitor-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	for name, pkg := range map[string]string{"broker": "./broker/cmd", "monitor": "./cmd/monitor", "agent": "./agent/cmd", "visualization": "./visualization/cmd"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg)
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// proc is a started binary whose output is kept for the test log.
type proc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	out    strings.Builder
	exited chan struct{}
	err    error
}

func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	return startProcEnv(t, nil, name, args...)
}

// startProcEnv is startProc with env added to the environment.
func startProcEnv(t *testing.T, env []string, name string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(filepath.Join(binDir, name), args...), exited: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
	}()
	go func() {
		p.err = p.cmd.Wait()
		pw.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.output())
		}
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop(t *testing.T, timeout time.Duration) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(timeout):
		t.Fatalf("process did not exit within %s of SIGTERM", timeout)
	}
	if p.err != nil {
		t.Fatalf("process exited with %v after SIGTERM", p.err)
	}
}

// eventually polls cond until it returns nil or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("condition not met within %s: %v", timeout, err)
}

// getJSON GETs url with the bearer token (none if empty) into v.
func getJSON(url string, v any, token ...string) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if len(token) > 0 && token[0] != "" {
		req.Header.Set("Authorization", "Bearer "+token[0])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return json.Unmarshal(body, v)
}

// TestStandaloneShowsThisHost is the README's `make run`: one command, then
// this machine appears with live CPU and memory.
func TestStandaloneShowsThisHost(t *testing.T) {
	httpAddr, grpcAddr := freeAddr(t), freeAddr(t)
	p := startProc(t, "monitor", "standalone", "-data", t.TempDir(), "-http", httpAddr, "-grpc", grpcAddr, "-quic", "127.0.0.1:0", "-interval", "1s")
	started := time.Now()
	var url string
	eventually(t, 15*time.Second, func() error {
		m := regexp.MustCompile(`UI and API:\s+(http://\S+)`).FindStringSubmatch(p.output())
		if m == nil {
			return fmt.Errorf("no URL printed yet")
		}
		url = strings.TrimSuffix(m[1], "/")
		return nil
	})
	m := regexp.MustCompile(`admin password \(generated, shown once\): (\S+)`).FindStringSubmatch(p.output())
	if m == nil {
		t.Fatalf("no generated admin password printed:\n%s", p.output())
	}
	// The API needs a login now: the printed password is the admin user's.
	if err := getJSON(url+"/api/v1/hosts", &struct{}{}); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("hosts without a token = %v, want 401", err)
	}
	token := login(t, url, "admin", m[1])
	var hostID string
	var latest struct {
		HostID    string `json:"host_id"`
		Timestamp int64  `json:"timestamp"`
		Metrics   []struct {
			Name  string  `json:"name"`
			Value float64 `json:"value"`
			Unit  string  `json:"unit"`
		} `json:"metrics"`
	}
	eventually(t, 30*time.Second, func() error {
		var hosts struct {
			Hosts []struct {
				ID     string `json:"id"`
				Online bool   `json:"online"`
			} `json:"hosts"`
		}
		if err := getJSON(url+"/api/v1/hosts", &hosts, token); err != nil {
			return err
		}
		if len(hosts.Hosts) != 1 {
			return fmt.Errorf("hosts = %+v", hosts.Hosts)
		}
		hostID = hosts.Hosts[0].ID
		if err := getJSON(url+"/api/v1/hosts/"+hostID+"/latest", &latest, token); err != nil {
			return err
		}
		found := map[string]bool{}
		for _, m := range latest.Metrics {
			if m.Name == "cpu.usage_percent" || m.Name == "mem.used_percent" {
				if m.Value < 0 || m.Value > 100 || m.Unit != "%" {
					return fmt.Errorf("%s = %v %q", m.Name, m.Value, m.Unit)
				}
				found[m.Name] = true
			}
		}
		if len(found) != 2 {
			return fmt.Errorf("latest has no cpu.usage_percent and mem.used_percent yet: %+v", latest)
		}
		return nil
	})
	t.Logf("host %s live with CPU and memory %.1fs after start", hostID, time.Since(started).Seconds())
	if d := time.Since(time.Unix(latest.Timestamp, 0)); d > time.Minute || d < -time.Minute {
		t.Fatalf("latest timestamp %d is %s from now", latest.Timestamp, d)
	}
	// Live push: the local agent's next snapshot arrives on the WebSocket.
	wctx, wcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer wcancel()
	ws, _, err := websocket.Dial(wctx, "ws"+strings.TrimPrefix(url, "http")+"/api/v1/ws",
		&websocket.DialOptions{Subprotocols: []string{"monitor.v1", "bearer." + token}})
	if err != nil {
		t.Fatalf("WebSocket: %v", err)
	}
	defer ws.CloseNow()
	if err := ws.Write(wctx, websocket.MessageText, []byte(`{"type":"subscribe","metrics":["cpu.usage_percent"]}`)); err != nil {
		t.Fatal(err)
	}
	for {
		_, data, err := ws.Read(wctx)
		if err != nil {
			t.Fatalf("no live sample on the WebSocket: %v", err)
		}
		var m struct {
			Type string `json:"type"`
			Host string `json:"host"`
		}
		if json.Unmarshal(data, &m) == nil && m.Type == "sample" && m.Host == hostID {
			t.Logf("live sample on the WebSocket: %.200s", data)
			break
		}
	}
	ws.Close(websocket.StatusNormalClosure, "")

	resp, err := http.Get(url + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// The page (the built dashboard, or the fallback without Node) loads
	// its script, which reads the hosts.
	sm := regexp.MustCompile(`<script[^>]*src="([^"]+\.js)"`).FindSubmatch(page)
	if resp.StatusCode != 200 || sm == nil {
		t.Fatalf("GET / = %s, no script:\n%.300s", resp.Status, page)
	}
	resp, err = http.Get(url + string(sm[1]))
	if err != nil {
		t.Fatal(err)
	}
	script, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(script), "/api/v1/hosts") {
		t.Fatalf("GET %s = %s (%d bytes), the page's script does not load hosts", sm[1], resp.Status, len(script))
	}
	p.stop(t, 20*time.Second)
	out := p.output()
	if !strings.Contains(out, "broker stopped") {
		t.Fatalf("broker did not stop cleanly:\n%s", out)
	}
	if strings.Index(out, "shutting down: agent") > strings.Index(out, "broker stopped") {
		t.Fatalf("shutdown order wrong:\n%s", out)
	}
}

// login posts the credentials and returns the access token.
func login(t *testing.T, url, user, password string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"username": user, "password": password})
	resp, err := http.Post(url+"/api/v1/auth/login", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	defer resp.Body.Close()
	var toks struct {
		AccessToken string `json:"access_token"`
		Role        string `json:"role"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&toks); err != nil || resp.StatusCode != http.StatusOK || toks.AccessToken == "" || toks.Role != "admin" {
		t.Fatalf("login as %s: %s %v %+v", user, resp.Status, err, toks)
	}
	return toks.AccessToken
}
