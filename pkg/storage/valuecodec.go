package storage

import (
	"encoding/binary"
	"math"
)

// The compact form of one float64 that pkg/storage/chunk's records and the
// rollup buckets (version 2) share: most metric values are integers or
// decimals with a few digits, and a float64's 8 bytes are mostly noise
// for them. Every value comes back bit for bit.
//
//	byte kind, then
//	  kind 0:          float64 bits, 8 bytes little-endian (anything)
//	  kind 1:          zigzag varint: an integral value, |v| < 2^53, not -0
//	  kind 0x10|k:     zigzag varint m, the value m / 10^k, k 1..6
//	                   (47.83 is 0x12 and 4783: 3 bytes, not 9)
const (
	valueFloat   = 0
	valueInt     = 1
	valueDecimal = 0x10
	// maxValueScale bounds the decimals AppendValue tries: beyond six
	// digits a varint is rarely shorter than the float.
	maxValueScale = 6
	// MaxDecimalScale is the largest k DecimalAt accepts: 10^15 and
	// integers below 2^53 are exact in a float64.
	MaxDecimalScale = 15
)

var pow10 = func() [MaxDecimalScale + 1]float64 {
	var p [MaxDecimalScale + 1]float64
	v := 1.0
	for i := range p {
		p[i] = v
		v *= 10
	}
	return p
}()

// DecimalAt returns m with v == FromDecimal(m, k), bit for bit, if there
// is one with |m| < 2^53 (0 <= k <= MaxDecimalScale).
func DecimalAt(v float64, k int) (int64, bool) {
	if v == 0 {
		return 0, !math.Signbit(v)
	}
	s := v * pow10[k]
	if !(math.Abs(s) < 1<<53) { // NaN and ±Inf fail too
		return 0, false
	}
	m := math.Round(s)
	if FromDecimal(int64(m), k) != v {
		return 0, false
	}
	return int64(m), true
}

// FromDecimal returns m / 10^k (0 <= k <= MaxDecimalScale).
func FromDecimal(m int64, k int) float64 {
	if k == 0 {
		return float64(m)
	}
	return float64(m) / pow10[k]
}

// AppendValue appends the compact form of v.
func AppendValue(b []byte, v float64) []byte {
	if v == math.Trunc(v) && math.Abs(v) < 1<<53 && !(v == 0 && math.Signbit(v)) {
		return binary.AppendVarint(append(b, valueInt), int64(v))
	}
	for k := 1; k <= maxValueScale; k++ {
		if m, ok := DecimalAt(v, k); ok {
			if m >= -(1<<48) && m < 1<<48 { // a varint shorter than the float
				return binary.AppendVarint(append(b, valueDecimal|byte(k)), m)
			}
			break
		}
	}
	return binary.LittleEndian.AppendUint64(append(b, valueFloat), math.Float64bits(v))
}

// DecodeValue decodes the compact value at the start of b and returns it
// and its length; n is 0 when b does not start with one.
func DecodeValue(b []byte) (v float64, n int) {
	if len(b) == 0 {
		return 0, 0
	}
	switch kind := b[0]; {
	case kind == valueFloat:
		if len(b) < 9 {
			return 0, 0
		}
		return math.Float64frombits(binary.LittleEndian.Uint64(b[1:])), 9
	case kind == valueInt:
		m, n := binary.Varint(b[1:])
		if n <= 0 {
			return 0, 0
		}
		return float64(m), 1 + n
	case kind&^0xf == valueDecimal && kind&0xf >= 1 && kind&0xf <= maxValueScale:
		m, n := binary.Varint(b[1:])
		if n <= 0 {
			return 0, 0
		}
		return FromDecimal(m, int(kind&0xf)), 1 + n
	}
	return 0, 0
}
