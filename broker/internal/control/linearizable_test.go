package control

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	monitorpb "github.com/monitorhq/monitor/proto"
)

type kvInput struct {
	put      bool
	key, val string
}

type kvOutput struct{ val string }

// kvModel is a register per key: the settings part of the control state.
var kvModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range h {
			k := op.Input.(kvInput).key
			byKey[k] = append(byKey[k], op)
		}
		var out [][]porcupine.Operation
		for _, ops := range byKey {
			out = append(out, ops)
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in := input.(kvInput)
		if in.put {
			return true, in.val
		}
		return output.(kvOutput).val == state.(string), state
	},
	DescribeOperation: func(input, output any) string {
		in := input.(kvInput)
		if in.put {
			return fmt.Sprintf("put(%s, %s)", in.key, in.val)
		}
		return fmt.Sprintf("get(%s) -> %q", in.key, output.(kvOutput).val)
	},
}

// TestLinearizableAcrossLeaderKill runs concurrent clients writing and
// reading settings while the leader is killed, then checks the history with
// porcupine: every acknowledged write is visible, no read goes back in time.
// Final reads of every key end the history, so an acknowledged write lost
// in the failover would fail the check. Part of make test-faults.
func TestLinearizableAcrossLeaderKill(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	var (
		mu      sync.Mutex
		nodes   = []*Node{c.nodes["n1"], c.nodes["n2"], c.nodes["n3"]}
		history []porcupine.Operation
	)
	live := func() []*Node {
		mu.Lock()
		defer mu.Unlock()
		return append([]*Node(nil), nodes...)
	}
	leaderOf := func() *Node {
		for _, n := range live() {
			if n.IsLeader() {
				return n
			}
		}
		return nil
	}
	start := time.Now()
	now := func() int64 { return time.Since(start).Nanoseconds() }
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writesOK, writesUnknown, readsOK int
	for client := 0; client < 4; client++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(client), 7))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				n := leaderOf()
				if n == nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				key := fmt.Sprintf("k%d", rng.IntN(3))
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				call := now()
				if rng.IntN(2) == 0 {
					val := fmt.Sprintf("c%d-%d", client, i)
					err := n.Apply(ctx, monitorpb.CommandType_COMMAND_TYPE_PUT_SETTING, &monitorpb.Setting{Key: key, Value: val})
					ret := now()
					mu.Lock()
					switch {
					case err == nil:
						writesOK++
						history = append(history, porcupine.Operation{ClientId: client, Input: kvInput{true, key, val}, Call: call, Output: kvOutput{}, Return: ret})
					case errors.Is(err, ErrNotLeader):
						// Refused before it was appended: it never happened.
					default:
						// Outcome unknown (leadership lost mid-flight,
						// timeout): it may take effect any time later.
						writesUnknown++
						history = append(history, porcupine.Operation{ClientId: client, Input: kvInput{true, key, val}, Call: call, Output: kvOutput{}, Return: math.MaxInt64})
					}
					mu.Unlock()
				} else {
					err := n.ConsistentRead(ctx)
					var val string
					if err == nil {
						val, _ = n.FSM().Setting(key)
					}
					ret := now()
					if err == nil {
						mu.Lock()
						readsOK++
						history = append(history, porcupine.Operation{ClientId: client, Input: kvInput{false, key, ""}, Call: call, Output: kvOutput{val}, Return: ret})
						mu.Unlock()
					}
				}
				cancel()
			}
		}()
	}
	// Let history accumulate before the fault, and as much again after it.
	waitWrites := func(n int) {
		deadline := time.Now().Add(20 * time.Second)
		for {
			mu.Lock()
			w := writesOK
			mu.Unlock()
			if w >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("only %d acknowledged writes, want %d", w, n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitWrites(100)
	old := leaderOf()
	if old == nil {
		t.Fatal("no leader")
	}
	mu.Lock()
	for i, n := range nodes {
		if n == old {
			nodes = append(nodes[:i], nodes[i+1:]...)
			break
		}
	}
	mu.Unlock()
	killed := time.Now()
	old.Shutdown()
	delete(c.nodes, old.ID())
	newLeader := c.waitLeader(nil)
	election := time.Since(killed)
	mu.Lock()
	before := writesOK
	mu.Unlock()
	waitWrites(before + 100)
	close(stop)
	wg.Wait()
	// A final read of every key closes the history: an acknowledged write
	// missing at the end would make it non-linearizable (lost = 0).
	for k := 0; k < 3; k++ {
		key := fmt.Sprintf("k%d", k)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		call := now()
		err := newLeader.ConsistentRead(ctx)
		cancel()
		if err != nil {
			t.Fatalf("final read of %s: %v", key, err)
		}
		val, _ := newLeader.FSM().Setting(key)
		history = append(history, porcupine.Operation{ClientId: 99, Input: kvInput{false, key, ""}, Call: call, Output: kvOutput{val}, Return: now()})
	}

	res := porcupine.CheckOperationsTimeout(kvModel, history, 30*time.Second)
	t.Logf("history: %d ops (%d acknowledged writes, %d with unknown outcome, %d reads); leader %s killed, %s elected in %s; porcupine: %s",
		len(history), writesOK, writesUnknown, readsOK, old.ID(), newLeader.ID(), election.Round(time.Millisecond), res)
	t.Logf("FIGURE leaderkill_election_ms=%d ms", election.Milliseconds())
	t.Logf("FIGURE leaderkill_acked_writes=%d writes", writesOK)
	t.Logf("FIGURE leaderkill_unknown_writes=%d writes", writesUnknown)
	t.Logf("FIGURE leaderkill_linearizable=%d bool", map[bool]int{true: 1}[res == porcupine.Ok])
	if res != porcupine.Ok {
		t.Fatalf("history is not linearizable: %s", res)
	}
	if writesOK == 0 || readsOK == 0 {
		t.Fatalf("too little history to mean anything: %d writes, %d reads", writesOK, readsOK)
	}
}
