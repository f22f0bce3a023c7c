package topk

// treap is an ordered set of *entry under a fixed order (less): a binary
// search tree on the order and a heap on random priorities, so it stays
// balanced in expectation and every operation is O(log n). Nodes are
// embedded in the entries (one per set), so moving an entry is remove,
// change key, insert, with no allocation.
type treap struct {
	root *tnode
	less func(a, b *entry) bool
	rng  uint64 // xorshift state for priorities; fixed seed, reproducible
	n    int
}

type tnode struct {
	e           *entry
	prio        uint64
	left, right *tnode
}

func newTreap(less func(a, b *entry) bool) treap {
	return treap{less: less, rng: 0x9E3779B97F4A7C15}
}

func (t *treap) nextPrio() uint64 {
	t.rng ^= t.rng << 13
	t.rng ^= t.rng >> 7
	t.rng ^= t.rng << 17
	return t.rng
}

// insert adds n (whose e is set and not in the set).
func (t *treap) insert(n *tnode) {
	n.prio, n.left, n.right = t.nextPrio(), nil, nil
	t.root = t.insertAt(t.root, n)
	t.n++
}

func (t *treap) insertAt(root, n *tnode) *tnode {
	if root == nil {
		return n
	}
	if n.prio > root.prio {
		n.left, n.right = t.split(root, n.e)
		return n
	}
	if t.less(n.e, root.e) {
		root.left = t.insertAt(root.left, n)
	} else {
		root.right = t.insertAt(root.right, n)
	}
	return root
}

// split divides root into the nodes before e and the nodes after it.
func (t *treap) split(root *tnode, e *entry) (l, r *tnode) {
	if root == nil {
		return nil, nil
	}
	if t.less(root.e, e) {
		root.right, r = t.split(root.right, e)
		return root, r
	}
	l, root.left = t.split(root.left, e)
	return l, root
}

func merge(l, r *tnode) *tnode {
	switch {
	case l == nil:
		return r
	case r == nil:
		return l
	case l.prio > r.prio:
		l.right = merge(l.right, r)
		return l
	default:
		r.left = merge(l, r.left)
		return r
	}
}

// remove takes out the node holding e, found by e's current key.
func (t *treap) remove(e *entry) {
	link := &t.root
	for n := *link; n != nil; n = *link {
		switch {
		case n.e == e:
			*link = merge(n.left, n.right)
			n.left, n.right = nil, nil
			t.n--
			return
		case t.less(e, n.e):
			link = &n.left
		default:
			link = &n.right
		}
	}
}

// first returns the least entry, or nil.
func (t *treap) first() *entry {
	n := t.root
	if n == nil {
		return nil
	}
	for n.left != nil {
		n = n.left
	}
	return n.e
}

// ascend calls fn on entries in order until it returns false.
func (t *treap) ascend(fn func(*entry) bool) {
	var stack [64]*tnode
	s := stack[:0]
	n := t.root
	for n != nil || len(s) > 0 {
		for n != nil {
			s = append(s, n)
			n = n.left
		}
		n = s[len(s)-1]
		s = s[:len(s)-1]
		if !fn(n.e) {
			return
		}
		n = n.right
	}
}
