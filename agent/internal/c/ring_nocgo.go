//go:build !cgo

package c

// Implementation names the ring this build uses ("c11" or "go").
const Implementation = "go"

// Ring is GoRing in builds without cgo: the same API and algorithm as the
// C11 ring.
type Ring struct{ GoRing }

// New returns an empty Ring of capacity cells (a power of two).
func New(capacity int) (*Ring, error) {
	if err := checkCapacity(capacity); err != nil {
		return nil, err
	}
	r := &Ring{}
	r.init(capacity)
	return r, nil
}
