package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/crypto/bcrypt"

	"github.com/monitorhq/monitor/internal/redistest"
	"github.com/monitorhq/monitor/pkg/grpcauth"
)

// secretValues are the secrets TestSecretsNeverLogged hands to the
// processes or sends them, by name. Every one must be absent from every
// line any process wrote, as is and in base64 and hex. Extend the list
// with each new kind of credential.
type secretValues map[string]string

// add records a secret and returns it.
func (s secretValues) add(name, value string) string {
	s[name] = value
	return value
}

// leaks returns, for each secret found in out, its name and the form it
// was found in.
func (s secretValues) leaks(out string) []string {
	var found []string
	for name, v := range s {
		forms := map[string]string{
			"plain":      v,
			"base64":     base64.StdEncoding.EncodeToString([]byte(v)),
			"base64url":  base64.RawURLEncoding.EncodeToString([]byte(v)),
			"hex":        hex.EncodeToString([]byte(v)),
			"url-quoted": url.QueryEscape(v),
		}
		for form, f := range forms {
			if strings.Contains(out, f) {
				found = append(found, fmt.Sprintf("%s (%s)", name, form))
			}
		}
	}
	return found
}

// logged collects the output of every process a test starts (run or
// start), in order, for the leak check.
type logged struct {
	mu   sync.Mutex
	outs []func() string
}

func (l *logged) all() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, o := range l.outs {
		b.WriteString(o())
	}
	return b.String()
}

// run runs a binary to completion with env added and returns its combined
// output (kept for the leak check).
func (l *logged) run(t *testing.T, env []string, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, name), args...)
	cmd.Env = append(os.Environ(), env...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			_ = cmd.Process.Kill()
		case <-done:
		}
	}()
	out, err := cmd.CombinedOutput()
	close(done)
	l.mu.Lock()
	l.outs = append(l.outs, func() string { return string(out) })
	l.mu.Unlock()
	return string(out), err
}

// start starts a long-running binary with env added (startProcEnv); its
// output is kept for the leak check.
func (l *logged) start(t *testing.T, env []string, name string, args ...string) *proc {
	t.Helper()
	p := startProcEnv(t, env, name, args...)
	l.mu.Lock()
	l.outs = append(l.outs, p.output)
	l.mu.Unlock()
	return p
}

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSecretsNeverLogged runs a broker on a password-protected Redis (an
// ACL user) with a cluster secret, an admin password and an agent secret
// (agent authentication on), the visualization server with a JWT secret, a
// user's password and the cluster secret, and a real agent with its token,
// all at debug level; exercises good and bad logins, a token refresh, API
// reads and an admin change through the brokers, a WebSocket, a token in a
// query string, a forged token, an agent with a token of another secret
// (refused and logged), config errors and a Redis authentication failure;
// then looks for every secret in everything the processes wrote.
func TestSecretsNeverLogged(t *testing.T) {
	sec := secretValues{}
	redisPW := sec.add("redis password", "redis-pw-7f3a9c1e5b")
	wrongRedisPW := sec.add("wrong redis password", "wrong-redis-pw-2d8e4a")
	clusterSecret := sec.add("cluster secret", "cluster-secret-5c9e1f7a3b2d")
	adminPW := sec.add("broker admin password", "broker-admin-pw-8b2f6d")
	jwtSecret := sec.add("jwt secret", "jwt-secret-0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d")
	userPW := sec.add("user password", "user-pw-4e6a8c0b2d")
	wrongUserPW := sec.add("wrong user password", "wrong-user-pw-9d1c3e")
	shortJWT := sec.add("too-short jwt secret", "short-jwt-3f5a7c")
	webhook := sec.add("webhook token", "hook-token-6b8d0f2a4c")
	forged := sec.add("forged token", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.forged-signature-1a2b3c")
	agentSecret := sec.add("agent secret", "agent-secret-3c5e7a9b1d2f4a6c")
	wrongAgentSecret := sec.add("wrong agent secret", "wrong-agent-secret-8e0a2c4e6b")
	agentToken, err := grpcauth.Mint([]byte(agentSecret), "secrets-agent")
	if err != nil {
		t.Fatal(err)
	}
	sec.add("agent token", agentToken)
	wrongToken, err := grpcauth.Mint([]byte(wrongAgentSecret), "secrets-agent-2")
	if err != nil {
		t.Fatal(err)
	}
	sec.add("agent token of another secret", wrongToken)
	// The tokens' signatures alone (the host id part is not secret).
	sec.add("agent token signature", agentToken[strings.LastIndexByte(agentToken, '.')+1:])
	sec.add("wrong agent token signature", wrongToken[strings.LastIndexByte(wrongToken, '.')+1:])

	out := &logged{}
	dir := t.TempDir()
	rs := redistest.Start(t, redistest.User("monitor", redisPW, "~monitor:*", "resetchannels",
		"+@read", "+@write", "+@transaction", "+@scripting", "-@dangerous", "+ping", "+restore")...)
	grpcAddr, raftAddr, brokerHTTP, vizHTTP := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)

	brokerYAML := func(password string) string {
		return fmt.Sprintf(`node_id: secrets-1
grpc_listen: %q
http_listen: %q
data_dir: %q
raft:
  listen: %q
storage:
  backend: redis
  redis:
    shards:
      - addr: %q
        username: monitor
        password: %q
cluster:
  secret: %q
  admin_user: admin
auth:
  agent_secrets: [%q]
`, grpcAddr, brokerHTTP, filepath.Join(dir, "broker-data"), raftAddr, rs.Addr, password, clusterSecret, agentSecret)
	}
	brokerEnv := []string{"MONITOR_ADMIN_PASSWORD=" + adminPW}

	// A Redis authentication failure: the broker must not start, and say
	// why without the password.
	bad := writeFile(t, dir, "broker-wrong-pw.yaml", brokerYAML(wrongRedisPW))
	if o, err := out.run(t, brokerEnv, "broker", "-config", bad, "-log-level", "debug"); err == nil || !strings.Contains(o, rs.Addr) {
		t.Fatalf("broker with a wrong Redis password: %v\n%s", err, o)
	}
	// The same through -storage's URL form, and a URL that does not parse.
	for _, u := range []string{
		"redis://monitor:" + wrongRedisPW + "@" + rs.Addr,
		"redis://monitor:" + wrongRedisPW + "@127.0.0.1:notaport",
	} {
		if o, err := out.run(t, brokerEnv, "broker", "-config", bad, "-storage", u, "-log-level", "debug"); err == nil {
			t.Fatalf("broker with -storage %s started:\n%s", strings.ReplaceAll(u, wrongRedisPW, "***"), o)
		}
	}

	// The broker, at debug level.
	good := writeFile(t, dir, "broker.yaml", brokerYAML(redisPW))
	if o, err := out.run(t, brokerEnv, "broker", "-config", good, "-check-config"); err != nil {
		t.Fatalf("broker -check-config: %v\n%s", err, o)
	}
	broker := out.start(t, brokerEnv, "broker", "-config", good, "-log-level", "debug")
	eventually(t, 30*time.Second, func() error {
		if !strings.Contains(broker.output(), "broker serving") {
			return fmt.Errorf("broker not serving yet")
		}
		return nil
	})

	// The visualization server: JWT secret from the environment, the
	// cluster secret and a user in the file.
	hash, err := bcrypt.GenerateFromPassword([]byte(userPW), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	vizYAML := fmt.Sprintf(`http_listen: %q
quic_listen: ""
brokers: [%q]
cluster_secret: %q
topk:
  shm_name: ""
auth:
  users:
    - username: ann
      password_hash: %q
      role: admin
`, vizHTTP, grpcAddr, clusterSecret, hash)
	vizCfg := writeFile(t, dir, "viz.yaml", vizYAML)
	vizEnv := []string{"MONITOR_JWT_SECRET=" + jwtSecret}
	// Config errors: a JWT secret too short, a secret of the wrong type.
	if o, err := out.run(t, []string{"MONITOR_JWT_SECRET=" + shortJWT}, "visualization", "-config", vizCfg, "-check-config"); err == nil || !strings.Contains(o, "auth.jwt_secret") {
		t.Fatalf("visualization with a short JWT secret: %v\n%s", err, o)
	}
	typeErr := writeFile(t, dir, "viz-bad.yaml", vizYAML+"  jwt_secret: [\""+jwtSecret+"\"]\n")
	if o, err := out.run(t, nil, "visualization", "-config", typeErr, "-check-config"); err == nil {
		t.Fatalf("visualization with a list for jwt_secret started:\n%s", o)
	}
	if o, err := out.run(t, vizEnv, "visualization", "-config", vizCfg, "-check-config"); err != nil || !strings.Contains(o, "config ok") {
		t.Fatalf("visualization -check-config: %v\n%s", err, o)
	}
	viz := out.start(t, vizEnv, "visualization", "-config", vizCfg, "-log-level", "debug")
	base := "http://" + vizHTTP
	eventually(t, 30*time.Second, func() error {
		resp, err := http.Get(base + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("healthz %s", resp.Status)
		}
		return nil
	})

	// A wrong password, then the right one.
	post := func(path, token string, body any) (int, []byte) {
		t.Helper()
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(http.MethodPost, base+path, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, data
	}
	if code, _ := post("/api/v1/auth/login", "", map[string]string{"username": "ann", "password": wrongUserPW}); code != http.StatusUnauthorized {
		t.Fatalf("login with a wrong password = %d", code)
	}
	code, body := post("/api/v1/auth/login", "", map[string]string{"username": "ann", "password": userPW})
	var toks struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.Unmarshal(body, &toks); code != http.StatusOK || err != nil {
		t.Fatalf("login = %d %s", code, body)
	}
	sec.add("access token", toks.AccessToken)
	sec.add("refresh token", toks.RefreshToken)
	code, body = post("/api/v1/auth/refresh", "", map[string]string{"refresh_token": toks.RefreshToken})
	var refreshed struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.Unmarshal(body, &refreshed); code != http.StatusOK || err != nil {
		t.Fatalf("refresh = %d %s", code, body)
	}
	sec.add("refreshed access token", refreshed.AccessToken)
	sec.add("second refresh token", refreshed.RefreshToken)
	// The used refresh token again: refused (and logged as refused).
	if code, _ := post("/api/v1/auth/refresh", "", map[string]string{"refresh_token": toks.RefreshToken}); code != http.StatusUnauthorized {
		t.Fatalf("reused refresh token = %d", code)
	}
	tok := refreshed.AccessToken

	// Reads through the broker (with the cluster secret), an admin change
	// (an alert rule with a webhook holding a token), the cluster page.
	for _, p := range []string{"/api/v1/hosts", "/api/v1/cluster", "/api/v1/alerts"} {
		if err := getJSON(base+p, &map[string]any{}, tok); err != nil {
			t.Fatalf("GET %s: %v", p, err)
		}
	}
	rule := map[string]any{"id": "cpu-hot", "metric": "cpu.usage_percent", "op": ">", "threshold": 99,
		"webhook": "http://127.0.0.1:1/hooks/" + webhook}
	if code, body := post("/api/v1/alerts/rules", tok, rule); code != http.StatusCreated {
		t.Fatalf("create alert rule = %d %s", code, body)
	}
	// A token where it does not belong (the query string) and a forged one.
	if err := getJSON(base+"/api/v1/hosts?token="+url.QueryEscape(tok)+"&access_token="+url.QueryEscape(forged), &map[string]any{}); err == nil {
		t.Fatal("a token in the query string was accepted")
	}
	if err := getJSON(base+"/api/v1/hosts", &map[string]any{}, forged); err == nil {
		t.Fatal("a forged token was accepted")
	}
	// A WebSocket with the token, and one with the forged token.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+vizHTTP+"/api/v1/ws", &websocket.DialOptions{Subprotocols: []string{"monitor.v1", "bearer." + tok}})
	if err != nil {
		t.Fatalf("websocket: %v", err)
	}
	if _, _, err := ws.Read(ctx); err != nil {
		t.Fatalf("websocket hello: %v", err)
	}
	ws.Close(websocket.StatusNormalClosure, "")
	if _, _, err := websocket.Dial(ctx, "ws://"+vizHTTP+"/api/v1/ws", &websocket.DialOptions{Subprotocols: []string{"monitor.v1", "bearer." + forged}}); err == nil {
		t.Fatal("a WebSocket with a forged token opened")
	}

	// A real agent with its token (from a file, in clear text to the
	// loopback broker) writes; its host appears through the API. Then an
	// agent whose token another secret signed is refused, and the broker
	// logs the refusal.
	agentYAML := func(host, tokenLine string) string {
		return fmt.Sprintf(`host_id: %q
brokers: [%q]
interval: 1s
collector_timeout: 500ms
data_dir: %q
http_listen: ""
insecure_loopback_token: true
%s
`, host, grpcAddr, filepath.Join(dir, host), tokenLine)
	}
	tokenFile := writeFile(t, dir, "agent.token", agentToken+"\n")
	agentCfg := writeFile(t, dir, "agent.yaml", agentYAML("secrets-agent", fmt.Sprintf("token_file: %q", tokenFile)))
	if o, err := out.run(t, nil, "agent", "-config", agentCfg, "-check-config"); err != nil {
		t.Fatalf("agent -check-config: %v\n%s", err, o)
	}
	agentProc := out.start(t, nil, "agent", "-config", agentCfg, "-log-level", "debug")
	eventually(t, 60*time.Second, func() error {
		var latest struct {
			Metrics []json.RawMessage `json:"metrics"`
		}
		if err := getJSON(base+"/api/v1/hosts/secrets-agent/latest", &latest, tok); err != nil {
			return err
		}
		if len(latest.Metrics) == 0 {
			return fmt.Errorf("no metrics yet")
		}
		return nil
	})
	wrongCfg := writeFile(t, dir, "agent-wrong.yaml", agentYAML("secrets-agent-2", ""))
	wrongAgent := out.start(t, []string{"MONITOR_AGENT_TOKEN=" + wrongToken}, "agent", "-config", wrongCfg, "-log-level", "debug")
	eventually(t, 30*time.Second, func() error {
		if !strings.Contains(broker.output(), "gRPC call refused") {
			return fmt.Errorf("the broker has not logged the refusal yet")
		}
		return nil
	})
	var hosts struct {
		Hosts []struct {
			ID string `json:"id"`
		} `json:"hosts"`
	}
	if err := getJSON(base+"/api/v1/hosts", &hosts, tok); err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts.Hosts {
		if h.ID == "secrets-agent-2" {
			t.Fatal("the agent with another secret's token registered")
		}
	}
	wrongAgent.stop(t, 30*time.Second)
	agentProc.stop(t, 30*time.Second)

	viz.stop(t, 20*time.Second)
	broker.stop(t, 20*time.Second)

	all := out.all()
	if !strings.Contains(all, "login refused") || !strings.Contains(all, "http request") || !strings.Contains(all, "gRPC call refused") {
		t.Fatalf("the debug logs lack the events this test looks through:\n%s", all)
	}
	if leaks := sec.leaks(all); len(leaks) > 0 {
		t.Fatalf("secrets in the logs: %s\n%s", strings.Join(leaks, ", "), all)
	}
	if os.Getenv("SECRETS_TEST_DUMP") != "" {
		t.Log(all)
	}
	t.Logf("FIGURE %d secrets checked against %d bytes of log output from %d process runs", len(sec), len(all), len(out.outs))
}
