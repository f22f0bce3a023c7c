//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/monitorhq/monitor/visualization/topkshm"
)

// topSegment publishes metrics to a fresh segment with topkshm's writer
// (the Go engine's export), in one write section unless there are none,
// and returns its name.
func topSegment(t *testing.T, ttl time.Duration, metrics ...topkshm.MetricTop) string {
	t.Helper()
	name := fmt.Sprintf("/monitorctl-top-test-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "_"))
	w, err := topkshm.Create(name, 3, 8, ttl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	if len(metrics) == 0 {
		return name
	}
	if err := w.Begin(); err != nil {
		t.Fatal(err)
	}
	for id, mt := range metrics {
		if err := w.WriteSlot(id, mt.Metric, mt.Entries); err != nil {
			t.Fatal(err)
		}
	}
	w.End(time.Now())
	return name
}

// TestTopPrintsTheSegment writes a segment as the visualization server
// does and runs `monitorctl top` on it: the table (ranks, hosts, values,
// ages, an expired entry marked), -metric and -k, -json in both places,
// and usage errors.
func TestTopPrintsTheSegment(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	now := time.Now().Unix()
	cpu := topkshm.MetricTop{Metric: "cpu.usage", Entries: []topkshm.Entry{
		{Host: "web-1", Value: 97.5, TS: now - 30},
		{Host: "web-2", Value: 88, TS: now - 40},
		{Host: "db-1", Value: 12.3456, TS: now - 7200}, // past the TTL: a stopped writer's leftover
	}}
	rx := topkshm.MetricTop{Metric: "net.rx_bytes_per_sec{iface=eth0}", Entries: []topkshm.Entry{
		{Host: "web-2", Value: 1.25e6, TS: now - 5},
	}}
	name := topSegment(t, time.Hour, cpu, rx)
	ctl := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(args, &out, &errOut)
		return code, out.String(), errOut.String()
	}

	code, out, errOut := ctl("top", "-shm", name)
	if code != 0 {
		t.Fatalf("top: exit %d: %s", code, errOut)
	}
	for _, re := range []string{
		`^top-k segment ` + regexp.QuoteMeta(name) + `: k 3, ttl 1h0m0s, 2 metrics, updated \d+s ago\n`,
		`\nMETRIC +RANK +HOST +VALUE +AGE\n`,
		`\ncpu\.usage +1 +web-1 +97\.5 +\d+s\n`,
		`\ncpu\.usage +2 +web-2 +88 +\d+s\n`,
		`\ncpu\.usage +3 +db-1 +12\.35 +[12]h\d\dm \(expired\)\n`,
		`\nnet\.rx_bytes_per_sec\{iface=eth0\} +1 +web-2 +1250000 +\d+s\n$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("top output lacks %s:\n%s", re, out)
		}
	}

	code, out, _ = ctl("top", "-shm", name, "-metric", "cpu.usage", "-k", "2")
	if code != 0 || !strings.Contains(out, "web-2") || strings.Contains(out, "db-1") || strings.Contains(out, "net.rx") {
		t.Errorf("top -metric cpu.usage -k 2: exit %d:\n%s", code, out)
	}
	code, out, _ = ctl("top", "-shm", name, "-metric", "disk.used_percent")
	if code != 0 || !strings.Contains(out, `no hosts for metric "disk.used_percent"; the segment holds: cpu.usage, net.rx_bytes_per_sec{iface=eth0}`) {
		t.Errorf("top -metric for an absent metric: exit %d:\n%s", code, out)
	}

	for _, args := range [][]string{{"top", "-shm", name, "-json"}, {"-json", "top", "-shm", name}} {
		code, out, errOut = ctl(args...)
		var snap topkshm.Snapshot
		if code != 0 {
			t.Fatalf("%q: exit %d: %s", args, code, errOut)
		}
		if err := json.Unmarshal([]byte(out), &snap); err != nil {
			t.Fatalf("%q: %v:\n%s", args, err, out)
		}
		if snap.K != 3 || snap.TTL != time.Hour || snap.Seq != 2 || !reflect.DeepEqual(snap.Metrics, []topkshm.MetricTop{cpu, rx}) {
			t.Errorf("%q: snapshot %+v", args, snap)
		}
	}
	code, out, _ = ctl("top", "-shm", name, "-json", "-metric", "net.rx_bytes_per_sec{iface=eth0}")
	var only topkshm.Snapshot
	if code != 0 || json.Unmarshal([]byte(out), &only) != nil || !reflect.DeepEqual(only.Metrics, []topkshm.MetricTop{rx}) {
		t.Errorf("top -json -metric: exit %d:\n%s", code, out)
	}

	for _, args := range [][]string{{"top", "-k", "-1"}, {"top", "extra"}, {"top", "-nosuchflag"}} {
		if code, _, _ := ctl(args...); code != 2 {
			t.Errorf("%q: exit %d, want 2 (usage)", args, code)
		}
	}
}

// TestTopEmptySegment reads a segment the server created but has not
// published to yet.
func TestTopEmptySegment(t *testing.T) {
	name := topSegment(t, time.Minute)
	var out, errOut bytes.Buffer
	if code := run([]string{"top", "-shm", name}, &out, &errOut); code != 0 ||
		!strings.Contains(out.String(), "updated never") || !strings.Contains(out.String(), "no metric has a ranked host yet") {
		t.Fatalf("exit %d:\n%s%s", code, out.String(), errOut.String())
	}
}

// TestTopMissingSegment checks that a missing segment says who creates it
// and exits 1, and that a bad name is refused.
func TestTopMissingSegment(t *testing.T) {
	name := fmt.Sprintf("/monitorctl-top-test-missing-%d", os.Getpid())
	var out, errOut bytes.Buffer
	code := run([]string{"top", "-shm", name}, &out, &errOut)
	msg := errOut.String()
	if code != 1 || out.Len() != 0 || !strings.Contains(msg, "no top-k segment "+name+" on this machine") ||
		!strings.Contains(msg, "the visualization server running here creates it") || !strings.Contains(msg, topkshm.DefaultName) {
		t.Fatalf("exit %d, stderr:\n%s", code, msg)
	}
	errOut.Reset()
	if code := run([]string{"top", "-shm", "no-slash"}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), `shm name "no-slash"`) {
		t.Fatalf("bad name: exit %d, stderr:\n%s", code, errOut.String())
	}
}

// TestFmtAgeAndValue pins the table's age and value formats.
func TestFmtAgeAndValue(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{1499 * time.Millisecond, "1s"},
		{59 * time.Second, "59s"},
		{61 * time.Second, "1m01s"},
		{3*time.Hour + 7*time.Minute + 5*time.Second, "3h07m"},
		{47*time.Hour + 59*time.Minute, "47h59m"},
		{53 * time.Hour, "2d05h"},
		{-3 * time.Second, "-3s"},
	} {
		if got := fmtAge(c.d); got != c.want {
			t.Errorf("fmtAge(%s) = %q, want %q", c.d, got, c.want)
		}
	}
	for _, c := range []struct {
		v    float64
		want string
	}{
		{0, "0"},
		{97.5, "97.5"},
		{12.3456, "12.35"},
		{-4, "-4"},
		{1.25e6, "1250000"},
		{0.001234, "0.00123"},
		{3e18, "3e+18"},
	} {
		if got := fmtValue(c.v); got != c.want {
			t.Errorf("fmtValue(%v) = %q, want %q", c.v, got, c.want)
		}
	}
}
