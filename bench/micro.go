package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// microBenches are the go test benchmarks summarised in the results:
// ring lookup, the agent's C ring against its Go twin (and a channel),
// the Top-K engines (C++ against the Go twin) and the push hub's radix
// matcher against a linear scan.
var microBenches = []struct{ pkg, bench string }{
	{"./pkg/hash", "^BenchmarkLookup$"},
	{"./agent/internal/c", "^BenchmarkPushPop$"},
	{"./visualization/internal/topk", "^BenchmarkUpdate$"},
	{"./visualization/internal/radix", "^BenchmarkMatch(Linear)?$"},
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(-\d+)?\s+(\d+)\s+(.*)$`)

// micro runs go test -bench on each package (-count 3, medians) and adds
// one figure per benchmark: ns/op, with the other reported metrics in the
// note.
func (h *harness) micro(ctx context.Context) error {
	const count, benchtime = 3, "200ms"
	for _, mb := range microBenches {
		args := []string{"test", "-run", "^$", "-bench", mb.bench, "-benchtime", benchtime, "-count", strconv.Itoa(count), mb.pkg}
		cmd := exec.CommandContext(ctx, "go", args...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			h.fail("go %s: %v\n%s%s", strings.Join(args, " "), err, lastLines(out.String(), 20), lastLines(errb.String(), 20))
			continue
		}
		type acc struct {
			ns    []float64
			other map[string][]float64
		}
		byName := map[string]*acc{}
		var order []string
		sc := bufio.NewScanner(&out)
		for sc.Scan() {
			m := benchLine.FindStringSubmatch(sc.Text())
			if m == nil {
				continue
			}
			a := byName[m[1]]
			if a == nil {
				a = &acc{other: map[string][]float64{}}
				byName[m[1]] = a
				order = append(order, m[1])
			}
			f := strings.Fields(m[4])
			for i := 0; i+1 < len(f); i += 2 {
				v, err := strconv.ParseFloat(f[i], 64)
				if err != nil {
					continue
				}
				if f[i+1] == "ns/op" {
					a.ns = append(a.ns, v)
				} else {
					a.other[f[i+1]] = append(a.other[f[i+1]], v)
				}
			}
		}
		if len(order) == 0 {
			h.fail("go %s: no benchmark results:\n%s", strings.Join(args, " "), lastLines(out.String(), 20))
			continue
		}
		shown := "go " + strings.Join(args, " ")
		for _, name := range order {
			a := byName[name]
			var notes []string
			for _, unit := range []string{"ns/value", "matches/s", "B/op", "allocs/op"} {
				if vs := a.other[unit]; len(vs) > 0 {
					notes = append(notes, fmt.Sprintf("%s %s", trim(median(vs)), unit))
				}
			}
			h.add(figure{Name: "micro " + strings.TrimPrefix(mb.pkg, "./") + " " + name, Unit: "ns/op", Runs: a.ns, Command: shown, Note: strings.Join(notes, ", ")})
		}
	}
	return nil
}
