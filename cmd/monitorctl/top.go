package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/monitorhq/monitor/visualization/topkshm"
)

// topCmd runs `top`: it reads the Top-K shared-memory segment the
// visualization server on this machine exports (no broker, no network) and
// prints every metric's ranked hosts, or the snapshot as JSON. It returns
// the exit code.
func topCmd(args []string, asJSON bool, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("top", flag.ContinueOnError)
	flags.SetOutput(stderr)
	name := flags.String("shm", topkshm.DefaultName, "shared-memory name of the visualization server's Top-K export")
	metric := flags.String("metric", "", "show only this metric (full series name, e.g. net.rx_bytes_per_sec{iface=eth0})")
	k := flags.Int("k", 0, "show at most this many hosts per metric (0: all the segment holds)")
	flags.BoolVar(&asJSON, "json", asJSON, "print the snapshot as JSON")
	flags.Usage = func() {
		fmt.Fprintln(stderr, "usage: monitorctl top [-shm NAME] [-metric M] [-k N] [-json]")
		flags.PrintDefaults()
	}
	if err := flags.Parse(args); err != nil {
		return 2
	}
	if flags.NArg() > 0 {
		fmt.Fprintf(stderr, "monitorctl: top takes no arguments, got %q\n", flags.Args())
		return 2
	}
	if *k < 0 {
		fmt.Fprintf(stderr, "monitorctl: top -k %d: want 0 (all) or more\n", *k)
		return 2
	}
	snap, err := topkshm.ReadShared(*name)
	if err != nil {
		fmt.Fprintln(stderr, "monitorctl:", explainTopErr(*name, err))
		return 1
	}
	all := snap.Metrics
	snap.Metrics = filterTop(all, *metric, *k)
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(snap); err != nil {
			fmt.Fprintln(stderr, "monitorctl: write top-k snapshot:", err)
			return 1
		}
		return 0
	}
	printTop(stdout, *name, snap, all, *metric, time.Now())
	return 0
}

// explainTopErr turns ReadShared's errors into what the user can do.
func explainTopErr(name string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("no top-k segment %s on this machine: the visualization server running here creates it "+
			"(its Top-K export: config key topk.shm_name, default %s) and removes it when it stops; start it, or pass -shm NAME (%w)",
			name, topkshm.DefaultName, err)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("top-k segment %s is readable only by the user running the visualization server (mode 0600); "+
			"run monitorctl top as that user (%w)", name, err)
	case errors.Is(err, topkshm.ErrBusy):
		return fmt.Errorf("top-k segment %s changed during every read for a second; try again (%w)", name, err)
	case errors.Is(err, topkshm.ErrNotTopK):
		return fmt.Errorf("%s is not a top-k segment the visualization server wrote (%w)", name, err)
	}
	return err
}

// filterTop keeps metric only (all when empty) and at most k entries each
// (all when 0).
func filterTop(all []topkshm.MetricTop, metric string, k int) []topkshm.MetricTop {
	out := []topkshm.MetricTop{}
	for _, mt := range all {
		if metric != "" && mt.Metric != metric {
			continue
		}
		if k > 0 && len(mt.Entries) > k {
			mt.Entries = mt.Entries[:k]
		}
		out = append(out, mt)
	}
	return out
}

// printTop writes one row per ranked host: metric, rank, host, value and
// the age of its sample (marked once past the segment's TTL, which a
// stopped writer leaves behind).
func printTop(w io.Writer, name string, snap topkshm.Snapshot, all []topkshm.MetricTop, metric string, now time.Time) {
	updated := "never"
	if snap.Seq > 0 {
		updated = fmtAge(now.Sub(snap.Updated)) + " ago"
	}
	fmt.Fprintf(w, "top-k segment %s: k %d, ttl %s, %d metrics, updated %s\n", name, snap.K, snap.TTL, len(all), updated)
	if len(snap.Metrics) == 0 {
		switch {
		case metric == "":
			fmt.Fprintln(w, "no metric has a ranked host yet")
		case len(all) == 0:
			fmt.Fprintf(w, "no hosts for metric %q: the segment holds no metric yet\n", metric)
		default:
			names := make([]string, len(all))
			for i, mt := range all {
				names[i] = mt.Metric
			}
			fmt.Fprintf(w, "no hosts for metric %q; the segment holds: %s\n", metric, strings.Join(names, ", "))
		}
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "METRIC\tRANK\tHOST\tVALUE\tAGE")
	for _, mt := range snap.Metrics {
		for i, e := range mt.Entries {
			age := now.Sub(time.Unix(e.TS, 0))
			ageText := fmtAge(age)
			if snap.TTL > 0 && age >= snap.TTL {
				ageText += " (expired)"
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", mt.Metric, i+1, e.Host, fmtValue(e.Value), ageText)
		}
	}
	tw.Flush()
}

// fmtValue prints integers whole, other values with two decimals, and
// small or huge ones in exponent form (-json has the exact values).
func fmtValue(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1e15 || (a < 0.01 && a != 0):
		return strconv.FormatFloat(v, 'g', 3, 64)
	case v == math.Trunc(v):
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	s := strconv.FormatFloat(v, 'f', 2, 64)
	return strings.TrimSuffix(strings.TrimRight(s, "0"), ".")
}

// fmtAge prints d in whole seconds with the two largest units: 42s, 5m03s,
// 3h07m, 2d05h.
func fmtAge(d time.Duration) string {
	sign := ""
	if d < 0 {
		sign, d = "-", -d
	}
	s := int64(d.Round(time.Second) / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%s%ds", sign, s)
	case s < 3600:
		return fmt.Sprintf("%s%dm%02ds", sign, s/60, s%60)
	case s < 48*3600:
		return fmt.Sprintf("%s%dh%02dm", sign, s/3600, s%3600/60)
	}
	return fmt.Sprintf("%s%dd%02dh", sign, s/86400, s%86400/3600)
}
