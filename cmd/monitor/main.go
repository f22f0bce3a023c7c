// Command monitor is the all-in-one binary. `monitor standalone` runs a
// broker, the visualization server and a local agent in one process — the
// first-run experience: one command, then open the printed URL.
//
//	monitor standalone [-data DIR] [-http ADDR] [-quic ADDR] [-grpc ADDR]
//	                   [-storage SPEC] [-admin-password PW] [-viewer-password PW]
//	                   [-interval DUR] [-tls-cert FILE -tls-key FILE]
//	                   [-agent-auth=false]
//
// The three components talk over real gRPC on loopback, exactly as separate
// processes would. The UI and API need a login: user "admin" with the
// admin password (-admin-password, $MONITOR_ADMIN_PASSWORD, or generated
// and printed once). -viewer-password (or $MONITOR_VIEWER_PASSWORD) adds a
// read-only user "viewer"; without it there is none. The JWT secret is
// random per start unless $MONITOR_JWT_SECRET sets one.
//
// Agents authenticate (docs/security.md "Agent identity"): the broker takes
// tokens signed by an agent secret — $MONITOR_AGENT_SECRET, else random per
// start — and the local agent gets its token, sent in clear text only
// because the broker is on loopback. Another agent on this machine can join
// with a token from `monitorctl agent-token` under the same
// $MONITOR_AGENT_SECRET. -agent-auth=false lets tokenless clients write
// (a simulated fleet such as bin/loadgen on this machine). -tls-cert and
// -tls-key serve the UI and API over HTTPS (and wss:). Shutdown
// (SIGINT/SIGTERM) runs in reverse start order: the agent flushes what it
// holds and waits for acks, then the visualization server stops, then the
// broker drains and closes storage.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/monitorhq/monitor/pkg/config"
	"github.com/monitorhq/monitor/pkg/grpcauth"
	"github.com/monitorhq/monitor/pkg/tlsconfig"

	"github.com/monitorhq/monitor/agent"
	"github.com/monitorhq/monitor/broker"
	"github.com/monitorhq/monitor/visualization"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != "standalone" {
		fmt.Fprintln(os.Stderr, "usage: monitor standalone [-data DIR] [-http ADDR] [-quic ADDR] [-grpc ADDR] [-storage SPEC] [-admin-password PW] [-viewer-password PW] [-interval DUR] [-tls-cert FILE -tls-key FILE] [-agent-auth=false]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := standalone(ctx, os.Args[2:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "monitor standalone:", err)
		os.Exit(1)
	}
}

type standaloneFlags struct {
	data, http, quic, grpc, storage, password, viewerPassword, interval, logLevel string
	tlsCert, tlsKey                                                               string
	agentAuth                                                                     bool
}

func standalone(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("standalone", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f standaloneFlags
	fs.StringVar(&f.data, "data", "data", "data directory (embedded storage)")
	fs.StringVar(&f.http, "http", "127.0.0.1:8080", "HTTP address of the UI, API and WebSocket (login required; plaintext unless -tls-cert, so keep it on loopback or behind a TLS proxy)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate: serve the UI, API and WebSocket over HTTPS (with -tls-key; re-read when the file changes)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM private key of -tls-cert")
	fs.BoolVar(&f.agentAuth, "agent-auth", true, "require agent tokens (secret from $MONITOR_AGENT_SECRET, else random per start; the local agent gets its token); false lets tokenless clients such as bin/loadgen write")
	fs.StringVar(&f.quic, "quic", ":8081", "UDP address of the QUIC channel (WebTransport for browsers, native QUIC for monitorctl watch); empty: off")
	fs.StringVar(&f.grpc, "grpc", "127.0.0.1:9093", "the in-process broker's gRPC address")
	fs.StringVar(&f.storage, "storage", "embedded", "embedded, or redis://[user:pass@]host:port[/db][,redis://...]")
	fs.StringVar(&f.password, "admin-password", "", "admin password (default: $MONITOR_ADMIN_PASSWORD, else generated and printed)")
	fs.StringVar(&f.viewerPassword, "viewer-password", "", "password of an optional read-only user \"viewer\" (default: $MONITOR_VIEWER_PASSWORD; empty: no viewer user)")
	fs.StringVar(&f.interval, "interval", "5s", "the local agent's collection interval")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (flags only)", fs.Arg(0))
	}
	logger, err := config.Logger(f.logLevel, stderr)
	if err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return errors.New("-tls-cert and -tls-key go together: give both (HTTPS) or neither")
	}
	uiTLS := tlsconfig.Config{Enabled: f.tlsCert != "", CertFile: f.tlsCert, KeyFile: f.tlsKey, ClientAuth: tlsconfig.ClientAuthNone}
	if err := uiTLS.ValidateServer("tls"); err != nil {
		return fmt.Errorf("-tls-cert/-tls-key: %w", err)
	}
	// The agent secret signs the agents' tokens; like the cluster secret
	// it is random per start unless the environment fixes it (then other
	// agents on this machine can be given tokens that survive restarts).
	agentSecret := os.Getenv("MONITOR_AGENT_SECRET")
	if f.agentAuth && agentSecret == "" {
		agentSecret = randomPassword() + randomPassword()
	}
	if f.agentAuth && len(agentSecret) < grpcauth.MinSecretLen {
		return fmt.Errorf("MONITOR_AGENT_SECRET is %d characters; use at least %d", len(agentSecret), grpcauth.MinSecretLen)
	}

	password := f.password
	if password == "" {
		password = os.Getenv("MONITOR_ADMIN_PASSWORD")
	}
	generated := password == ""
	if generated {
		password = randomPassword()
	}
	// The broker and the visualization server share a random cluster
	// secret (alert rules live in the broker's control plane); the admin
	// password also authorizes monitorctl against the broker.
	clusterSecret := randomPassword() + randomPassword()

	if !grpcauth.IsLoopback(localDialAddr(f.grpc)) {
		return fmt.Errorf("-grpc %s: the cluster secret (and the local agent's token) go to the broker without TLS, so only on this machine; listen on 127.0.0.1, ::1 or every interface (:9093)", f.grpc)
	}

	bcfg := broker.DefaultConfig()
	bcfg.NodeID = "standalone"
	bcfg.Cluster.Secret = clusterSecret
	if len(password) >= 8 {
		bcfg.Cluster.AdminPassword = password
	}
	if f.agentAuth {
		bcfg.Auth.AgentSecrets = []string{agentSecret}
	}
	bcfg.GRPCListen = f.grpc
	bcfg.HTTPListen = "" // the visualization server's /healthz covers standalone
	bcfg.DataDir = f.data
	bcfg.Raft.Listen = "127.0.0.1:0" // a cluster of one: no other member dials it
	if err := bcfg.SetStorageSpec(f.storage); err != nil {
		return fmt.Errorf("-storage: %w", err)
	}
	b, err := broker.New(ctx, bcfg, logger.With("component", "broker"))
	if err != nil {
		return err
	}

	hash, err := visualization.HashPassword(password)
	if err != nil {
		return err
	}
	// The visualization server and the agent dial the broker on loopback,
	// where the cluster secret and the agent token may go without TLS.
	brokerAddr := localDialAddr(b.GRPCAddr())
	vcfg := visualization.DefaultConfig()
	vcfg.HTTPListen = f.http
	vcfg.TLS = uiTLS
	vcfg.QUICListen = f.quic
	vcfg.Brokers = []string{brokerAddr}
	vcfg.ClusterSecret = visualization.Secret(clusterSecret)
	// The admin password is the admin user's, kept only as a bcrypt hash;
	// the JWT secret is random per start unless MONITOR_JWT_SECRET sets one
	// (tokens then survive a restart).
	vcfg.Auth.Users = []visualization.UserConfig{{Username: "admin", PasswordHash: hash, Role: "admin"}}
	viewerPassword := f.viewerPassword
	if viewerPassword == "" {
		viewerPassword = os.Getenv("MONITOR_VIEWER_PASSWORD")
	}
	if viewerPassword != "" {
		vhash, err := visualization.HashPassword(viewerPassword)
		if err != nil {
			return fmt.Errorf("-viewer-password: %w", err)
		}
		vcfg.Auth.Users = append(vcfg.Auth.Users, visualization.UserConfig{Username: "viewer", PasswordHash: vhash, Role: "viewer"})
	}
	vcfg.FromEnv(os.Getenv)
	if vcfg.Auth.JWTSecret == "" {
		vcfg.Auth.JWTSecret = visualization.RandomSecret()
	}
	if err := vcfg.Validate(); err != nil {
		return err
	}
	v, err := visualization.New(vcfg, logger.With("component", "visualization"))
	if err != nil {
		return err
	}

	acfg := agent.DefaultConfig()
	acfg.Brokers = []string{brokerAddr}
	acfg.DataDir = filepath.Join(f.data, "agent") // the spool of unacknowledged snapshots
	if err := acfg.SetInterval(f.interval); err != nil {
		return fmt.Errorf("-interval: %w", err)
	}
	if f.agentAuth {
		tok, err := grpcauth.Mint([]byte(agentSecret), acfg.HostID)
		if err != nil {
			return fmt.Errorf("the local agent's token: %w", err)
		}
		acfg.Token, acfg.InsecureLoopbackToken = tok, true
	}
	if err := acfg.Validate(); err != nil {
		return err
	}
	a, err := agent.New(acfg, logger.With("component", "agent"))
	if err != nil {
		return err
	}

	scheme := "http"
	if uiTLS.Enabled {
		scheme = "https"
	}
	agents := "token required (other agents: monitorctl agent-token under $MONITOR_AGENT_SECRET)"
	switch {
	case !f.agentAuth:
		agents = "not authenticated (-agent-auth=false)"
	case os.Getenv("MONITOR_AGENT_SECRET") == "":
		agents = "token required (secret generated per start; set $MONITOR_AGENT_SECRET to add agents)"
	}
	fmt.Fprintf(stdout, "monitor standalone is running\n  UI and API:  %s://%s/\n  broker gRPC: %s\n  agents:      %s\n  storage:     %s\n  host:        %s\n  login:       admin\n", scheme, v.Addr(), b.GRPCAddr(), agents, describeStorage(bcfg), acfg.HostID)
	if viewerPassword != "" {
		fmt.Fprintf(stdout, "  read-only:   viewer\n")
	}
	if generated {
		fmt.Fprintf(stdout, "  admin password (generated, shown once): %s\n", password)
	}

	// Each component gets its own context so they stop in order.
	type comp struct {
		name     string
		cancel   context.CancelFunc
		finished chan struct{}
		err      error
	}
	anyDone := make(chan *comp, 3)
	start := func(name string, run func(context.Context) error) *comp {
		c := &comp{name: name, finished: make(chan struct{})}
		cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		c.cancel = cancel
		go func() {
			c.err = run(cctx)
			close(c.finished)
			anyDone <- c
		}()
		return c
	}
	comps := []*comp{start("broker", b.Run), start("visualization", v.Run), start("agent", a.Run)}

	var firstErr error
	select {
	case <-ctx.Done():
	case c := <-anyDone:
		firstErr = c.err
		if firstErr == nil {
			firstErr = fmt.Errorf("%s stopped unexpectedly", c.name)
		}
	}
	logger.Info("shutting down: agent, then visualization, then broker")
	for i := len(comps) - 1; i >= 0; i-- {
		c := comps[i]
		c.cancel()
		<-c.finished
		if c.err != nil && !errors.Is(c.err, context.Canceled) && firstErr == nil {
			firstErr = fmt.Errorf("%s: %w", c.name, c.err)
		}
	}
	return firstErr
}

// localDialAddr is how a client on this machine reaches a listen address:
// an unspecified host (":9093", "0.0.0.0", "[::]") is dialed at loopback.
func localDialAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if ip != nil && ip.To4() == nil {
			return net.JoinHostPort("::1", port)
		}
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}

func describeStorage(c broker.Config) string {
	if c.Storage.Backend == "redis" {
		return fmt.Sprintf("redis (%d shard(s))", len(c.Storage.Redis.Shards))
	}
	return "embedded in " + c.DataDir
}

func randomPassword() string {
	b := make([]byte, 15)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux (Go ≥1.24 panics instead)
	return base64.RawURLEncoding.EncodeToString(b)
}
