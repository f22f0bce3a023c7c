package visualization_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pq "github.com/monitorhq/monitor/pkg/quic"
	monitorpb "github.com/monitorhq/monitor/proto"
	"github.com/monitorhq/monitor/visualization"
	"github.com/monitorhq/monitor/visualization/internal/brokertest"
)

// TestWebTransportInHeadlessChromium: Debian's Chromium, driven by
// playwright-core (e2e/quic, `make e2e-quic` installs it), loads a page
// from the server's origin that uses web/src/transport/webtransport.js:
// it fetches the certificate hash from /api/v1/quic, opens WebTransport
// pinned with serverCertificateHashes, sends the token as the first frame
// and receives a stored sample as a datagram; a wrong and a missing token
// are refused with 4401. Skipped when Chromium or node_modules are
// missing, unless MONITOR_E2E_QUIC=1 (make e2e-quic) demands it.
func TestWebTransportInHeadlessChromium(t *testing.T) {
	script, _ := filepath.Abs("../e2e/quic/webtransport.mjs")
	module, _ := filepath.Abs("../web/src/transport/webtransport.js")
	chromium := "/usr/bin/chromium"
	var missing []string
	for _, p := range []string{chromium, filepath.Join(filepath.Dir(script), "node_modules/playwright-core/package.json")} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	if _, err := exec.LookPath("node"); err != nil {
		missing = append(missing, "node")
	}
	if len(missing) > 0 {
		if os.Getenv("MONITOR_E2E_QUIC") == "1" {
			t.Fatalf("missing %v (make e2e-quic installs them)", missing)
		}
		t.Skipf("missing %v; run make e2e-quic", missing)
	}

	b := brokertest.Start(t)
	cfg := testConfig(b)
	srv, err := visualization.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	base := "http://" + srv.Addr()

	pctx, pcancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer pcancel()
	cmd := exec.CommandContext(pctx, "node", script)
	cmd.Env = append(os.Environ(), "BASE="+base, "USERNAME=viewer", "PASSWORD="+testPassword, "MODULE="+module, "CHROMIUM="+chromium)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// Store samples until the page has one (it subscribes first).
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var runErr error
	for ts := time.Now().Unix(); ; ts++ {
		b.Publish(&monitorpb.StoredBatch{Snapshots: []*monitorpb.Snapshot{{HostId: "e2e-host", Timestamp: ts,
			Metrics: []*monitorpb.Metric{{Name: "cpu.usage_percent", Value: 42, Unit: "%"}, {Name: "mem.used_percent", Value: 1, Unit: "%"}}}}})
		select {
		case runErr = <-exited:
		case <-tick.C:
			continue
		}
		break
	}
	if runErr != nil && !errors.Is(runErr, context.DeadlineExceeded) {
		t.Logf("node: %v\nstderr: %s", runErr, stderr.String())
	}
	var res struct {
		Error           string `json:"error"`
		HasWebTransport bool   `json:"hasWebTransport"`
		Transport       string `json:"transport"`
		Sample          struct {
			Seq     uint64 `json:"seq"`
			Type    string `json:"type"`
			Host    string `json:"host"`
			Samples []struct {
				Series string  `json:"series"`
				Value  float64 `json:"value"`
			} `json:"samples"`
		} `json:"sample"`
		Info struct {
			Certificate string `json:"certificate"`
			CertHashes  []struct {
				Algorithm string `json:"algorithm"`
			} `json:"cert_hashes"`
		} `json:"info"`
		WrongToken, MissingToken struct {
			Type string `json:"type"`
			Code int    `json:"code"`
		}
		ModuleRefusal string   `json:"moduleRefusal"`
		States        []any    `json:"states"`
		Logs          []string `json:"logs"`
	}
	line, _, _ := strings.Cut(stdout.String(), "\n")
	if err := json.Unmarshal([]byte(line), &res); err != nil || res.Error != "" || runErr != nil {
		t.Fatalf("node run: %v / %v\nresult: %s\nerror: %s\nstderr: %s", runErr, err, line, res.Error, stderr.String())
	}
	t.Logf("page: transport %s, sample %+v, states %v", res.Transport, res.Sample, res.States)
	if !res.HasWebTransport || res.Transport != "webtransport" {
		t.Fatalf("transport %q (WebTransport in browser: %v)", res.Transport, res.HasWebTransport)
	}
	if res.Sample.Type != "sample" || res.Sample.Seq == 0 || res.Sample.Host != "e2e-host" || len(res.Sample.Samples) != 1 ||
		res.Sample.Samples[0].Series != "cpu.usage_percent" || res.Sample.Samples[0].Value != 42 {
		t.Fatalf("sample = %+v, want e2e-host's cpu sample as a numbered datagram", res.Sample)
	}
	if res.Info.Certificate != "self-signed" || len(res.Info.CertHashes) == 0 || res.Info.CertHashes[0].Algorithm != "sha-256" {
		t.Fatalf("info = %+v", res.Info)
	}
	for name, r := range map[string]struct {
		Type string `json:"type"`
		Code int    `json:"code"`
	}{"wrong": res.WrongToken, "missing": res.MissingToken} {
		if r.Type != "error" || r.Code != pq.CodeUnauthorized {
			t.Errorf("%s token: %+v, want an error with code %d", name, r, pq.CodeUnauthorized)
		}
	}
	if !strings.Contains(res.ModuleRefusal, "401") {
		t.Errorf("module with a forged token: %q, want a refusal", res.ModuleRefusal)
	}
}
