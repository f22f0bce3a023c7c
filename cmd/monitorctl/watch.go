package main

// monitorctl watch: live updates over the visualization server's native
// QUIC protocol (pkg/quic), printed as JSON lines.
//
//	watch [-addr HOST:8081] [-api URL] [-n N] [-host H] [-metric PREFIX] [-token T] [-stream]
//
// Credentials: -token (or MONITOR_TOKEN) is an access token used as is;
// otherwise -user/-password (MONITOR_USER/MONITOR_PASSWORD) log in at the
// HTTP API (POST /api/v1/auth/login on -api, default http://HOST:8080).
// The API's GET /api/v1/quic then gives the certificate hashes to pin (a
// self-signed certificate) — the same trust as the browser's. The session
// reconnects (fetching the hashes again) when it drops, so a certificate
// rotation or a server restart costs one reconnect; a refused token ends
// the command.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"time"

	pq "github.com/monitorhq/monitor/pkg/quic"
)

func watchCmd(args []string, user, password string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("monitorctl watch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8081", "QUIC address of the visualization server (host:port, UDP)")
	api := fs.String("api", "", "HTTP API base URL for login and certificate hashes (default http://HOST:8080)")
	n := fs.Int("n", 0, "exit after N sample messages (0: until interrupted)")
	host := fs.String("host", "", "host id or prefix ending in * (default: every host)")
	metric := fs.String("metric", "", "metric prefix, e.g. cpu. (default: every metric)")
	token := fs.String("token", os.Getenv("MONITOR_TOKEN"), "access token (env MONITOR_TOKEN); without it -user/-password log in")
	stream := fs.Bool("stream", false, "samples on the ordered stream instead of datagrams")
	events := fs.Bool("events", false, "also print topk, anomaly and alert events")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *n < 0 {
		fmt.Fprintln(stderr, "monitorctl watch: -n must be ≥ 0")
		return 2
	}
	base := *api
	if base == "" {
		h, _, err := net.SplitHostPort(*addr)
		if err != nil {
			fmt.Fprintf(stderr, "monitorctl watch: -addr %q: %v\n", *addr, err)
			return 2
		}
		base = "http://" + net.JoinHostPort(h, "8080")
	}
	base = strings.TrimSuffix(base, "/")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	sub := map[string]any{"type": "subscribe", "kinds": []string{"sample"}}
	if *events {
		sub["kinds"] = []string{"sample", "topk", "anomaly", "alert"}
	}
	if *host != "" {
		sub["hosts"] = []string{*host}
	}
	if *metric != "" {
		sub["metrics"] = []string{*metric}
	}
	w := &watcher{base: base, addr: *addr, user: user, password: password, token: *token, stream: *stream, sub: sub, n: *n, out: stdout, log: stderr}
	if err := w.run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(stderr, "monitorctl watch:", err)
		return 1
	}
	return 0
}

type watcher struct {
	base, addr, user, password, token string
	stream                            bool
	sub                               map[string]any
	n, got                            int
	out, log                          io.Writer
}

func (w *watcher) run(ctx context.Context) error {
	backoff := 500 * time.Millisecond
	for {
		err := w.session(ctx)
		if err == nil || ctx.Err() != nil || errors.Is(err, errNoCredentials) {
			return err
		}
		var re *pq.RefusedError
		if errors.As(err, &re) {
			switch re.Code {
			case pq.CodeUnauthorized:
				return err
			case pq.CodeTokenExpired:
				if w.password == "" {
					return fmt.Errorf("%w (pass -user/-password to log in again)", err)
				}
				w.token = "" // log in again
			}
		}
		fmt.Fprintf(w.log, "monitorctl watch: %v; reconnecting in %s\n", err, backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// session logs in if needed, fetches the hashes, connects and prints
// until N samples or an error; nil means done.
func (w *watcher) session(ctx context.Context) error {
	if w.token == "" {
		tok, err := login(ctx, w.base, w.user, w.password)
		if err != nil {
			return err
		}
		w.token = tok
	}
	info, err := quicInfo(ctx, w.base, w.token)
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	c, err := pq.Dial(dctx, w.addr, pq.DialOptions{Token: w.token, CertHashes: info.CertHashes, NoDatagrams: w.stream})
	cancel()
	if err != nil {
		return err
	}
	defer c.Close()
	sctx, scancel := context.WithTimeout(ctx, 15*time.Second)
	err = c.Send(sctx, w.sub)
	scancel()
	if err != nil {
		return err
	}
	// Until the server confirms the filter, the default one (everything)
	// is in force: what comes before "subscribed" is not printed.
	subscribed := false
	for {
		m, err := c.Recv(ctx)
		if err != nil {
			return err
		}
		var head struct {
			Type  string `json:"type"`
			Error string `json:"error"`
		}
		if json.Unmarshal(m.Data, &head) != nil {
			continue
		}
		switch head.Type {
		case "subscribed":
			subscribed = true
			continue
		case "hello":
			continue
		case "error":
			return fmt.Errorf("the server refused the subscription: %s", head.Error)
		}
		if !subscribed {
			continue
		}
		fmt.Fprintln(w.out, string(m.Data))
		if head.Type == "sample" {
			w.got++
			if w.n > 0 && w.got >= w.n {
				return nil
			}
		}
	}
}

var errNoCredentials = errors.New("no credentials: pass -token, or -user and -password (or MONITOR_USER/MONITOR_PASSWORD)")

func login(ctx context.Context, base, user, password string) (string, error) {
	if password == "" {
		return "", errNoCredentials
	}
	body, _ := json.Marshal(map[string]string{"username": user, "password": password})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/v1/auth/login", strings.NewReader(string(body)))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	var out struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error"`
	}
	if err := doJSON(req, &out); err != nil {
		return "", fmt.Errorf("log in as %s at %s: %w", user, base, err)
	}
	return out.AccessToken, nil
}

type quicInfoResp struct {
	CertHashes []pq.CertHash `json:"cert_hashes"`
}

func quicInfo(ctx context.Context, base, token string) (quicInfoResp, error) {
	var out quicInfoResp
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/quic", nil)
	if err != nil {
		return out, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if err := doJSON(req, &out); err != nil {
		return out, fmt.Errorf("fetch the QUIC certificate hashes from %s: %w", base, err)
	}
	return out, nil
}

func doJSON(req *http.Request, out any) error {
	ctx, cancel := context.WithTimeout(req.Context(), 15*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(data, &e)
		// 401 becomes 4401 (CodeUnauthorized): bad credentials end the
		// command instead of reconnecting.
		return &pq.RefusedError{Code: uint64(4000 + resp.StatusCode), Reason: resp.Status + ": " + e.Error}
	}
	return json.Unmarshal(data, out)
}
