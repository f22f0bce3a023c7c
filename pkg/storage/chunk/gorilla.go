package chunk

import (
	"math"
	"math/bits"
)

// Gorilla's two streams (Pelkonen et al., "Gorilla: A Fast, Scalable,
// In-Memory Time Series Database", VLDB 2015, §4.1), as bit streams.

// TimestampEncoder writes timestamps as delta-of-deltas: a regular
// interval costs one bit per timestamp. Arithmetic wraps, so any int64
// sequence round-trips.
//
//	'0'                 delta-of-delta 0
//	'10'   + 7 bits     -63..64
//	'110'  + 9 bits     -255..256
//	'1110' + 12 bits    -2047..2048
//	'1111' + 64 bits    anything else
type TimestampEncoder struct {
	w         bitWriter
	n         int
	prev      int64
	prevDelta int64
}

// Append adds the next timestamp.
func (e *TimestampEncoder) Append(t int64) {
	if e.n == 0 {
		e.w.writeBits(uint64(t), 64)
		e.prev = t
		e.n++
		return
	}
	delta := int64(uint64(t) - uint64(e.prev))
	dod := int64(uint64(delta) - uint64(e.prevDelta))
	switch {
	case dod == 0:
		e.w.writeBit(false)
	case dod >= -63 && dod <= 64:
		e.w.writeBits(0b10, 2)
		e.w.writeBits(uint64(dod+63), 7)
	case dod >= -255 && dod <= 256:
		e.w.writeBits(0b110, 3)
		e.w.writeBits(uint64(dod+255), 9)
	case dod >= -2047 && dod <= 2048:
		e.w.writeBits(0b1110, 4)
		e.w.writeBits(uint64(dod+2047), 12)
	default:
		e.w.writeBits(0b1111, 4)
		e.w.writeBits(uint64(dod), 64)
	}
	e.prev, e.prevDelta = t, delta
	e.n++
}

// Bytes returns the stream (the last byte padded with zero bits).
func (e *TimestampEncoder) Bytes() []byte { return e.w.b }

// TimestampDecoder reads n timestamps written by TimestampEncoder.
type TimestampDecoder struct {
	r         bitReader
	n         int
	prev      int64
	prevDelta int64
}

// NewTimestampDecoder reads the stream b.
func NewTimestampDecoder(b []byte) *TimestampDecoder {
	return &TimestampDecoder{r: bitReader{b: b}}
}

// Next returns the next timestamp; err is set when the stream ends early.
func (d *TimestampDecoder) Next() (int64, error) {
	if d.n == 0 {
		d.prev = int64(d.r.readBits(64))
		d.n++
		return d.prev, d.r.err
	}
	var dod int64
	switch {
	case !d.r.readBit():
	case !d.r.readBit():
		dod = int64(d.r.readBits(7)) - 63
	case !d.r.readBit():
		dod = int64(d.r.readBits(9)) - 255
	case !d.r.readBit():
		dod = int64(d.r.readBits(12)) - 2047
	default:
		dod = int64(d.r.readBits(64))
	}
	d.prevDelta = int64(uint64(d.prevDelta) + uint64(dod))
	d.prev = int64(uint64(d.prev) + uint64(d.prevDelta))
	d.n++
	return d.prev, d.r.err
}

// XOREncoder writes float64 values XOR-ed with their predecessor: a
// repeated value costs one bit, a value sharing its predecessor's sign,
// exponent and high mantissa bits costs few. Values are kept bit for bit
// (NaN payloads, -0 and ±Inf included).
//
//	first value         64 bits
//	'0'                 the same bits as the previous value
//	'10' + bits         the XOR's meaningful bits fit the previous window
//	'11' + 5 bits leading zeros + 6 bits (length-1) + bits
type XOREncoder struct {
	w                 bitWriter
	n                 int
	prev              uint64
	leading, trailing uint
	haveWindow        bool
}

// Append adds the next value.
func (e *XOREncoder) Append(v float64) {
	b := math.Float64bits(v)
	if e.n == 0 {
		e.w.writeBits(b, 64)
		e.prev = b
		e.n++
		return
	}
	x := b ^ e.prev
	e.prev = b
	e.n++
	if x == 0 {
		e.w.writeBit(false)
		return
	}
	e.w.writeBit(true)
	lead := uint(bits.LeadingZeros64(x))
	trail := uint(bits.TrailingZeros64(x))
	if lead > 31 {
		lead = 31
	}
	if e.haveWindow && lead >= e.leading && trail >= e.trailing {
		e.w.writeBit(false)
		e.w.writeBits(x>>e.trailing, 64-e.leading-e.trailing)
		return
	}
	e.w.writeBit(true)
	sig := 64 - lead - trail
	e.w.writeBits(uint64(lead), 5)
	e.w.writeBits(uint64(sig-1), 6)
	e.w.writeBits(x>>trail, sig)
	e.leading, e.trailing, e.haveWindow = lead, trail, true
}

// Bytes returns the stream (the last byte padded with zero bits).
func (e *XOREncoder) Bytes() []byte { return e.w.b }

// XORDecoder reads values written by XOREncoder.
type XORDecoder struct {
	r                 bitReader
	n                 int
	prev              uint64
	leading, trailing uint
	windowSet         bool
}

// NewXORDecoder reads the stream b.
func NewXORDecoder(b []byte) *XORDecoder { return &XORDecoder{r: bitReader{b: b}} }

// Next returns the next value; err is set when the stream is corrupt or
// ends early.
func (d *XORDecoder) Next() (float64, error) {
	if d.n == 0 {
		d.prev = d.r.readBits(64)
		d.n++
		return math.Float64frombits(d.prev), d.r.err
	}
	d.n++
	if !d.r.readBit() {
		return math.Float64frombits(d.prev), d.r.err
	}
	if d.r.readBit() {
		lead := uint(d.r.readBits(5))
		sig := uint(d.r.readBits(6)) + 1
		if lead+sig > 64 {
			if d.r.err == nil {
				d.r.err = corrupt("xor window %d+%d bits", lead, sig)
			}
			return 0, d.r.err
		}
		d.leading, d.trailing, d.windowSet = lead, 64-lead-sig, true
	} else if !d.windowSet {
		if d.r.err == nil {
			d.r.err = corrupt("xor value reuses a window before the first")
		}
		return 0, d.r.err
	}
	x := d.r.readBits(64-d.leading-d.trailing) << d.trailing
	d.prev ^= x
	return math.Float64frombits(d.prev), d.r.err
}
