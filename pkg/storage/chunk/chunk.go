// Package chunk is the compressed form of a host's snapshots that the
// compact storage layout keeps (pkg/storage/redisstore with Layout compact,
// and pkg/storage/embedded): a chunk holds one host's snapshots of a span
// of time, every series of them, column by column.
//
// # Encoding (format version 1)
//
// Timestamps are one Gorilla delta-of-delta bit stream (TimestampEncoder):
// a snapshot every 5 s costs one bit. Each series is a column; its values
// are either Gorilla XOR-ed floats (XOREncoder), or — when every value of
// the column is a decimal m/10^k with |m| < 2^53 and k <= 15, as most
// metrics are — integers bit-packed in blocks of 128 against the block's
// minimum, the integers themselves or their deltas, whichever is smaller
// (decimal.go). Every float64 comes back bit for bit: NaN payloads, -0 and
// ±Inf take the XOR path.
//
//	byte     version (1)
//	uvarint  n, snapshots (1..MaxSnapshots), timestamps strictly increasing
//	uvarint  length, then the timestamp stream
//	uvarint  T, tag sets (>= 1); per set: uvarint count, then per tag,
//	         sorted by name: string name, string value
//	         (T > 1: then n uvarints, each snapshot's set)
//	uvarint  S, series; per series, sorted by key:
//	         string key, uvarint length, then the column:
//	  byte     flags: bit 0 present in every snapshot; bits 1-2 mode
//	           (0 XOR floats, 1 packed decimals, 2 packed decimal deltas)
//	  bitmap   ceil(n/8) bytes, bit i (MSB first) set when snapshot i has
//	           the series (absent when bit 0 of flags is set)
//	  uvarint  R, unit runs (>= 1 when present anywhere); per run:
//	           uvarint first value index, string unit
//	  byte     k, the decimal scale (modes 1 and 2)
//	  bits     the values (mode 2: the first integer, then the deltas)
//
// Strings are a uvarint length and the bytes. Columns carry their length,
// so a query for a few series skips the others without decoding them.
//
// Records (record.go, and schema.go for version 2) are the uncompressed
// form of one snapshot, for the open end of a host's data that is not
// sealed into a chunk yet.
//
// Concurrency: Encode and AppendSchemaRecord are pure functions; a
// Decoder is used by one goroutine at a time (it keeps scratch space,
// interned strings, the schemas it was given and the arena of the records
// it decoded).
package chunk

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"maps"
	"math/bits"
	"slices"
	"strings"

	"github.com/monitorhq/monitor/pkg/storage"
)

// Version is the chunk format version Encode writes.
const Version = 1

// Limits a chunk keeps (Encode refuses more; Decode refuses a chunk that
// claims more): they bound what a corrupt chunk can make a reader allocate.
const (
	MaxSnapshots = 1 << 16
	MaxSamples   = 1 << 22
)

const (
	modeXOR    = 0
	modeValues = 1
	modeDeltas = 2
)

type column struct {
	key     string
	present []byte // bitmap, nil while present in every snapshot so far
	count   int    // values
	vals    []float64
	runs    []unitRun // where the unit changes, by value index
}

// Encode appends the chunk of snaps to dst. The snapshots are one host's
// (HostID is not stored: the key names the host), in strictly increasing
// timestamp order; a series repeated within a snapshot keeps its last
// value, as a stored snapshot does.
func Encode(dst []byte, snaps []storage.Snapshot) ([]byte, error) {
	n := len(snaps)
	if n == 0 || n > MaxSnapshots {
		return dst, fmt.Errorf("encode chunk: %d snapshots, want 1..%d", n, MaxSnapshots)
	}
	var te TimestampEncoder
	cols := make(map[string]*column, len(snaps[0].Samples))
	total := 0
	for i := range snaps {
		s := &snaps[i]
		if i > 0 && s.Timestamp <= snaps[i-1].Timestamp {
			return dst, fmt.Errorf("encode chunk: timestamp %d after %d: not strictly increasing", s.Timestamp, snaps[i-1].Timestamp)
		}
		te.Append(s.Timestamp)
		samples := storage.LastSamples(s.Samples)
		total += len(samples)
		if total > MaxSamples {
			return dst, fmt.Errorf("encode chunk: more than %d samples", MaxSamples)
		}
		for j := range samples {
			smp := &samples[j]
			c := cols[smp.Series]
			if c == nil {
				c = &column{key: smp.Series, vals: make([]float64, 0, n-i)}
				cols[smp.Series] = c
			}
			if c.count != i || c.present != nil {
				if c.present == nil {
					c.present = make([]byte, (n+7)/8)
					for k := 0; k < c.count; k++ {
						c.present[k>>3] |= 0x80 >> (k & 7)
					}
				}
				c.present[i>>3] |= 0x80 >> (i & 7)
			}
			c.count++
			if len(c.runs) == 0 || c.runs[len(c.runs)-1].unit != smp.Unit {
				c.runs = append(c.runs, unitRun{start: c.count - 1, unit: smp.Unit})
			}
			c.vals = append(c.vals, smp.Value)
		}
	}
	dst = append(dst, Version)
	dst = binary.AppendUvarint(dst, uint64(n))
	dst = binary.AppendUvarint(dst, uint64(len(te.Bytes())))
	dst = append(dst, te.Bytes()...)
	dst = appendTags(dst, snaps)

	order := make([]*column, 0, len(cols))
	for _, c := range cols {
		order = append(order, c)
	}
	slices.SortFunc(order, func(a, b *column) int { return strings.Compare(a.key, b.key) })
	dst = binary.AppendUvarint(dst, uint64(len(order)))
	var colBuf []byte
	var ints, deltas []int64
	for _, c := range order {
		if c.count != n && c.present == nil {
			// Present in a prefix of the snapshots only.
			c.present = make([]byte, (n+7)/8)
			for k := 0; k < c.count; k++ {
				c.present[k>>3] |= 0x80 >> (k & 7)
			}
		}
		colBuf, ints, deltas = appendColumn(colBuf[:0], c, ints, deltas)
		dst = appendString(dst, c.key)
		dst = binary.AppendUvarint(dst, uint64(len(colBuf)))
		dst = append(dst, colBuf...)
	}
	return dst, nil
}

// appendTags writes the distinct tag sets and, with more than one, each
// snapshot's.
func appendTags(dst []byte, snaps []storage.Snapshot) []byte {
	var sets [][]byte
	idx := make([]int, len(snaps))
	byEnc := map[string]int{}
	var names []string
	for i := range snaps {
		if i > 0 && maps.Equal(snaps[i].Tags, snaps[i-1].Tags) {
			idx[i] = idx[i-1]
			continue
		}
		names = names[:0]
		for k := range snaps[i].Tags {
			names = append(names, k)
		}
		slices.Sort(names)
		enc := binary.AppendUvarint(nil, uint64(len(names)))
		for _, k := range names {
			enc = appendString(enc, k)
			enc = appendString(enc, snaps[i].Tags[k])
		}
		j, ok := byEnc[string(enc)]
		if !ok {
			j = len(sets)
			byEnc[string(enc)] = j
			sets = append(sets, enc)
		}
		idx[i] = j
	}
	dst = binary.AppendUvarint(dst, uint64(len(sets)))
	for _, s := range sets {
		dst = append(dst, s...)
	}
	if len(sets) > 1 {
		for _, j := range idx {
			dst = binary.AppendUvarint(dst, uint64(j))
		}
	}
	return dst
}

func appendColumn(b []byte, c *column, ints, deltas []int64) ([]byte, []int64, []int64) {
	mode := modeXOR
	k, ints, ok := decimalColumn(c.vals, ints)
	if ok {
		mode = modeValues
		deltas = deltas[:0]
		for i := 1; i < len(ints); i++ {
			deltas = append(deltas, ints[i]-ints[i-1])
		}
		if 7+bits.Len64(zigzag(ints[0]))+packedBits(deltas) < packedBits(ints) {
			mode = modeDeltas
		}
	}
	flags := byte(mode << 1)
	if c.present == nil {
		flags |= 1
	}
	b = append(b, flags)
	if c.present != nil {
		b = append(b, c.present...)
	}
	b = binary.AppendUvarint(b, uint64(len(c.runs)))
	for _, r := range c.runs {
		b = binary.AppendUvarint(b, uint64(r.start))
		b = appendString(b, r.unit)
	}
	w := bitWriter{b: b}
	switch mode {
	case modeXOR:
		xe := XOREncoder{w: w}
		for _, v := range c.vals {
			xe.Append(v)
		}
		return xe.w.b, ints, deltas
	case modeValues:
		w.b = append(w.b, byte(k))
		w.free = 0
		packBlocks(&w, ints)
	case modeDeltas:
		w.b = append(w.b, byte(k))
		w.free = 0
		w.writeVarBits(zigzag(ints[0]))
		packBlocks(&w, deltas)
	}
	return w.b, ints, deltas
}

// Decoder decodes chunks and records, sharing one string per distinct
// series, unit and tag across everything it decodes: a range over many
// chunks allocates each series name once.
type Decoder struct {
	strs map[string]string
	ts   []int64
	ints []int64
	cols []colRef
	vals []float64
	recs []storage.Sample
	// arena holds the samples of decoded records (keep); block is the
	// size of its current allocation.
	arena []storage.Sample
	block int
	// tagBuf and lastTags: readTags' scratch and the map it made last.
	tagBuf   []string
	lastTags map[string]string
	// schemas of version 2 records (schema.go), kept across calls: a
	// schema never changes.
	schemas map[SchemaID]*schema
}

type colRef struct {
	key     string
	present []byte // nil: every snapshot
	units   []unitRun
	mode    byte
	scale   int
	bits    []byte
	count   int
	// While decoding: the column's values are d.vals[off:], next is the
	// next one to hand out, run its unit run.
	off, next, run int
}

type unitRun struct {
	start int
	unit  string
}

// NewDecoder returns a Decoder.
func NewDecoder() *Decoder { return &Decoder{strs: make(map[string]string, 64)} }

func (d *Decoder) intern(b []byte) string {
	if s, ok := d.strs[string(b)]; ok { // no allocation for the lookup
		return s
	}
	s := string(b)
	d.strs[s] = s
	return s
}

// Decode appends to dst the chunk's snapshots with from <= timestamp <= to,
// as host hostID, in timestamp order, each with the samples m selects
// (every sample when m is nil) sorted by series; a snapshot left without
// samples is kept. Snapshots of the call with the same tags share one
// map, made by this call: callers treat it as read-only.
func (d *Decoder) Decode(dst []storage.Snapshot, b []byte, hostID string, from, to int64, m *storage.Matcher) ([]storage.Snapshot, error) {
	r := byteReader{b: b}
	if v := r.byte(); r.err == nil && v != Version {
		return dst, corrupt("chunk format version %d, want %d", v, Version)
	}
	n64 := r.uvarint()
	if r.err == nil && (n64 == 0 || n64 > MaxSnapshots) {
		return dst, corrupt("%d snapshots", n64)
	}
	n := int(n64)
	tsBits := r.bytes()
	if r.err != nil {
		return dst, r.err
	}
	td := TimestampDecoder{r: bitReader{b: tsBits}}
	d.ts = d.ts[:0]
	for i := 0; i < n; i++ {
		t, err := td.Next()
		if err != nil {
			return dst, err
		}
		if i > 0 && t <= d.ts[i-1] {
			return dst, corrupt("timestamps not increasing")
		}
		d.ts = append(d.ts, t)
	}
	sets := make([]map[string]string, r.count(1))
	if r.err == nil && len(sets) == 0 {
		return dst, corrupt("no tag set")
	}
	for i := range sets {
		cnt := r.count(2)
		if cnt > 0 {
			sets[i] = make(map[string]string, cnt)
		}
		for j := 0; j < cnt && r.err == nil; j++ {
			k := r.bytes()
			v := r.bytes()
			if r.err == nil {
				sets[i][d.intern(k)] = d.intern(v)
			}
		}
	}
	var setOf []int32
	if len(sets) > 1 {
		setOf = make([]int32, n)
		for i := range setOf {
			j := r.uvarint()
			if r.err == nil && j >= uint64(len(sets)) {
				return dst, corrupt("tag set %d of %d", j, len(sets))
			}
			setOf[i] = int32(j)
		}
	}
	if r.err != nil {
		return dst, r.err
	}
	lo, _ := slices.BinarySearch(d.ts, from)
	hi, found := slices.BinarySearch(d.ts, to)
	if found {
		hi++
	}
	if lo >= hi {
		return dst, d.skipColumns(&r)
	}

	// Columns: headers first, then each selected column's values up to
	// the last wanted snapshot into d.vals, then the samples snapshot by
	// snapshot: the arena fills in order, each snapshot's samples sorted
	// as the columns are.
	S := r.count(2)
	d.cols = d.cols[:0]
	d.vals = d.vals[:0]
	var prevKey []byte
	total, wanted := 0, 0
	for s := 0; s < S && r.err == nil; s++ {
		key := r.bytes()
		col := r.bytes()
		if r.err != nil {
			break
		}
		if s > 0 && string(key) <= string(prevKey) {
			return dst, corrupt("series not sorted")
		}
		prevKey = key
		name := d.intern(key)
		if m != nil && !m.Match(name) {
			continue
		}
		c, err := parseColumn(d, name, col, n)
		if err != nil {
			return dst, err
		}
		total += c.count
		if total > MaxSamples {
			return dst, corrupt("more than %d samples", MaxSamples)
		}
		need, skip := hi, lo
		if c.present != nil {
			need, skip = countBits(c.present, hi), countBits(c.present, lo)
		}
		c.off = len(d.vals)
		if err := d.decodeValues(&c, need); err != nil {
			return dst, err
		}
		c.next = c.off + skip
		for c.run+1 < len(c.units) && c.units[c.run+1].start <= skip {
			c.run++
		}
		wanted += need - skip
		d.cols = append(d.cols, c)
	}
	if r.err != nil {
		return dst, r.err
	}
	if len(r.b) != 0 {
		return dst, corrupt("%d trailing bytes", len(r.b))
	}
	arena := make([]storage.Sample, wanted)
	pos := 0
	for i := lo; i < hi; i++ {
		first := pos
		for ci := range d.cols {
			c := &d.cols[ci]
			if c.present != nil && c.present[i>>3]&(0x80>>(i&7)) == 0 {
				continue
			}
			j := c.next - c.off
			for c.run+1 < len(c.units) && c.units[c.run+1].start <= j {
				c.run++
			}
			arena[pos] = storage.Sample{Series: c.key, Value: d.vals[c.next], Unit: c.units[c.run].unit}
			c.next++
			pos++
		}
		sn := storage.Snapshot{HostID: hostID, Timestamp: d.ts[i]}
		set := sets[0]
		if setOf != nil {
			set = sets[setOf[i]]
		}
		if len(set) > 0 {
			sn.Tags = set
		}
		if pos > first {
			sn.Samples = arena[first:pos:pos]
		}
		dst = append(dst, sn)
	}
	return dst, nil
}

// countBits counts the set bits of the first n bits of bitmap (MSB
// first).
func countBits(bitmap []byte, n int) int {
	c := 0
	for _, x := range bitmap[:n>>3] {
		c += bits.OnesCount8(x)
	}
	if n&7 != 0 {
		c += bits.OnesCount8(bitmap[n>>3] & byte(0xff<<(8-n&7)))
	}
	return c
}

// skipColumns checks the framing of the columns of a chunk none of whose
// snapshots are wanted.
func (d *Decoder) skipColumns(r *byteReader) error {
	S := r.count(2)
	for s := 0; s < S && r.err == nil; s++ {
		r.bytes()
		r.bytes()
	}
	if r.err == nil && len(r.b) != 0 {
		return corrupt("%d trailing bytes", len(r.b))
	}
	return r.err
}

func parseColumn(d *Decoder, name string, col []byte, n int) (colRef, error) {
	c := colRef{key: name}
	r := byteReader{b: col}
	flags := r.byte()
	if r.err != nil {
		return c, r.err
	}
	if flags>>3 != 0 {
		return c, corrupt("column %s: flags %#x", name, flags)
	}
	c.mode = (flags >> 1) & 3
	if c.mode > modeDeltas {
		return c, corrupt("column %s: mode %d", name, c.mode)
	}
	c.count = n
	if flags&1 == 0 {
		nb := (n + 7) / 8
		if len(r.b) < nb {
			return c, corrupt("column %s: bitmap truncated", name)
		}
		c.present = r.b[:nb:nb]
		r.b = r.b[nb:]
		c.count = 0
		for i, x := range c.present {
			if i == nb-1 && n%8 != 0 {
				x &= byte(0xff << (8 - n%8))
			}
			c.count += bits.OnesCount8(x)
		}
	}
	runs := r.count(2)
	if r.err == nil && (runs == 0) != (c.count == 0) {
		return c, corrupt("column %s: %d unit runs for %d values", name, runs, c.count)
	}
	c.units = make([]unitRun, 0, runs)
	for i := 0; i < runs && r.err == nil; i++ {
		start := r.uvarint()
		u := r.bytes()
		if r.err != nil {
			break
		}
		if (i == 0 && start != 0) || (i > 0 && start <= uint64(c.units[i-1].start)) || start >= uint64(c.count) {
			return c, corrupt("column %s: unit run at %d", name, start)
		}
		c.units = append(c.units, unitRun{start: int(start), unit: d.intern(u)})
	}
	if c.mode != modeXOR {
		k := r.byte()
		if r.err == nil && k > maxScale {
			return c, corrupt("column %s: scale %d", name, k)
		}
		c.scale = int(k)
	}
	if r.err != nil {
		return c, fmt.Errorf("column %s: %w", name, r.err)
	}
	c.bits = r.b
	return c, nil
}

// decodeValues appends the column's first need values to d.vals.
func (d *Decoder) decodeValues(c *colRef, need int) error {
	if need == 0 {
		return nil
	}
	switch c.mode {
	case modeXOR:
		xd := XORDecoder{r: bitReader{b: c.bits}}
		for j := 0; j < need; j++ {
			v, err := xd.Next()
			if err != nil {
				return fmt.Errorf("column %s: %w", c.key, err)
			}
			d.vals = append(d.vals, v)
		}
	case modeValues, modeDeltas:
		br := bitReader{b: c.bits}
		if c.mode == modeValues {
			d.ints = unpackBlocks(&br, need, d.ints)
		} else {
			first := unzigzag(br.readVarBits())
			d.ints = append(unpackBlocks(&br, need-1, d.ints[:0]), 0)
			copy(d.ints[1:], d.ints[:need-1])
			d.ints[0] = first
			for j := 1; j < len(d.ints); j++ {
				d.ints[j] = int64(uint64(d.ints[j-1]) + uint64(d.ints[j]))
			}
		}
		if br.err != nil {
			return fmt.Errorf("column %s: %w", c.key, br.err)
		}
		for _, m := range d.ints {
			d.vals = append(d.vals, storage.FromDecimal(m, c.scale))
		}
	}
	return nil
}

// Span is the first and last timestamp of a chunk and its snapshot count,
// read from its header without decoding the columns.
func Span(b []byte) (first, last int64, n int, err error) {
	r := byteReader{b: b}
	if v := r.byte(); r.err == nil && v != Version {
		return 0, 0, 0, corrupt("chunk format version %d, want %d", v, Version)
	}
	n64 := r.uvarint()
	if r.err == nil && (n64 == 0 || n64 > MaxSnapshots) {
		return 0, 0, 0, corrupt("%d snapshots", n64)
	}
	tsBits := r.bytes()
	if r.err != nil {
		return 0, 0, 0, r.err
	}
	td := TimestampDecoder{r: bitReader{b: tsBits}}
	for i := 0; i < int(n64); i++ {
		t, err := td.Next()
		if err != nil {
			return 0, 0, 0, err
		}
		if i == 0 {
			first = t
		}
		last = t
	}
	return first, last, int(n64), nil
}

// Merge returns the union of two timestamp-ordered snapshot lists; where
// both hold a timestamp, b's snapshot wins (the newer write).
func Merge(a, b []storage.Snapshot) []storage.Snapshot {
	if len(a) == 0 {
		return b
	}
	if len(b) == 0 {
		return a
	}
	out := make([]storage.Snapshot, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || (i < len(a) && a[i].Timestamp < b[j].Timestamp):
			out = append(out, a[i])
			i++
		case i == len(a) || b[j].Timestamp < a[i].Timestamp:
			out = append(out, b[j])
			j++
		default:
			out = append(out, b[j])
			i++
			j++
		}
	}
	return out
}

// SortDedup sorts snaps by timestamp and keeps, per timestamp, the last
// one in the input order (the one a store keeps).
func SortDedup(snaps []storage.Snapshot) []storage.Snapshot {
	slices.SortStableFunc(snaps, func(a, b storage.Snapshot) int { return cmp.Compare(a.Timestamp, b.Timestamp) })
	out := snaps[:0]
	for i := range snaps {
		if i+1 < len(snaps) && snaps[i+1].Timestamp == snaps[i].Timestamp {
			continue
		}
		out = append(out, snaps[i])
	}
	return out
}
