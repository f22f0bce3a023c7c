package chunk

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/monitorhq/monitor/pkg/storage"
)

// Schema records (record version 2) keep a snapshot's series names and
// units apart from its values: a host sends the same series every 5 s,
// and their names are most of a version 1 record (1.6 of 2 KB for the
// load generator's 50 series). The names go into schemas, stored once per
// head under their content's hash, and each record carries the hashes and
// the values only. A snapshot's series are split into groups by metric
// family (the series key up to its first '.' or '{': cpu, mem, disk,
// process, …), one schema per group, so series that come and go (a
// process's metrics, labelled with its pid) change only their family's
// schema: on a real agent's data, 714 snapshots of 156 series, one schema
// per snapshot would have cost 4.4 MB (668 distinct schemas) against
// 4.6 MB of version 1 records; per family it is 0.9 MB.
//
//	schema:  byte     schema version (1)
//	         uvarint  series count, then per series, sorted:
//	                  string series, string unit
//	record:  byte     record version (2)
//	         uvarint  tag count, then per tag: string name, string value
//	         uvarint  group count, then per group:
//	           12 bytes the schema's id: SHA-256 of its bytes, first 12
//	           uvarint  the schema's series count
//	           per series of the schema, in its order: the value in
//	           storage.AppendValue's form (a kind byte, then a varint for
//	           integers and decimals of up to 6 digits — 47.83 takes 3
//	           bytes, not 9 — or the float64's 8 bytes)
//
// A schema is content-addressed, so it never changes: any writer may store
// it again, and readers may cache it forever.

// Record and schema versions.
const (
	RecordVersionSchema = 2
	SchemaVersion       = 1
	// SchemaIDLen is the length of a schema id.
	SchemaIDLen = 12

	maxSchemaSeries = 1 << 16
)

// ErrNoSchema is returned by DecodeRecord for a version 2 record whose
// schema the Decoder has not been given (AddSchema).
var ErrNoSchema = errors.New("record schema not known")

// SchemaID is a schema's id, the key its records refer to it by.
type SchemaID [SchemaIDLen]byte

type schema struct {
	series, units []string
}

// AppendSchemaRecord appends the version 2 record of s to rec and calls
// schema for each of its groups' schemas (the caller stores those its
// reader may not have; the bytes are valid during the call only).
func AppendSchemaRecord(rec []byte, s *storage.Snapshot, schema func(id SchemaID, b []byte)) []byte {
	order := SampleOrder(s.Samples, nil)
	n := len(s.Samples)
	if order != nil {
		n = len(order)
	}
	at := func(i int) *storage.Sample {
		if order == nil {
			return &s.Samples[i]
		}
		return &s.Samples[order[i]]
	}
	rec = append(rec, RecordVersionSchema)
	rec = binary.AppendUvarint(rec, uint64(len(s.Tags)))
	for k, v := range s.Tags {
		rec = appendString(rec, k)
		rec = appendString(rec, v)
	}
	// Groups in the order of their first series; a group's series are
	// mostly contiguous in sorted order, but need not be (cpu.a < cpu_x <
	// cpu{k=v}): collect each group's sample indexes.
	type group struct {
		family string
		idx    []int
	}
	var groups []group // a handful: a linear search beats a map
	last := -1
	for i := 0; i < n; i++ {
		f := family(at(i).Series)
		if last < 0 || groups[last].family != f {
			last = slices.IndexFunc(groups, func(g group) bool { return g.family == f })
			if last < 0 {
				groups = append(groups, group{family: f})
				last = len(groups) - 1
			}
		}
		groups[last].idx = append(groups[last].idx, i)
	}
	rec = binary.AppendUvarint(rec, uint64(len(groups)))
	var sch []byte
	for _, g := range groups {
		idx := g.idx
		sch = append(sch[:0], SchemaVersion)
		sch = binary.AppendUvarint(sch, uint64(len(idx)))
		for _, i := range idx {
			sch = appendString(sch, at(i).Series)
			sch = appendString(sch, at(i).Unit)
		}
		sum := sha256.Sum256(sch)
		id := SchemaID(sum[:SchemaIDLen])
		schema(id, sch)
		rec = append(rec, id[:]...)
		rec = binary.AppendUvarint(rec, uint64(len(idx)))
		for _, i := range idx {
			rec = storage.AppendValue(rec, at(i).Value)
		}
	}
	return rec
}

// family is the group a series' schema is in: its key up to the first
// '.' or '{'.
func family(series string) string {
	for i := 0; i < len(series); i++ {
		if series[i] == '.' || series[i] == '{' {
			return series[:i]
		}
	}
	return series
}

// RecordSchemas returns the schema ids a version 2 record refers to
// that d has not been given; ok is false when data is not a version 2
// record that decodes this far.
func (d *Decoder) RecordSchemas(data []byte) (missing []SchemaID, ok bool) {
	r := byteReader{b: data}
	if r.byte() != RecordVersionSchema {
		return nil, false
	}
	n := r.count(2)
	for i := 0; i < n && r.err == nil; i++ {
		r.bytes()
		r.bytes()
	}
	groups := r.count(SchemaIDLen)
	for g := 0; g < groups && r.err == nil; g++ {
		id, cnt := d.groupHeader(&r)
		if _, known := d.schemas[id]; !known && r.err == nil {
			missing = append(missing, id)
		}
		for j := 0; j < cnt && r.err == nil; j++ {
			d.readValue(&r)
		}
	}
	return missing, r.err == nil
}

// groupHeader reads a group's schema id and value count.
func (d *Decoder) groupHeader(r *byteReader) (SchemaID, int) {
	var id SchemaID
	if r.err != nil {
		return id, 0
	}
	if len(r.b) < SchemaIDLen {
		r.fail("record truncated in a schema id")
		return id, 0
	}
	id = SchemaID(r.b[:SchemaIDLen])
	r.b = r.b[SchemaIDLen:]
	return id, r.count(2)
}

// AddSchema parses a schema and keeps it for the version 2 records this
// Decoder decodes. The id is the one records refer to it by; a schema
// whose content does not hash to id is refused.
func (d *Decoder) AddSchema(id SchemaID, b []byte) error {
	if _, ok := d.schemas[id]; ok {
		return nil
	}
	sum := sha256.Sum256(b)
	if [SchemaIDLen]byte(sum[:SchemaIDLen]) != id {
		return corrupt("schema %x: content does not match its id", id)
	}
	r := byteReader{b: b}
	if v := r.byte(); r.err == nil && v != SchemaVersion {
		return corrupt("schema version %d, want %d", v, SchemaVersion)
	}
	n := r.count(2)
	if n > maxSchemaSeries {
		return corrupt("schema of %d series", n)
	}
	sc := &schema{series: make([]string, 0, n), units: make([]string, 0, n)}
	for i := 0; i < n && r.err == nil; i++ {
		series := r.bytes()
		unit := r.bytes()
		if r.err != nil {
			break
		}
		name := d.intern(series)
		if i > 0 && name <= sc.series[i-1] {
			return corrupt("schema %x: series not sorted", id)
		}
		sc.series = append(sc.series, name)
		sc.units = append(sc.units, d.intern(unit))
	}
	if r.err != nil {
		return fmt.Errorf("schema %x: %w", id, r.err)
	}
	if len(r.b) != 0 {
		return corrupt("schema %x: %d trailing bytes", id, len(r.b))
	}
	if d.schemas == nil {
		d.schemas = map[SchemaID]*schema{}
	}
	d.schemas[id] = sc
	return nil
}

// decodeSchemaRecord decodes the rest of a version 2 record (after its
// version byte) into s.
func (d *Decoder) decodeSchemaRecord(r *byteReader, m *storage.Matcher, s *storage.Snapshot) error {
	s.Tags = d.readTags(r)
	groups := r.count(SchemaIDLen)
	// The samples go straight into the record arena (keep), the record's
	// run of it starting at first.
	first := len(d.arena)
	sorted := true
	total := 0
	for g := 0; g < groups && r.err == nil; g++ {
		id, cnt := d.groupHeader(r)
		if r.err != nil {
			break
		}
		sc, ok := d.schemas[id]
		if !ok {
			d.arena = d.arena[:first]
			return fmt.Errorf("%w: %x", ErrNoSchema, id)
		}
		if cnt != len(sc.series) {
			d.arena = d.arena[:first]
			return corrupt("record group of %d values, its schema has %d series", cnt, len(sc.series))
		}
		if total += cnt; total > maxSchemaSeries {
			d.arena = d.arena[:first]
			return corrupt("record of more than %d samples", maxSchemaSeries)
		}
		if cap(d.arena)-len(d.arena) < cnt {
			have := d.arena[first:]
			d.block = min(max(2*d.block, 4*(len(have)+cnt)), 4096)
			d.arena = append(make([]storage.Sample, 0, max(d.block, len(have)+cnt)), have...)
			first = 0
		}
		for i := 0; i < cnt && r.err == nil; i++ {
			v := d.readValue(r)
			if r.err != nil || (m != nil && !m.Match(sc.series[i])) {
				continue
			}
			if k := len(d.arena); k > first && d.arena[k-1].Series >= sc.series[i] {
				sorted = false
			}
			d.arena = append(d.arena, storage.Sample{Series: sc.series[i], Value: v, Unit: sc.units[i]})
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = corrupt("record has %d trailing bytes", len(r.b))
	}
	if r.err != nil {
		d.arena = d.arena[:first]
		return r.err
	}
	got := d.arena[first:len(d.arena):len(d.arena)]
	if !sorted {
		slices.SortFunc(got, func(a, b storage.Sample) int { return strings.Compare(a.Series, b.Series) })
		for i := 1; i < len(got); i++ {
			if got[i].Series == got[i-1].Series {
				d.arena = d.arena[:first]
				return corrupt("record repeats series %s", got[i].Series)
			}
		}
	}
	if len(got) > 0 {
		s.Samples = got
	}
	return nil
}

// readValue reads one value (storage.AppendValue's form).
func (d *Decoder) readValue(r *byteReader) float64 {
	if r.err != nil {
		return 0
	}
	v, n := storage.DecodeValue(r.b)
	if n == 0 {
		r.fail("bad value")
		return 0
	}
	r.b = r.b[n:]
	return v
}
