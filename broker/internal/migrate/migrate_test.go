package migrate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/monitorhq/monitor/pkg/hash"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// fakeStore is the storage as the migrator sees it: which hosts have keys
// on which shard.
type fakeStore struct {
	mu     sync.Mutex
	on     map[string][]string // shard → hosts
	failOn string              // MoveHost of this host fails once
	moves  []string
}

func (f *fakeStore) HostsOn(_ context.Context, shard string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.on[shard]), nil
}

func (f *fakeStore) MoveHost(_ context.Context, host, from, to string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if host == f.failOn {
		f.failOn = ""
		return 0, errors.New("shard unreachable")
	}
	f.on[from] = slices.DeleteFunc(f.on[from], func(h string) bool { return h == host })
	if !slices.Contains(f.on[to], host) {
		f.on[to] = append(f.on[to], host)
	}
	f.moves = append(f.moves, fmt.Sprintf("%s:%s>%s", host, from, to))
	return 3, nil
}

func TestMovesExactlyTheHostsWhoseOwnerChanged(t *testing.T) {
	old, _ := hash.New([]string{"a", "b"}, hash.DefaultVirtualNodes)
	next, _ := hash.New([]string{"a", "b", "c"}, hash.DefaultVirtualNodes)
	st := &fakeStore{on: map[string][]string{}}
	var want []string
	for i := range 200 {
		h := fmt.Sprintf("host-%03d", i)
		st.on[old.Lookup(h)] = append(st.on[old.Lookup(h)], h)
		if o, n := old.Lookup(h), next.Lookup(h); o != n {
			want = append(want, fmt.Sprintf("%s:%s>%s", h, o, n))
		}
	}
	st.failOn, _, _ = strings.Cut(want[len(want)/2], ":") // a host that moves
	var saved []*monitorpb.Migration
	save := func(_ context.Context, m *monitorpb.Migration) error {
		saved = append(saved, m)
		return nil
	}
	mg := New(st, save, Options{Settle: 1, Progress: 1}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	m := &monitorpb.Migration{RingVersion: 2, FromVersion: 1, FromShards: []string{"a", "b"}, ToShards: []string{"a", "b", "c"}}

	// The first run stops at the failing host and records the error.
	err := mg.Run(context.Background(), m)
	if err == nil || saved[len(saved)-1].GetError() == "" || saved[len(saved)-1].GetDone() {
		t.Fatalf("a failing move: err %v, last progress %v", err, saved[len(saved)-1])
	}
	// A second run (a new leader, or the retry) resumes from the progress
	// and finishes: every host moved exactly once, to its new owner.
	last := saved[len(saved)-1]
	if err := mg.Run(context.Background(), last); err != nil {
		t.Fatal(err)
	}
	done := saved[len(saved)-1]
	slices.Sort(want)
	got := slices.Sorted(slices.Values(st.moves))
	if !slices.Equal(got, want) {
		t.Fatalf("moves:\n%v\nwant\n%v", got, want)
	}
	if !done.GetDone() || done.GetError() != "" || int(done.GetHostsMoved()) != len(want) || done.GetKeysCopied() != uint64(3*len(want)) ||
		int(done.GetHostsTotal()) != len(want) || done.GetFinishedUnixMs() == 0 {
		t.Fatalf("final progress %v; want done with %d hosts moved", done, len(want))
	}
	frac := float64(len(want)) / 200
	if frac < 0.2 || frac > 0.45 {
		t.Fatalf("moved fraction %.2f for 2 → 3 shards; want about 1/3", frac)
	}
	// Nothing is left on a shard that does not own it.
	for shard, hosts := range st.on {
		for _, h := range hosts {
			if next.Lookup(h) != shard {
				t.Errorf("host %s left on %s, owner %s", h, shard, next.Lookup(h))
			}
		}
	}
}

func TestDrainMovesEverythingOff(t *testing.T) {
	st := &fakeStore{on: map[string][]string{"a": {"h1", "h2", "h3"}, "b": {"h4"}}}
	var last *monitorpb.Migration
	mg := New(st, func(_ context.Context, m *monitorpb.Migration) error { last = m; return nil }, Options{Settle: 1}, slog.New(slog.DiscardHandler))
	if err := mg.Run(context.Background(), &monitorpb.Migration{RingVersion: 3, FromShards: []string{"a", "b"}, ToShards: []string{"b"}}); err != nil {
		t.Fatal(err)
	}
	if len(st.on["a"]) != 0 || len(st.on["b"]) != 4 || !last.GetDone() || last.GetHostsMoved() != 3 {
		t.Fatalf("after draining a: %v, progress %v", st.on, last)
	}
}

func TestStopsWithTheContext(t *testing.T) {
	st := &fakeStore{on: map[string][]string{"a": {"h1"}}}
	mg := New(st, func(context.Context, *monitorpb.Migration) error { return nil }, Options{}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := mg.Run(ctx, &monitorpb.Migration{RingVersion: 2, FromShards: []string{"a"}, ToShards: []string{"a", "b"}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run after cancel = %v", err)
	}
}
