package chunk

import (
	"math/bits"

	"github.com/monitorhq/monitor/pkg/storage"
)

// Decimal columns. Most metrics are decimals with few digits (percentages
// rounded to 0.01, byte counts, load averages): their XOR-ed float bits
// differ in almost every mantissa bit, so Gorilla's XOR spends 40–60 bits
// on them. Written as integers m with v == m / 10^k (k the column's scale)
// and bit-packed in blocks against the block's minimum (frame of
// reference), they take about the bits their spread needs. A column
// packs either the integers themselves (independent values) or their
// deltas (values that wander), whichever is smaller.

const (
	maxScale  = storage.MaxDecimalScale // 10^15 and m < 2^53 are exact in float64
	blockSize = 128                     // values per packed block
)

// decimalColumn returns the column as integers of one scale, or ok false
// when some value has no exact decimal form within maxScale digits.
func decimalColumn(vals []float64, ints []int64) (k int, out []int64, ok bool) {
	out = ints[:0]
	for _, v := range vals {
		for {
			if _, ok := storage.DecimalAt(v, k); ok {
				break
			}
			k++
			if k > maxScale {
				return 0, nil, false
			}
		}
	}
	for _, v := range vals {
		m, ok := storage.DecimalAt(v, k)
		if !ok {
			return 0, nil, false
		}
		out = append(out, m)
	}
	return k, out, true
}

// packedBits is what packBlocks writes for ints, in bits.
func packedBits(ints []int64) int {
	total := 0
	for start := 0; start < len(ints); start += blockSize {
		blk := ints[start:min(start+blockSize, len(ints))]
		lo, hi := blk[0], blk[0]
		for _, v := range blk[1:] {
			lo, hi = min(lo, v), max(hi, v)
		}
		total += 7 + bits.Len64(zigzag(lo)) + 7 + len(blk)*bits.Len64(uint64(hi)-uint64(lo))
	}
	return total
}

// packBlocks writes ints in blocks of blockSize: the block's minimum
// (zigzag, writeVarBits), the width w (7 bits), then each value minus the
// minimum in w bits.
func packBlocks(w *bitWriter, ints []int64) {
	for start := 0; start < len(ints); start += blockSize {
		blk := ints[start:min(start+blockSize, len(ints))]
		lo, hi := blk[0], blk[0]
		for _, v := range blk[1:] {
			lo, hi = min(lo, v), max(hi, v)
		}
		width := uint(bits.Len64(uint64(hi) - uint64(lo)))
		w.writeVarBits(zigzag(lo))
		w.writeBits(uint64(width), 7)
		if width == 0 {
			continue
		}
		for _, v := range blk {
			w.writeBits(uint64(v)-uint64(lo), width)
		}
	}
}

// unpackBlocks reads n integers written by packBlocks into out[:0].
func unpackBlocks(r *bitReader, n int, out []int64) []int64 {
	out = out[:0]
	for len(out) < n && r.err == nil {
		cnt := min(blockSize, n-len(out))
		lo := unzigzag(r.readVarBits())
		width := uint(r.readBits(7))
		if width > 64 {
			r.err = corrupt("block width %d", width)
			break
		}
		if width == 0 {
			for i := 0; i < cnt; i++ {
				out = append(out, lo)
			}
			continue
		}
		if r.pos+uint64(width)*uint64(cnt) > uint64(len(r.b))*8 {
			r.fail()
			break
		}
		for i := 0; i < cnt; i++ {
			out = append(out, int64(uint64(lo)+r.readBits(width)))
		}
	}
	return out
}
