package chunk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// ErrCorrupt marks bytes that are not a chunk or a record this package
// wrote (truncated, a length past the end, an unknown version or mode).
var ErrCorrupt = errors.New("corrupt chunk")

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// bitWriter appends bits most significant first.
type bitWriter struct {
	b    []byte
	free uint // unused low bits of the last byte
}

func (w *bitWriter) writeBit(bit bool) {
	if w.free == 0 {
		w.b = append(w.b, 0)
		w.free = 8
	}
	w.free--
	if bit {
		w.b[len(w.b)-1] |= 1 << w.free
	}
}

// writeBits writes the low n bits of v (n <= 64).
func (w *bitWriter) writeBits(v uint64, n uint) {
	if n < 64 {
		v &= 1<<n - 1
	}
	for n > 0 {
		if w.free == 0 {
			w.b = append(w.b, 0)
			w.free = 8
		}
		take := min(n, w.free)
		part := byte(v>>(n-take)) & byte(1<<take-1)
		w.b[len(w.b)-1] |= part << (w.free - take)
		w.free -= take
		n -= take
	}
}

// writeVarBits writes v as 7 bits of length, then that many bits: small
// numbers stay small inside a bit stream.
func (w *bitWriter) writeVarBits(v uint64) {
	n := uint(bits.Len64(v))
	w.writeBits(uint64(n), 7)
	w.writeBits(v, n)
}

// bitReader reads what bitWriter wrote; reading past the end sets err and
// returns zeros.
type bitReader struct {
	b   []byte
	pos uint64 // bit position
	err error
}

func (r *bitReader) fail() {
	if r.err == nil {
		r.err = corrupt("bit stream truncated")
	}
}

func (r *bitReader) readBit() bool {
	if r.pos >= uint64(len(r.b))*8 {
		r.fail()
		return false
	}
	bit := r.b[r.pos>>3]&(0x80>>(r.pos&7)) != 0
	r.pos++
	return bit
}

// readBits reads n bits (n <= 64).
func (r *bitReader) readBits(n uint) uint64 {
	if n == 0 {
		return 0
	}
	if r.pos+uint64(n) > uint64(len(r.b))*8 {
		r.fail()
		r.pos = uint64(len(r.b)) * 8
		return 0
	}
	var v uint64
	// Fast path: 8 bytes hold the bits (most reads of a long stream).
	if byteIdx := r.pos >> 3; byteIdx+8 <= uint64(len(r.b)) && n <= 56 {
		word := binary.BigEndian.Uint64(r.b[byteIdx:])
		shift := r.pos & 7
		v = (word << shift) >> (64 - n)
		r.pos += uint64(n)
		return v
	}
	for n > 0 {
		off := uint(r.pos & 7)
		avail := 8 - off
		take := min(n, avail)
		cur := uint64(r.b[r.pos>>3]>>(avail-take)) & (1<<take - 1)
		v = v<<take | cur
		r.pos += uint64(take)
		n -= take
	}
	return v
}

func (r *bitReader) readVarBits() uint64 {
	n := r.readBits(7)
	if n > 64 {
		r.err = corrupt("bit length %d", n)
		return 0
	}
	return r.readBits(uint(n))
}

func zigzag(v int64) uint64   { return uint64(v<<1) ^ uint64(v>>63) }
func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

// byteReader walks a byte-oriented part; the first error sticks.
type byteReader struct {
	b   []byte
	err error
}

func (r *byteReader) fail(what string) {
	if r.err == nil {
		r.err = corrupt("%s", what)
	}
}

func (r *byteReader) byte() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.fail("truncated")
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *byteReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *byteReader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *byteReader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.fail("length past the end")
		return nil
	}
	out := r.b[:n:n]
	r.b = r.b[n:]
	return out
}

// count reads an element count and checks it against the bytes left, each
// element taking at least min bytes, so garbage cannot make us allocate.
func (r *byteReader) count(min int) int {
	n := r.uvarint()
	if r.err != nil {
		return 0
	}
	if n > uint64(len(r.b)/min) {
		r.fail("count past the end")
		return 0
	}
	return int(n)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}
