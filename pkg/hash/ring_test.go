package hash

import (
	"fmt"
	"slices"
	"strconv"
	"testing"
)

func members(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "10.0.0." + strconv.Itoa(i+1) + ":6379"
	}
	return out
}

func hostIDs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("host-%05d", i)
	}
	return out
}

func TestNewRefuses(t *testing.T) {
	tests := []struct {
		name    string
		members []string
		vnodes  int
	}{
		{"zero vnodes", []string{"a"}, 0},
		{"negative vnodes", []string{"a"}, -1},
		{"empty member", []string{"a", ""}, 50},
		{"duplicate member", []string{"a", "b", "a"}, 50},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.members, tc.vnodes); err == nil {
				t.Fatalf("New(%q, %d) = nil error", tc.members, tc.vnodes)
			}
		})
	}
}

func TestEmptyRing(t *testing.T) {
	r, err := New(nil, DefaultVirtualNodes)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Lookup("x"); got != "" {
		t.Fatalf("Lookup on empty ring = %q", got)
	}
	if got := r.LookupIndex("x"); got != -1 {
		t.Fatalf("LookupIndex on empty ring = %d", got)
	}
	if got := r.Preference("x"); got != nil {
		t.Fatalf("Preference on empty ring = %q", got)
	}
}

func TestSingleMemberOwnsAll(t *testing.T) {
	r, err := New([]string{"only"}, DefaultVirtualNodes)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hostIDs(100) {
		if got := r.Lookup(h); got != "only" {
			t.Fatalf("Lookup(%q) = %q", h, got)
		}
	}
}

// TestBalance logs max/mean load over 10k host ids for 3..10 members with
// the default 50 virtual nodes and fails only on a gross imbalance.
func TestBalance(t *testing.T) {
	hosts := hostIDs(10000)
	for n := 3; n <= 10; n++ {
		r, err := New(members(n), DefaultVirtualNodes)
		if err != nil {
			t.Fatal(err)
		}
		counts := make([]int, n)
		for _, h := range hosts {
			counts[r.LookupIndex(h)]++
		}
		mean := float64(len(hosts)) / float64(n)
		lo, hi := slices.Min(counts), slices.Max(counts)
		t.Logf("members=%2d max/mean=%.3f min/mean=%.3f counts=%v", n, float64(hi)/mean, float64(lo)/mean, counts)
		if float64(hi)/mean > 1.6 || float64(lo)/mean < 0.4 {
			t.Errorf("members=%d: load %v is far from the mean %.0f", n, counts, mean)
		}
	}
}

// TestMovedOnJoin checks that adding a member moves about 1/(N+1) of the
// keys, all of them to the new member.
func TestMovedOnJoin(t *testing.T) {
	hosts := hostIDs(10000)
	for n := 3; n <= 9; n++ {
		before, err := New(members(n), DefaultVirtualNodes)
		if err != nil {
			t.Fatal(err)
		}
		grown := members(n + 1)
		after, err := New(grown, DefaultVirtualNodes)
		if err != nil {
			t.Fatal(err)
		}
		newcomer := grown[n]
		moved := 0
		for _, h := range hosts {
			a, b := before.Lookup(h), after.Lookup(h)
			if a == b {
				continue
			}
			moved++
			if b != newcomer {
				t.Fatalf("members %d->%d: %q moved from %q to %q, not to the new member", n, n+1, h, a, b)
			}
		}
		frac, ideal := float64(moved)/float64(len(hosts)), 1/float64(n+1)
		t.Logf("members %2d->%2d: moved %.3f, ideal %.3f", n, n+1, frac, ideal)
		if frac < ideal/2 || frac > ideal*2 {
			t.Errorf("members %d->%d: moved fraction %.3f not within 2x of %.3f", n, n+1, frac, ideal)
		}
	}
}

func TestDeterministic(t *testing.T) {
	ms := members(5)
	a, err := New(ms, DefaultVirtualNodes)
	if err != nil {
		t.Fatal(err)
	}
	// Same members in another order: same owner for every key, which is
	// what lets every broker agree without talking.
	rev := slices.Clone(ms)
	slices.Reverse(rev)
	b, err := New(rev, DefaultVirtualNodes)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hostIDs(2000) {
		if a.Lookup(h) != b.Lookup(h) {
			t.Fatalf("Lookup(%q): %q vs %q with members reordered", h, a.Lookup(h), b.Lookup(h))
		}
	}
}

// TestPinned pins the hash and a few placements so that a refactor cannot
// change them: every process in a cluster, old and new, must place hosts
// identically, or a rolling upgrade would re-home hosts silently.
func TestPinned(t *testing.T) {
	r, err := New(members(5), DefaultVirtualNodes)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key   string
		sum   uint64
		owner string
	}{
		{"web-01", 0x8c4e0687f6d54fe7, "10.0.0.4:6379"},
		{"db-7", 0xfda5cba8c2b79dd4, "10.0.0.3:6379"},
		{"host-00042", 0xc983e4e11148a00b, "10.0.0.1:6379"},
		{"host-1", 0x46c174b1565d2844, "10.0.0.1:6379"},
	} {
		if got := sum64(tc.key); got != tc.sum {
			t.Errorf("sum64(%q) = %#x, want %#x", tc.key, got, tc.sum)
		}
		if got := r.Lookup(tc.key); got != tc.owner {
			t.Errorf("Lookup(%q) = %q, want %q", tc.key, got, tc.owner)
		}
	}
}

// TestSum64Pinned pins the hash so that a refactor cannot change it: every
// process in a cluster, old and new, must place hosts identically.
func TestSum64Pinned(t *testing.T) {
	// FNV-1a of "" is the offset basis; the finalizer is then applied.
	x := uint64(14695981039346656037)
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	if got := sum64(""); got != x {
		t.Fatalf("sum64(\"\") = %#x, want %#x", got, x)
	}
	if sum64("host-1") == sum64("host-2") {
		t.Fatal("sum64 collides on host-1/host-2")
	}
}

func TestPreference(t *testing.T) {
	ms := members(6)
	r, err := New(ms, DefaultVirtualNodes)
	if err != nil {
		t.Fatal(err)
	}
	firsts := map[string]int{}
	for _, h := range hostIDs(3000) {
		p := r.Preference(h)
		if len(p) != len(ms) {
			t.Fatalf("Preference(%q) = %q: want every one of %d members", h, p, len(ms))
		}
		if p[0] != r.Lookup(h) {
			t.Fatalf("Preference(%q)[0] = %q, Lookup = %q", h, p[0], r.Lookup(h))
		}
		sorted := slices.Clone(p)
		slices.Sort(sorted)
		want := slices.Clone(ms)
		slices.Sort(want)
		if !slices.Equal(sorted, want) {
			t.Fatalf("Preference(%q) = %q: not each member once", h, p)
		}
		firsts[p[1]]++
	}
	// The second choice spreads too, so a failed member's load is shared.
	if len(firsts) < len(ms)-1 {
		t.Fatalf("second choices only %v", firsts)
	}
}

func TestMembersIsACopy(t *testing.T) {
	r, err := New([]string{"a", "b"}, 3)
	if err != nil {
		t.Fatal(err)
	}
	m := r.Members()
	m[0] = "z"
	if r.Members()[0] != "a" {
		t.Fatal("Members exposes the ring's slice")
	}
}

func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{3, 10, 100} {
		b.Run("members="+strconv.Itoa(n), func(b *testing.B) {
			r, err := New(members(n), DefaultVirtualNodes)
			if err != nil {
				b.Fatal(err)
			}
			hosts := hostIDs(1024)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				_ = r.LookupIndex(hosts[i&1023])
			}
		})
	}
}

func BenchmarkPreference(b *testing.B) {
	r, err := New(members(5), DefaultVirtualNodes)
	if err != nil {
		b.Fatal(err)
	}
	hosts := hostIDs(1024)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_ = r.Preference(hosts[i&1023])
	}
}
