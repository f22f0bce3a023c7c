package control

import (
	"context"
	"fmt"
	"net"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/monitorhq/monitor/internal/faultproxy"
)

// linkNet routes every Raft connection from one member to another through
// its own faultproxy, so a member can be cut off in both directions.
type linkNet struct {
	mu       sync.Mutex
	addrs    map[string]string // member id → its Raft address
	links    map[[2]string]*faultproxy.Proxy
	isolated map[string]bool
}

func (ln *linkNet) dial(from, addr string, timeout time.Duration) (net.Conn, error) {
	ln.mu.Lock()
	key := [2]string{from, addr}
	p := ln.links[key]
	if p == nil {
		var err error
		if p, err = faultproxy.New(addr); err != nil {
			ln.mu.Unlock()
			return nil, err
		}
		ln.links[key] = p
		if ln.cut(from, addr) {
			p.Partition()
		}
	}
	ln.mu.Unlock()
	return net.DialTimeout("tcp", p.Addr(), timeout)
}

// cut reports whether the link from → addr crosses the partition.
func (ln *linkNet) cut(from, addr string) bool {
	for id, on := range ln.isolated {
		if on && (id == from || ln.addrs[id] == addr) {
			return true
		}
	}
	return false
}

// isolate cuts (or heals) every link to and from member id.
func (ln *linkNet) isolate(id string, on bool) {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	ln.isolated[id] = on
	for key, p := range ln.links {
		switch {
		case ln.cut(key[0], key[1]):
			p.Partition()
		default:
			p.Heal()
		}
	}
}

func (ln *linkNet) close() {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	for _, p := range ln.links {
		p.Close()
	}
}

// leaderClaims records, for every term, which members claimed to lead it.
// A member's claim is taken only when its term read before and after its
// state is the same: hashicorp/raft steps a leader down before it moves to
// a higher term, so such a reading is a real (term, leader) pair.
type leaderClaims struct {
	mu     sync.Mutex
	claims map[uint64]map[string]bool
	polls  int
}

func (lc *leaderClaims) watch(ctx context.Context, nodes []*Node, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, n := range nodes {
			t1 := n.raft.CurrentTerm()
			st := n.raft.State()
			t2 := n.raft.CurrentTerm()
			lc.mu.Lock()
			lc.polls++
			if st == raft.Leader && t1 == t2 {
				if lc.claims[t1] == nil {
					lc.claims[t1] = map[string]bool{}
				}
				lc.claims[t1][n.ID()] = true
			}
			lc.mu.Unlock()
		}
	}
}

// TestPartitionedMemberNoSecondLeader cuts the leader off from the other
// two members (every Raft link through an in-process proxy, both
// directions) while a client keeps writing, then heals it; then does the
// same to a follower. It checks, from every member's own observations, that
// no term ever had two leaders, that the majority elects a new leader and
// keeps acknowledging writes, that the cut-off member acknowledges none,
// and that after healing it rejoins and catches up: every acknowledged
// write is on every member.
func TestPartitionedMemberNoSecondLeader(t *testing.T) {
	ln := &linkNet{addrs: map[string]string{}, links: map[[2]string]*faultproxy.Proxy{}, isolated: map[string]bool{}}
	ids := []string{"p1", "p2", "p3"}
	c := newClusterWith(t, func(cfg *NodeConfig) {
		from := cfg.ID
		ln.mu.Lock()
		ln.addrs[from] = cfg.BindAddr
		ln.mu.Unlock()
		cfg.Dial = func(addr string, timeout time.Duration) (net.Conn, error) { return ln.dial(from, addr, timeout) }
	}, ids...)
	t.Cleanup(ln.close) // runs before the nodes' shutdown (cleanups are LIFO)

	nodes := []*Node{c.nodes["p1"], c.nodes["p2"], c.nodes["p3"]}
	lc := &leaderClaims{claims: map[uint64]map[string]bool{}}
	wctx, stopWatch := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go lc.watch(wctx, nodes, watched)
	defer func() { stopWatch(); <-watched }()

	// A client writes unique keys to whichever member it believes leads.
	var (
		mu       sync.Mutex
		acked    []string
		isolated = map[string]bool{}
		ackedCut int // writes acknowledged by a cut-off member (must stay 0)
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			var target *Node
			for _, n := range nodes {
				if n.IsLeader() {
					target = n
					break
				}
			}
			if target == nil {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			key := fmt.Sprintf("w%06d", i)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			mu.Lock()
			cutAtCall := isolated[target.ID()]
			mu.Unlock()
			err := put(ctx, target, key, "v")
			cancel()
			if err == nil {
				mu.Lock()
				acked = append(acked, key)
				if cutAtCall && isolated[target.ID()] {
					ackedCut++
				}
				mu.Unlock()
			}
		}
	}()
	ackedN := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	waitAcks := func(n int) {
		deadline := time.Now().Add(30 * time.Second)
		for ackedN() < n {
			if time.Now().After(deadline) {
				t.Fatalf("only %d acknowledged writes, want %d", ackedN(), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	waitAcks(50)
	for _, victimIsLeader := range []bool{true, false} {
		leader := c.waitLeader(nil)
		victim := leader
		if !victimIsLeader {
			for _, n := range nodes {
				if n != leader {
					victim = n
					break
				}
			}
		}
		oldTerm := leader.raft.CurrentTerm()
		mu.Lock()
		isolated[victim.ID()] = true
		mu.Unlock()
		cutAt := time.Now()
		ln.isolate(victim.ID(), true)
		// The majority has (or keeps) a leader and goes on acknowledging.
		var newLeader *Node
		deadline := time.Now().Add(30 * time.Second)
		for newLeader == nil {
			for _, n := range nodes {
				if n != victim && n.IsLeader() {
					newLeader = n
				}
			}
			if time.Now().After(deadline) {
				t.Fatal("the majority elected no leader")
			}
			time.Sleep(2 * time.Millisecond)
		}
		election := time.Since(cutAt)
		before := ackedN()
		waitAcks(before + 50)
		// Heal and catch up.
		mu.Lock()
		isolated[victim.ID()] = false
		mu.Unlock()
		healAt := time.Now()
		ln.isolate(victim.ID(), false)
		want := newLeader.FSM().State()
		caughtUp := time.Duration(0)
		deadline = time.Now().Add(30 * time.Second)
		for {
			v := victim.FSM().State()
			if len(v.GetSettings()) >= len(want.GetSettings()) {
				caughtUp = time.Since(healAt)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not catch up: %d of %d settings", victim.ID(), len(v.GetSettings()), len(want.GetSettings()))
			}
			time.Sleep(2 * time.Millisecond)
		}
		role := "follower"
		if victimIsLeader {
			role = "leader"
		}
		t.Logf("cut off %s %s (term %d); leader now %s (term %d)", role, victim.ID(), oldTerm, newLeader.ID(), newLeader.raft.CurrentTerm())
		if victimIsLeader {
			t.Logf("FIGURE partition_election_ms=%d ms", election.Milliseconds())
		}
		t.Logf("FIGURE partition_%s_catchup_ms=%d ms", role, caughtUp.Milliseconds())
		waitAcks(ackedN() + 20)
	}
	close(stop)
	wg.Wait()

	// Every acknowledged write is on every member.
	final := ackedN()
	c.waitLeader(nil)
	deadline := time.Now().Add(30 * time.Second)
	lost := 0
	for {
		lost = 0
		mu.Lock()
		for _, k := range acked {
			for _, n := range nodes {
				if _, ok := n.FSM().Setting(k); !ok {
					lost++
				}
			}
		}
		mu.Unlock()
		if lost == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopWatch()
	<-watched
	lc.mu.Lock()
	defer lc.mu.Unlock()
	terms := make([]uint64, 0, len(lc.claims))
	for term := range lc.claims {
		terms = append(terms, term)
	}
	sort.Slice(terms, func(i, j int) bool { return terms[i] < terms[j] })
	for _, term := range terms {
		if len(lc.claims[term]) > 1 {
			t.Errorf("term %d had %d leaders: %v", term, len(lc.claims[term]), lc.claims[term])
		}
	}
	t.Logf("FIGURE partition_acked_writes=%d writes", final)
	t.Logf("FIGURE partition_acked_lost=%d writes", lost)
	t.Logf("FIGURE partition_terms_observed=%d terms", len(terms))
	t.Logf("%d state observations over %d terms %v; %d writes acknowledged by a cut-off member", lc.polls, len(terms), terms, ackedCut)
	if lost != 0 {
		t.Fatalf("%d acknowledged writes missing on some member", lost)
	}
	if ackedCut != 0 {
		t.Fatalf("a cut-off member acknowledged %d writes", ackedCut)
	}
}
