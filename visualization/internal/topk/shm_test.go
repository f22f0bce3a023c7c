//go:build linux

package topk

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/monitorhq/monitor/visualization/topkshm"
)

const (
	envChildShm  = "TOPK_TEST_SHM_CHILD"
	tornK        = 8
	tornMetrics  = 3
	childRounds  = 300 // distinct writer rounds the reader must see
	childTimeout = 20 * time.Second
)

// tornValue is host i's value in writer round r: every round reorders the
// hosts, and a snapshot is consistent only if every entry of every metric
// comes from the same round.
func tornValue(r, i int) float64 { return float64(r*1000 + (i+r)%tornK) }

// checkRound verifies the consistency invariant of one snapshot and
// returns its round.
func checkRound(s topkshm.Snapshot) (int, error) {
	if len(s.Metrics) != tornMetrics {
		return 0, fmt.Errorf("%d metrics, want %d", len(s.Metrics), tornMetrics)
	}
	round := -1
	for _, mt := range s.Metrics {
		if len(mt.Entries) != tornK {
			return 0, fmt.Errorf("metric %s: %d entries", mt.Metric, len(mt.Entries))
		}
		for j, e := range mt.Entries {
			r := int(e.Value) / 1000
			if round == -1 {
				round = r
			}
			var i int
			if _, err := fmt.Sscanf(e.Host, "h%d", &i); err != nil || r != round || e.Value != tornValue(r, i) {
				return 0, fmt.Errorf("torn snapshot seq %d: metric %s entry %d = %+v in round %d", s.Seq, mt.Metric, j, e, round)
			}
			if j > 0 && mt.Entries[j-1].Value <= e.Value {
				return 0, fmt.Errorf("metric %s not sorted at %d: %v", mt.Metric, j, mt.Entries)
			}
		}
	}
	return round, nil
}

// TestSharedMemoryReaderInAnotherProcess runs a writer here that rewrites
// the whole top K of three metrics in every round (one UpdateMany, so one
// seqlock section), and ReadShared in a child process (this test binary,
// re-executed) that verifies every snapshot it reads is one round whole,
// until it has seen childRounds distinct rounds.
func TestSharedMemoryReaderInAnotherProcess(t *testing.T) {
	for _, im := range engines {
		t.Run(im.name, func(t *testing.T) {
			name := shmName(t)
			clk := &clock{t: time.Unix(1_700_000_000, 0)}
			e, err := im.make(Options{K: tornK, ShmName: name, Now: clk.Now})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			ts := clk.Now().Unix()
			batch := make([]Sample, 0, tornK*tornMetrics)
			write := func(r int) {
				batch = batch[:0]
				for m := range tornMetrics {
					for i := range tornK {
						batch = append(batch, Sample{Metric: fmt.Sprintf("metric.%d", m), Host: fmt.Sprintf("h%d", i), Value: tornValue(r, i), TS: ts})
					}
				}
				e.UpdateMany(batch)
			}
			write(1)

			cmd := exec.Command(os.Args[0], "-test.run=^TestSharedReaderChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), envChildShm+"="+name)
			var out strings.Builder
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			var werr error
			rounds := 1
		loop:
			for r := 2; ; r++ {
				select {
				case werr = <-done:
					rounds = r
					break loop
				default:
					write(r)
				}
			}
			if werr != nil {
				t.Fatalf("reader process: %v\n%s", werr, out.String())
			}
			if !strings.Contains(out.String(), "reader ok") {
				t.Fatalf("reader process did not run the check:\n%s", out.String())
			}
			t.Logf("writer rounds %d; %s", rounds, firstLine(out.String(), "reader ok"))
		})
	}
}

func firstLine(s, prefix string) string {
	for _, l := range strings.Split(s, "\n") {
		if i := strings.Index(l, prefix); i >= 0 {
			return l[i:]
		}
	}
	return ""
}

// TestSharedReaderChild is the reader half of
// TestSharedMemoryReaderInAnotherProcess; it runs only in the child.
func TestSharedReaderChild(t *testing.T) {
	name := os.Getenv(envChildShm)
	if name == "" {
		t.Skip("runs only as the child of TestSharedMemoryReaderInAnotherProcess")
	}
	deadline := time.Now().Add(childTimeout)
	reads, last, distinct := 0, 0, 0
	for distinct < childRounds {
		if time.Now().After(deadline) {
			t.Fatalf("after %d reads saw %d distinct rounds, want %d", reads, distinct, childRounds)
		}
		s, err := topkshm.ReadShared(name)
		if errors.Is(err, topkshm.ErrBusy) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		reads++
		r, err := checkRound(s)
		if err != nil {
			t.Fatal(err)
		}
		if r < last {
			t.Fatalf("round went back from %d to %d", last, r)
		}
		if r > last {
			distinct++
			last = r
		}
	}
	fmt.Println("reader ok: reads " + strconv.Itoa(reads) + ", distinct rounds " + strconv.Itoa(distinct))
}
