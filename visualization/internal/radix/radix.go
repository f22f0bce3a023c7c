// Package radix matches subscription patterns against keys with a radix
// tree (hashicorp/go-immutable-radix/v2): an Index maps patterns to the
// subscribers that registered them, and Match visits every subscriber
// whose pattern is a prefix of a key — one walk down the tree, however
// many patterns there are.
//
// Patterns are prefixes. A pattern that must match a whole key (a host id)
// is made with Exact, and keys are then matched with their Exact form too:
// Exact appends a terminator byte that never occurs in ids, so "web-1"
// does not match "web-10". The push core (visualization/internal/push)
// keeps one Index for host patterns, one for labels and one for metric
// prefixes.
//
// Concurrency: Match is lock-free and may run on any number of goroutines
// while Add and Remove run (they are serialized among themselves and
// publish a new immutable tree); a Match sees the tree as it was when it
// started.
package radix

import (
	"slices"
	"sync"
	"sync/atomic"

	iradix "github.com/hashicorp/go-immutable-radix/v2"
)

// terminator ends an exact pattern or key. Host ids, label pairs and
// metric names are printable (pkg/storage validates them), so it cannot
// occur inside one.
const terminator = "\x00"

// Exact turns s into a pattern (or key) that matches only the whole of s.
func Exact(s string) string { return s + terminator }

// Index maps patterns to subscriber ids.
type Index[T comparable] struct {
	mu   sync.Mutex // serializes writers
	tree atomic.Pointer[iradix.Tree[[]T]]
}

// New returns an empty index.
func New[T comparable]() *Index[T] {
	x := &Index[T]{}
	x.tree.Store(iradix.New[[]T]())
	return x
}

// Add registers id under pattern. Adding the same pair twice keeps one.
func (x *Index[T]) Add(pattern string, id T) {
	x.mu.Lock()
	defer x.mu.Unlock()
	t := x.tree.Load()
	k := []byte(pattern)
	ids, _ := t.Get(k)
	if slices.Contains(ids, id) {
		return
	}
	// The tree is shared with concurrent readers: never append in place.
	next := make([]T, len(ids), len(ids)+1)
	copy(next, ids)
	t, _, _ = t.Insert(k, append(next, id))
	x.tree.Store(t)
}

// Remove unregisters id from pattern; a pattern left with no id leaves the
// tree.
func (x *Index[T]) Remove(pattern string, id T) {
	x.mu.Lock()
	defer x.mu.Unlock()
	t := x.tree.Load()
	k := []byte(pattern)
	ids, ok := t.Get(k)
	i := slices.Index(ids, id)
	if !ok || i < 0 {
		return
	}
	if len(ids) == 1 {
		t, _, _ = t.Delete(k)
	} else {
		t, _, _ = t.Insert(k, slices.Delete(slices.Clone(ids), i, i+1))
	}
	x.tree.Store(t)
}

// Match calls fn for every id registered under a pattern that is a prefix
// of key (the empty pattern matches every key), shortest pattern first.
// An id registered under several matching patterns is visited once per
// pattern.
func (x *Index[T]) Match(key string, fn func(id T)) {
	x.tree.Load().Root().WalkPath([]byte(key), func(_ []byte, ids []T) bool {
		for _, id := range ids {
			fn(id)
		}
		return false
	})
}

// Len returns the number of distinct patterns.
func (x *Index[T]) Len() int { return x.tree.Load().Len() }
