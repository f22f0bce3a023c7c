package main

import (
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSampleValues(t *testing.T) {
	var got []string
	sampleValues([]byte(`{"type":"sample","host":"h","ts":5,"samples":[{"series":"cpu.usage_percent","value":1764460800123.456,"unit":"%"},{"series":"x{a=b}","value":-2e-07,"unit":""}]}`),
		func(series []byte, v float64) { got = append(got, string(series)+"="+trim(v)) })
	if strings.Join(got, " ") != "cpu.usage_percent=1764460800123 x{a=b}=-0.000" {
		t.Fatalf("got %q", got)
	}
	got = nil
	sampleValues([]byte(`{"type":"topk","data":{"series":"a","value":1}}`), func(series []byte, v float64) { got = append(got, string(series)) })
	if len(got) != 0 {
		t.Fatalf("a topk message gave samples %q", got)
	}
}

func TestReportAndPlot(t *testing.T) {
	dir := t.TempDir()
	md := filepath.Join(dir, "B.md")
	if err := os.WriteFile(md, []byte("# hand\n"+reportBegin+"\nold\n"+reportEnd+"\n## tail\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res := &results{Mode: "full", Figures: []figure{
		{Name: "ingest x", Value: 2, Unit: "snapshots/s", Runs: []float64{1, 2, 3}, Command: "cmd a", Phase: "ingest"},
		{Name: "e2e p99 | pipe", Value: 4, Unit: "ms", Command: "cmd b", Phase: "e2e"},
	}, Growth: []growthPoint{
		{Hosts: 1000, IntervalS: 5, OfferedPerS: 200, AchievedPerS: 200, BrokerCPUUS: 90, BrokerRSSMB: 60, RedisMB: 20, Command: "g"},
		{Hosts: 10000, IntervalS: 5, OfferedPerS: 2000, AchievedPerS: 1990, BrokerCPUUS: 70, BrokerRSSMB: 400, RedisMB: 200, Command: "g"},
		{Hosts: 50000, IntervalS: 5, OfferedPerS: 10000, AchievedPerS: 4000, BrokerCPUUS: 80, BrokerRSSMB: 1800, RedisMB: 900, Command: "g", ThroughputCap: true},
	}}
	res.Figures = append(res.Figures, figure{Name: "growth a", Phase: "growth"})
	plot := filepath.Join(dir, "img", "growth.png")
	if p := os.Getenv("PLOT_OUT"); p != "" {
		plot = p
	}
	if err := writeReport(md, plot, res); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(md)
	out := string(b)
	for _, want := range []string{"# hand\n", "## tail", "Command: `cmd a`", `e2e p99 \| pipe`, "| 50000 every 5s | 10000/s | 4000/s (**saturated**)", "(" + plot + ")"} {
		if !strings.Contains(out, want) {
			t.Fatalf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\nold\n") {
		t.Fatal("the old generated part is still there")
	}
	f, err := os.Open(plot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if img.Bounds().Dx() < 500 {
		t.Fatalf("plot is %v", img.Bounds())
	}
	// No markers: an error naming them.
	if err := os.WriteFile(md, []byte("# none\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeReport(md, plot, res); err == nil || !strings.Contains(err.Error(), "markers") {
		t.Fatalf("no markers: %v", err)
	}
}

func TestMergeKeepsOtherPhases(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "r.json")
	old := &results{Figures: []figure{{Name: "a", Phase: "ingest"}, {Name: "b", Phase: "e2e"}}, Growth: []growthPoint{{Hosts: 1}}}
	if err := writeJSON(path, old); err != nil {
		t.Fatal(err)
	}
	cur := &results{Started: "now", Figures: []figure{{Name: "c", Phase: "e2e"}}, Loadgen: map[string][]any{}}
	m := mergeResults(path, cur, map[string]bool{"e2e": true})
	var names []string
	for _, f := range m.Figures {
		names = append(names, f.Name)
	}
	if strings.Join(names, ",") != "a,c" || len(m.Growth) != 1 {
		t.Fatalf("merged %v, growth %v", names, m.Growth)
	}
}
