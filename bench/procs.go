package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/monitorhq/monitor/pkg/loadgen"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// brokerProc is a bin/broker started by the harness.
type brokerProc struct {
	cmd  *exec.Cmd
	addr string
	log  string
	args string // the command line, for the figures
	done chan error
}

var brokerSeq int

// startBroker runs bin/broker on a free port with storage spec and, when
// yaml is not empty, a config file with those lines; it returns when the
// broker answers.
func (h *harness) startBroker(ctx context.Context, spec, yaml string) (*brokerProc, error) {
	brokerSeq++
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(h.tmp, fmt.Sprintf("broker-%d", brokerSeq))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	args := []string{"-grpc", addr, "-raft", "127.0.0.1:0", "-http", "", "-data", dir, "-node-id", "bench", "-storage", spec}
	shown := "bin/broker -storage " + shownSpec(spec)
	if yaml != "" {
		path := filepath.Join(dir, "broker.yaml")
		if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
			return nil, err
		}
		args = append([]string{"-config", path}, args...)
		shown = "bin/broker -config <" + strings.Join(strings.Fields(yaml), " ") + "> -storage " + shownSpec(spec)
	}
	logPath := filepath.Join(dir, "broker.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	b := &brokerProc{cmd: exec.Command(filepath.Join(h.bin, "broker"), args...), addr: addr, log: logPath, args: shown, done: make(chan error, 1)}
	b.cmd.Stdout, b.cmd.Stderr = logf, logf
	if err := b.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start broker: %w", err)
	}
	go func() {
		b.done <- b.cmd.Wait()
		logf.Close()
	}()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.kill()
		return nil, err
	}
	defer cc.Close()
	client := monitorpb.NewMonitorServiceClient(cc)
	cluster := monitorpb.NewClusterServiceClient(cc)
	deadline := time.Now().Add(20 * time.Second)
	for {
		// Serving, and (a cluster of one) leading with its storage ring
		// recorded, so ingest is not held back at the start of a run.
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err = client.ListHosts(cctx, &monitorpb.ListHostsRequest{})
		if err == nil {
			var st *monitorpb.StatusResponse
			if st, err = cluster.Status(cctx, &monitorpb.StatusRequest{}); err == nil &&
				(st.GetLeaderId() == "" || (strings.HasPrefix(spec, "redis://") && st.GetRingVersion() == 0)) {
				err = errors.New("no raft leader or storage ring yet")
			}
		}
		cancel()
		if err == nil {
			return b, nil
		}
		select {
		case werr := <-b.done:
			return nil, fmt.Errorf("broker exited before serving (%v); log:\n%s", werr, tail(logPath))
		default:
		}
		if time.Now().After(deadline) {
			b.kill()
			return nil, fmt.Errorf("broker not serving after 20s: %v; log:\n%s", err, tail(logPath))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cpu is the CPU time the broker used, after stop.
func (b *brokerProc) cpu() time.Duration {
	if st := b.cmd.ProcessState; st != nil {
		return st.UserTime() + st.SystemTime()
	}
	return 0
}

// stop sends SIGTERM and waits for a clean exit.
func (b *brokerProc) stop() error {
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-b.done:
		if err != nil {
			return fmt.Errorf("broker exited with %v after SIGTERM; log:\n%s", err, tail(b.log))
		}
		return nil
	case <-time.After(30 * time.Second):
		b.kill()
		return fmt.Errorf("broker did not exit within 30s of SIGTERM")
	}
}

func (b *brokerProc) kill() {
	_ = b.cmd.Process.Kill()
	<-b.done
}

// loadgenRun runs bin/loadgen -json in saturation (-interval 0) against
// addr and returns its result, the command line and its CPU time.
func (h *harness) loadgenRun(addr string, hosts int, dur time.Duration, prefix string) (loadgen.Result, string, time.Duration, error) {
	return h.loadgenCmd(addr, []string{"-hosts", strconv.Itoa(hosts), "-interval", "0", "-duration", dur.String(), "-prefix", prefix, "-drain", "30s"})
}

// loadgenCmd runs bin/loadgen -json -broker addr with args (and the
// harness's -metrics) and returns its result, the command line shown in
// the figures (without -prefix and -drain) and its CPU time.
func (h *harness) loadgenCmd(addr string, args []string) (loadgen.Result, string, time.Duration, error) {
	full := append([]string{"-broker", addr, "-metrics", strconv.Itoa(h.p.Metrics), "-json", "-log-level", "warn"}, args...)
	shown := []string{"bin/loadgen -broker ADDR"}
	for i := 0; i < len(args); i++ {
		if (args[i] == "-prefix" || args[i] == "-drain") && i+1 < len(args) {
			i++
			continue
		}
		shown = append(shown, args[i])
	}
	cmd := exec.Command(filepath.Join(h.bin, "loadgen"), full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var cpu time.Duration
	if st := cmd.ProcessState; st != nil {
		cpu = st.UserTime() + st.SystemTime()
	}
	shownCmd := strings.Join(shown, " ") + " -json"
	var res loadgen.Result
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		return res, shownCmd, cpu, fmt.Errorf("loadgen: %v (%v); stderr:\n%s", err, runErr, lastLines(stderr.String(), 20))
	}
	var exit *exec.ExitError
	if runErr != nil && !errors.As(runErr, &exit) {
		return res, shownCmd, cpu, fmt.Errorf("loadgen: %w", runErr)
	}
	return res, shownCmd, cpu, nil
}

func shownSpec(spec string) string {
	if strings.HasPrefix(spec, "redis://") {
		return "redis://REDIS"
	}
	return spec
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	return lastLines(string(b), 20)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
