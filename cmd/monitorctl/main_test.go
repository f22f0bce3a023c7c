package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/monitorhq/monitor/broker"
	"github.com/monitorhq/monitor/internal/redistest"
)

const adminPwd = "ctl-admin-password"

// TestCommandsAgainstARealBroker drives monitorctl against a broker (a
// cluster of one on a real redis-server): status in text and JSON, a
// refused change without the admin password, a shard added and the
// migration waited for, then drained and removed.
func TestCommandsAgainstARealBroker(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	r1, r2 := redistest.Start(t), redistest.Start(t)
	cfg := broker.DefaultConfig()
	cfg.NodeID = "ctl-1"
	cfg.GRPCListen, cfg.HTTPListen, cfg.Raft.Listen, cfg.DataDir = "127.0.0.1:0", "", "127.0.0.1:0", t.TempDir()
	cfg.Cluster.AdminPassword = adminPwd
	if err := cfg.SetStorageSpec("redis://" + r1.Addr); err != nil {
		t.Fatal(err)
	}
	b, err := broker.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	ctl := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(append([]string{"-broker", b.GRPCAddr(), "-password", adminPwd, "-timeout", "30s"}, args...), &out, &errOut)
		return code, out.String(), errOut.String()
	}

	// The cluster of one elects itself and records its storage ring.
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, out, _ := ctl("-json", "status")
		var st struct {
			LeaderID    string `json:"leaderId"`
			RingVersion string `json:"ringVersion"`
			Members     []any  `json:"members"`
		}
		if code == 0 && json.Unmarshal([]byte(out), &st) == nil && st.LeaderID == "ctl-1" && st.RingVersion == "1" && len(st.Members) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no leader with a ring after 30s: %s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	code, out, _ := ctl("status")
	if code != 0 || !strings.Contains(out, "leader: ctl-1") || !strings.Contains(out, r1.Addr) {
		t.Fatalf("status = %d:\n%s", code, out)
	}

	var errOut bytes.Buffer
	if code := run([]string{"-broker", b.GRPCAddr(), "-password", "wrong", "shard", "add", "r2", r2.Addr}, io.Discard, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), "PermissionDenied") {
		t.Fatalf("a wrong admin password: exit %d, %s", code, errOut.String())
	}
	if code, _, e := ctl("shard", "add", "r2"); code != 2 || !strings.Contains(e, "needs ID and ADDR") {
		t.Fatalf("shard add without an address: exit %d, %s", code, e)
	}
	if code, _, e := ctl("shard", "add", "bad", "127.0.0.1:1"); code != 1 || !strings.Contains(e, "FailedPrecondition") {
		t.Fatalf("an unreachable shard: exit %d, %s", code, e)
	}

	if code, out, e := ctl("shard", "add", "r2", r2.Addr); code != 0 || !strings.Contains(out, "ring version: 2") {
		t.Fatalf("shard add: exit %d\n%s%s", code, out, e)
	}
	if code, out, e := ctl("wait-migration"); code != 0 || !strings.Contains(out, "migration to ring 2 (from 1): done") {
		t.Fatalf("wait-migration: exit %d\n%s%s", code, out, e)
	}
	if code, out, e := ctl("shard", "remove", "r2"); code != 0 || !strings.Contains(out, "draining") {
		t.Fatalf("shard remove: exit %d\n%s%s", code, out, e)
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		code, out, _ := ctl("status")
		if code == 0 && !strings.Contains(out, r2.Addr) && strings.Contains(out, "migration to ring 3 (from 2): done") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("r2 not drained and removed after 30s:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
