package radix_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/monitorhq/monitor/visualization/internal/radix"
)

func matches(x *radix.Index[int], key string) []int {
	var out []int
	x.Match(key, func(id int) { out = append(out, id) })
	slices.Sort(out)
	return out
}

func TestMatch(t *testing.T) {
	x := radix.New[int]()
	x.Add("", 1)     // every key
	x.Add("cpu.", 2) // a prefix
	x.Add("net.rx_", 3)
	x.Add(radix.Exact("web-1"), 4) // a whole key
	x.Add("web-", 5)
	x.Add("cpu.", 2) // twice: kept once
	cases := []struct {
		key  string
		want []int
	}{
		{"cpu.usage_percent", []int{1, 2}},
		{"cpu", []int{1}},
		{"net.rx_bytes_per_sec{interface=eth0}", []int{1, 3}},
		{"net.tx_bytes_per_sec", []int{1}},
		{radix.Exact("web-1"), []int{1, 4, 5}},
		{radix.Exact("web-10"), []int{1, 5}},
		{radix.Exact("db-1"), []int{1}},
	}
	for _, tc := range cases {
		if got := matches(x, tc.key); !slices.Equal(got, tc.want) {
			t.Errorf("Match(%q) = %v, want %v", tc.key, got, tc.want)
		}
	}
	x.Remove("cpu.", 2)
	x.Remove("cpu.", 99) // not there: no-op
	x.Add("cpu.", 6)
	x.Add("cpu.", 7)
	x.Remove("cpu.", 6)
	if got := matches(x, "cpu.usage"); !slices.Equal(got, []int{1, 7}) {
		t.Fatalf("after removals Match = %v, want [1 7]", got)
	}
	if x.Len() != 5 {
		t.Fatalf("Len = %d, want 5 patterns", x.Len())
	}
}

// TestMatchesLinearModel checks random patterns and keys against
// strings.HasPrefix over every pattern, with writers running meanwhile.
func TestMatchesLinearModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := "ab.c_"
	word := func(n int) string {
		var b strings.Builder
		for range n {
			b.WriteByte(alphabet[r.IntN(len(alphabet))])
		}
		return b.String()
	}
	x := radix.New[int]()
	model := map[string][]int{}
	for id := range 300 {
		p := word(r.IntN(5))
		x.Add(p, id)
		model[p] = append(model[p], id)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() { // concurrent writer on ids outside the model
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			x.Add(fmt.Sprint(i%7), 1000+i)
			x.Remove(fmt.Sprint(i%7), 1000+i)
		}
	})
	for range 2000 {
		key := word(r.IntN(8))
		var want []int
		for p, ids := range model {
			if strings.HasPrefix(key, p) {
				want = append(want, ids...)
			}
		}
		slices.Sort(want)
		got := matches(x, key)
		got = slices.DeleteFunc(got, func(id int) bool { return id >= 1000 })
		if !slices.Equal(got, want) {
			t.Fatalf("Match(%q) = %v, want %v", key, got, want)
		}
	}
	close(stop)
	wg.Wait()
}

// benchPatterns is a subscription load: 1,000 clients with metric
// prefixes drawn from the agent's families.
func benchPatterns() []string {
	families := []string{"cpu.", "cpu.usage", "mem.", "mem.used_percent", "net.rx_", "net.tx_", "disk.", "disk.io_", "load.", "fs.", "proc.", "net.", ""}
	var out []string
	for i := range 1000 {
		out = append(out, families[i%len(families)]+strings.Repeat("x", i/len(families)%3))
	}
	return out
}

var benchKeys = []string{"cpu.usage_percent", "mem.used_percent", "net.rx_bytes_per_sec{interface=eth0}", "disk.io_time_percent{device=sda}", "fs.used_percent{mount=/}", "load.1"}

// BenchmarkMatch reports radix matches/s: one Match of a series key
// against 1,000 subscription patterns. BenchmarkMatchLinear is the
// alternative the radix tree must beat: strings.HasPrefix over every
// pattern.
func BenchmarkMatch(b *testing.B) {
	x := radix.New[int]()
	for i, p := range benchPatterns() {
		x.Add(p, i)
	}
	n := 0
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		x.Match(benchKeys[i%len(benchKeys)], func(int) { n++ })
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "matches/s")
}

func BenchmarkMatchLinear(b *testing.B) {
	type entry struct {
		p  string
		id int
	}
	var list []entry
	for i, p := range benchPatterns() {
		list = append(list, entry{p, i})
	}
	n := 0
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		key := benchKeys[i%len(benchKeys)]
		for _, e := range list {
			if strings.HasPrefix(key, e.p) {
				n++
			}
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "matches/s")
}
