package c

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// ring is what the suite drives: Queue plus Close.
type ring interface {
	Queue
	Close()
}

// impls are the rings every test runs against: the build's Ring (C11 with
// cgo, the Go twin without) and GoRing.
var impls = []struct {
	name string
	make func(int) (ring, error)
}{
	{"Ring-" + Implementation, func(n int) (ring, error) { return New(n) }},
	{"GoRing", func(n int) (ring, error) { return NewGo(n) }},
}

func each(t *testing.T, capacity int, fn func(t *testing.T, r ring)) {
	for _, im := range impls {
		t.Run(im.name, func(t *testing.T) {
			r, err := im.make(capacity)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			fn(t, r)
		})
	}
}

func TestCapacityMustBeAPowerOfTwo(t *testing.T) {
	for _, im := range impls {
		for _, n := range []int{-1, 0, 1, 3, 1000, 1 << 31} {
			if _, err := im.make(n); !errors.Is(err, ErrCapacity) {
				t.Errorf("%s: capacity %d: err %v, want ErrCapacity", im.name, n, err)
			}
		}
		r, err := im.make(1024)
		if err != nil {
			t.Fatalf("%s: %v", im.name, err)
		}
		if r.Cap() != 1024 || r.Len() != 0 {
			t.Errorf("%s: cap %d len %d", im.name, r.Cap(), r.Len())
		}
		r.Close()
	}
}

func TestFIFOFullAndEmpty(t *testing.T) {
	each(t, 8, func(t *testing.T, r ring) {
		if _, ok := r.Pop(); ok {
			t.Fatal("pop from an empty ring")
		}
		for i := range 8 {
			if !r.Push(uint64(100 + i)) {
				t.Fatalf("push %d refused", i)
			}
		}
		if r.Push(999) {
			t.Fatal("push into a full ring")
		}
		if r.Len() != 8 {
			t.Fatalf("len %d", r.Len())
		}
		for i := range 8 {
			v, ok := r.Pop()
			if !ok || v != uint64(100+i) {
				t.Fatalf("pop %d = %d, %v", i, v, ok)
			}
		}
		if _, ok := r.Pop(); ok || r.Len() != 0 {
			t.Fatal("ring not empty after popping everything")
		}
	})
}

func TestBatchesArePartialAtTheEdges(t *testing.T) {
	each(t, 8, func(t *testing.T, r ring) {
		if n := r.PushBatch(nil); n != 0 {
			t.Fatalf("empty batch stored %d", n)
		}
		if n := r.PushBatch([]uint64{1, 2, 3, 4, 5}); n != 5 {
			t.Fatalf("stored %d of 5", n)
		}
		if n := r.PushBatch([]uint64{6, 7, 8, 9, 10}); n != 3 {
			t.Fatalf("stored %d into 3 free cells", n)
		}
		dst := make([]uint64, 3)
		if n := r.PopBatch(dst); n != 3 || dst[0] != 1 || dst[2] != 3 {
			t.Fatalf("popped %d: %v", n, dst)
		}
		if n := r.PushBatch([]uint64{9, 10}); n != 2 {
			t.Fatalf("stored %d after room was made", n)
		}
		dst = make([]uint64, 20)
		n := r.PopBatch(dst)
		if want := []uint64{4, 5, 6, 7, 8, 9, 10}; n != len(want) || fmt.Sprint(dst[:n]) != fmt.Sprint(want) {
			t.Fatalf("popped %v, want %v", dst[:n], want)
		}
		if n := r.PopBatch(dst); n != 0 {
			t.Fatalf("popped %d from an empty ring", n)
		}
	})
}

func TestManyLaps(t *testing.T) {
	each(t, 4, func(t *testing.T, r ring) {
		next, want := uint64(0), uint64(0)
		dst := make([]uint64, 3)
		for lap := range 10_000 {
			batch := []uint64{next, next + 1, next + 2}
			n := r.PushBatch(batch[:1+lap%3])
			next += uint64(n)
			k := r.PopBatch(dst[:1+(lap+1)%3])
			for _, v := range dst[:k] {
				if v != want {
					t.Fatalf("lap %d: got %d, want %d", lap, v, want)
				}
				want++
			}
		}
	})
}

// TestConcurrentProducersAndConsumers pushes distinct values from several
// producers (single and batch pushes) while several consumers pop (single
// and batch): every value must come out exactly once, and each consumer must
// see each producer's values in the order they were pushed.
func TestConcurrentProducersAndConsumers(t *testing.T) {
	const producers, consumers, perProducer = 4, 4, 20_000
	each(t, 64, func(t *testing.T, r ring) {
		var wg sync.WaitGroup
		for p := range producers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				batch := make([]uint64, 0, 7)
				for i := 0; i < perProducer; {
					v := uint64(p)<<32 | uint64(i)
					if p%2 == 0 {
						if r.Push(v) {
							i++
						} else {
							runtime.Gosched()
						}
						continue
					}
					batch = batch[:0]
					for j := i; j < perProducer && len(batch) < cap(batch); j++ {
						batch = append(batch, uint64(p)<<32|uint64(j))
					}
					n := r.PushBatch(batch)
					i += n
					if n == 0 {
						runtime.Gosched()
					}
				}
			}()
		}
		seen := make([][]uint64, consumers)
		done := make(chan struct{})
		var cwg sync.WaitGroup
		for c := range consumers {
			cwg.Add(1)
			go func() {
				defer cwg.Done()
				dst := make([]uint64, 5)
				for {
					var n int
					if c%2 == 0 {
						if v, ok := r.Pop(); ok {
							dst[0], n = v, 1
						}
					} else {
						n = r.PopBatch(dst)
					}
					seen[c] = append(seen[c], dst[:n]...)
					if n == 0 {
						select {
						case <-done:
							if r.Len() == 0 {
								return
							}
						default:
							runtime.Gosched()
						}
					}
				}
			}()
		}
		wg.Wait()
		close(done)
		cwg.Wait()

		count := make([]int, producers*perProducer)
		for c, vs := range seen {
			last := make([]int64, producers)
			for i := range last {
				last[i] = -1
			}
			for _, v := range vs {
				p, i := int(v>>32), int64(v&0xffffffff)
				if p >= producers || i >= perProducer {
					t.Fatalf("consumer %d got a value nobody pushed: %#x", c, v)
				}
				if i <= last[p] {
					t.Fatalf("consumer %d saw producer %d's value %d after %d", c, p, i, last[p])
				}
				last[p] = i
				count[p*perProducer+int(i)]++
			}
		}
		for k, n := range count {
			if n != 1 {
				t.Fatalf("value %d of producer %d came out %d times", k%perProducer, k/perProducer, n)
			}
		}
	})
}
