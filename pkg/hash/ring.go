// Package hash is the consistent-hash ring that routes a host to a storage
// shard (and an agent to its first broker): every member owns VirtualNodes
// tokens on a 64-bit circle, and a key belongs to the member owning the first
// token at or after the key's hash.
//
// A Ring is immutable once built and pure (no I/O): safe for concurrent use,
// deterministic across processes, so every broker computes the same owner.
package hash

import (
	"fmt"
	"sort"
	"strconv"
)

// DefaultVirtualNodes is the seed's 50 virtual nodes per member.
const DefaultVirtualNodes = 50

// Ring maps keys to members.
type Ring struct {
	tokens  []uint64 // sorted
	owners  []int    // owners[i] is the member index of tokens[i]
	members []string
}

// New builds a ring of members (unique, non-empty) with vnodes tokens each.
func New(members []string, vnodes int) (*Ring, error) {
	if vnodes <= 0 {
		return nil, fmt.Errorf("hash ring: virtual nodes must be positive, got %d", vnodes)
	}
	seen := make(map[string]bool, len(members))
	for _, m := range members {
		if m == "" {
			return nil, fmt.Errorf("hash ring: empty member name")
		}
		if seen[m] {
			return nil, fmt.Errorf("hash ring: member %q listed twice", m)
		}
		seen[m] = true
	}
	r := &Ring{members: append([]string(nil), members...)}
	type tok struct {
		h     uint64
		owner int
	}
	toks := make([]tok, 0, len(members)*vnodes)
	for i, m := range members {
		for v := 0; v < vnodes; v++ {
			toks = append(toks, tok{sum64(m + "#" + strconv.Itoa(v)), i})
		}
	}
	// Ties (astronomically rare) are broken by member name so every process
	// builds the same ring whatever the order of members.
	sort.Slice(toks, func(a, b int) bool {
		if toks[a].h != toks[b].h {
			return toks[a].h < toks[b].h
		}
		return members[toks[a].owner] < members[toks[b].owner]
	})
	r.tokens = make([]uint64, len(toks))
	r.owners = make([]int, len(toks))
	for i, t := range toks {
		r.tokens[i], r.owners[i] = t.h, t.owner
	}
	return r, nil
}

// Members returns the members in the order given to New.
func (r *Ring) Members() []string { return append([]string(nil), r.members...) }

// Lookup returns the member that owns key ("" for an empty ring).
func (r *Ring) Lookup(key string) string {
	i := r.LookupIndex(key)
	if i < 0 {
		return ""
	}
	return r.members[i]
}

// LookupIndex returns the index (in Members order) of key's owner, -1 for an
// empty ring.
func (r *Ring) LookupIndex(key string) int {
	if len(r.tokens) == 0 {
		return -1
	}
	h := sum64(key)
	i := sort.Search(len(r.tokens), func(i int) bool { return r.tokens[i] >= h })
	if i == len(r.tokens) {
		i = 0
	}
	return r.owners[i]
}

// Preference returns every member ordered by preference for key: the owner
// first, then the owners of the following tokens, each once. Agents use it
// to fail over across brokers starting from the one the ring chose.
func (r *Ring) Preference(key string) []string {
	if len(r.tokens) == 0 {
		return nil
	}
	h := sum64(key)
	start := sort.Search(len(r.tokens), func(i int) bool { return r.tokens[i] >= h })
	out := make([]string, 0, len(r.members))
	seen := make([]bool, len(r.members))
	for k := 0; k < len(r.tokens) && len(out) < len(r.members); k++ {
		o := r.owners[(start+k)%len(r.tokens)]
		if !seen[o] {
			seen[o] = true
			out = append(out, r.members[o])
		}
	}
	return out
}

// sum64 is FNV-1a followed by a 64-bit finalizer (from SplitMix64): FNV alone
// clusters similar short strings such as "host-1", "host-2".
func sum64(s string) uint64 {
	x := uint64(14695981039346656037) // FNV-1a, inlined: no allocation
	for i := 0; i < len(s); i++ {
		x ^= uint64(s[i])
		x *= 1099511628211
	}
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
