// Package pbwire is the protobuf wire knowledge of proto/monitor.proto that
// the hand-written codecs of the hot paths share: the broker's decoder of
// agents' batches (broker/internal/ingest), its encoder of Subscribe
// streams (broker/internal/service) and the visualization's decoder of
// those streams (visualization/internal/live). It holds the field numbers
// (checked against the generated descriptors by this package's tests, so a
// proto change cannot silently desync the codecs), one field reader, one
// UTF-8 string reader, one map<string, string> entry decoder and the
// encoding's size and append helpers.
//
// The readers follow the generated code's semantics: a malformed tag or
// value, a field number out of range and a proto3 string that is not UTF-8
// are errors; what to do with unknown fields or unexpected wire types is
// the caller's (the codecs skip them, as the generated code does).
//
// Everything here is a pure function of its arguments: safe for concurrent
// use.
package pbwire

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of proto/monitor.proto. They are constants, not values
// looked up at init, so that the codecs' switches compile to what they did
// with literals; TestFieldNumbersMatchDescriptors ties each to the
// generated descriptor, and fails when a message gains a field the codecs
// do not know.
const (
	// IngestRequest (oneof kind).
	IngestRequestHello protowire.Number = 1
	IngestRequestBatch protowire.Number = 2

	// Batch, an agent's.
	BatchSeq       protowire.Number = 1
	BatchSnapshots protowire.Number = 2

	// StoredBatch, a Subscribe stream's message.
	StoredBatchSnapshots protowire.Number = 1
	StoredBatchDropped   protowire.Number = 2

	// Snapshot.
	SnapshotHostID    protowire.Number = 1
	SnapshotTimestamp protowire.Number = 2
	SnapshotTags      protowire.Number = 3
	SnapshotMetrics   protowire.Number = 4

	// Metric.
	MetricName     protowire.Number = 1
	MetricValue    protowire.Number = 2
	MetricUnit     protowire.Number = 3
	MetricPriority protowire.Number = 4
	MetricLabels   protowire.Number = 5

	// A map entry (Snapshot.tags, Metric.labels): protobuf's, fixed.
	EntryKey   protowire.Number = 1
	EntryValue protowire.Number = 2
)

// ErrInvalidUTF8 is returned for a string field that is not valid UTF-8,
// which the generated code refuses in proto3 messages.
var ErrInvalidUTF8 = errors.New("string field contains invalid UTF-8")

// Next reads the first field of data (which must not be empty): its
// number and wire type; v, the payload of a length-delimited field
// (without its length), nil for other wire types; x, the value of a
// varint, fixed32 or fixed64 field; n, its length on the wire, tag
// included (the next field starts at data[n:]). Its checks are the
// generated code's: a malformed tag, a field number out of range, a
// truncated or malformed value (groups included) are errors.
//
// Plain results, not a struct: a caller stored a returned struct to its
// frame and copied it, and the copy's wide load of the narrow stores of
// num and typ stalled store forwarding; the feed's decoding took 15% more
// CPU.
func Next(data []byte) (num protowire.Number, typ protowire.Type, v []byte, x uint64, n int, err error) {
	num, typ, n = protowire.ConsumeTag(data)
	if n < 0 || num > protowire.MaxValidNumber {
		return 0, 0, nil, 0, 0, tagError(num, n)
	}
	var m int
	switch typ {
	case protowire.BytesType:
		v, m = protowire.ConsumeBytes(data[n:])
	case protowire.VarintType:
		x, m = protowire.ConsumeVarint(data[n:])
	case protowire.Fixed64Type:
		x, m = protowire.ConsumeFixed64(data[n:])
	case protowire.Fixed32Type:
		var x32 uint32
		x32, m = protowire.ConsumeFixed32(data[n:])
		x = uint64(x32)
	default:
		m = protowire.ConsumeFieldValue(num, typ, data[n:])
	}
	if m < 0 {
		return 0, 0, nil, 0, 0, valueError(num, m)
	}
	return num, typ, v, x, n + m, nil
}

// tagError and valueError are Next's errors, out of line: inlined, their
// formatting made Next's frame, set up on every call, twice as large.
//
//go:noinline
func tagError(num protowire.Number, n int) error {
	if n < 0 {
		return fmt.Errorf("field tag: %w", protowire.ParseError(n))
	}
	return fmt.Errorf("field number %d is out of range", num)
}

//go:noinline
func valueError(num protowire.Number, m int) error {
	return fmt.Errorf("field %d: %w", num, protowire.ParseError(m))
}

// String is the string of a string field's payload b, field number num;
// ErrInvalidUTF8 (naming num) unless b is UTF-8.
func String(num protowire.Number, b []byte) (string, error) {
	if err := ValidUTF8(num, b); err != nil {
		return "", err
	}
	return string(b), nil
}

// ValidUTF8 is String's check without the conversion, for a caller that
// keeps the bytes until it knows which occurrence of a field wins.
func ValidUTF8(num protowire.Number, b []byte) error {
	if !utf8.Valid(b) {
		return fmt.Errorf("field %d: %w", num, ErrInvalidUTF8)
	}
	return nil
}

// Entry decodes a map<string, string> entry's payload: a key or value
// missing is "", the last of a repeated one wins, fields of another wire
// type or number are skipped, and every occurrence must be UTF-8.
func Entry(data []byte) (k, v string, err error) {
	var kb, vb []byte
	for len(data) > 0 {
		num, typ, b, _, n, err := Next(data)
		if err != nil {
			return "", "", fmt.Errorf("map entry: %w", err)
		}
		data = data[n:]
		if typ != protowire.BytesType || (num != EntryKey && num != EntryValue) {
			continue
		}
		if err := ValidUTF8(num, b); err != nil {
			return "", "", fmt.Errorf("map entry: %w", err)
		}
		if num == EntryKey {
			kb = b
		} else {
			vb = b
		}
	}
	return string(kb), string(vb), nil
}

// SizeString is the encoded size of string field num holding s.
func SizeString(num protowire.Number, s string) int {
	return protowire.SizeTag(num) + protowire.SizeBytes(len(s))
}

// AppendString appends string field num holding s to b.
func AppendString(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// SizeEntry is the encoded size of an entry k: v of map field num, key and
// value always written, as the generated code does.
func SizeEntry(num protowire.Number, k, v string) int {
	return protowire.SizeTag(num) + protowire.SizeBytes(entrySize(k, v))
}

// AppendEntry appends an entry k: v of map field num to b, as SizeEntry
// sizes it.
func AppendEntry(b []byte, num protowire.Number, k, v string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(entrySize(k, v)))
	b = AppendString(b, EntryKey, k)
	return AppendString(b, EntryValue, v)
}

func entrySize(k, v string) int { return SizeString(EntryKey, k) + SizeString(EntryValue, v) }
