package pbwire

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	monitorpb "github.com/monitorhq/monitor/proto"
)

// TestFieldNumbersMatchDescriptors ties every constant to the generated
// descriptor of its field, and fails when one of these messages has a field
// not listed here: the hand-written codecs would skip (decoders) or drop
// (the encoder) it, so a new field must be added here and handled there.
func TestFieldNumbersMatchDescriptors(t *testing.T) {
	type field struct {
		name protoreflect.Name
		num  protowire.Number
	}
	for _, tc := range []struct {
		msg    proto.Message
		fields []field
	}{
		{&monitorpb.IngestRequest{}, []field{{"hello", IngestRequestHello}, {"batch", IngestRequestBatch}}},
		{&monitorpb.Batch{}, []field{{"seq", BatchSeq}, {"snapshots", BatchSnapshots}}},
		{&monitorpb.StoredBatch{}, []field{{"snapshots", StoredBatchSnapshots}, {"dropped", StoredBatchDropped}}},
		{&monitorpb.Snapshot{}, []field{{"host_id", SnapshotHostID}, {"timestamp", SnapshotTimestamp}, {"tags", SnapshotTags}, {"metrics", SnapshotMetrics}}},
		{&monitorpb.Metric{}, []field{{"name", MetricName}, {"value", MetricValue}, {"unit", MetricUnit}, {"priority", MetricPriority}, {"labels", MetricLabels}}},
	} {
		md := tc.msg.ProtoReflect().Descriptor()
		if got := md.Fields().Len(); got != len(tc.fields) {
			t.Errorf("%s has %d fields, the codecs know %d: handle the new ones in pkg/pbwire and its users", md.FullName(), got, len(tc.fields))
		}
		for _, f := range tc.fields {
			fd := md.Fields().ByName(f.name)
			if fd == nil {
				t.Errorf("%s has no field %q", md.FullName(), f.name)
				continue
			}
			if fd.Number() != f.num {
				t.Errorf("%s.%s is field %d in the descriptor, %d here", md.FullName(), f.name, fd.Number(), f.num)
			}
			if fd.IsMap() {
				e := fd.Message().Fields()
				if e.ByName("key").Number() != EntryKey || e.ByName("value").Number() != EntryValue {
					t.Errorf("%s.%s: map entry key/value numbers differ from EntryKey/EntryValue", md.FullName(), f.name)
				}
				if fd.MapKey().Kind() != protoreflect.StringKind || fd.MapValue().Kind() != protoreflect.StringKind {
					t.Errorf("%s.%s is no longer a map<string, string>", md.FullName(), f.name)
				}
			}
		}
	}
}

func tag(num protowire.Number, typ protowire.Type) []byte { return protowire.AppendTag(nil, num, typ) }

func TestNext(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		num  protowire.Number
		typ  protowire.Type
		v    []byte
		x    uint64
		n    int
	}{
		{"bytes", protowire.AppendString(tag(3, protowire.BytesType), "abc"), 3, protowire.BytesType, []byte("abc"), 0, 5},
		{"varint", protowire.AppendVarint(tag(1, protowire.VarintType), 300), 1, protowire.VarintType, nil, 300, 3},
		{"fixed64", protowire.AppendFixed64(tag(2, protowire.Fixed64Type), math.Float64bits(1.5)), 2, protowire.Fixed64Type, nil, math.Float64bits(1.5), 9},
		{"fixed32", protowire.AppendFixed32(tag(7, protowire.Fixed32Type), 9), 7, protowire.Fixed32Type, nil, 9, 5},
		{"group", slices.Concat(tag(60, protowire.StartGroupType), protowire.AppendVarint(tag(1, protowire.VarintType), 1), tag(60, protowire.EndGroupType)), 60, protowire.StartGroupType, nil, 0, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := append(slices.Clone(tc.data), 0xff) // the next field's first byte: not read
			num, typ, v, x, n, err := Next(data)
			if err != nil {
				t.Fatal(err)
			}
			if num != tc.num || typ != tc.typ || !bytes.Equal(v, tc.v) || x != tc.x || n != tc.n {
				t.Fatalf("read field %d, type %d, %q, %d, %d bytes; want field %d, type %d, %q, %d, %d bytes", num, typ, v, x, n, tc.num, tc.typ, tc.v, tc.x, tc.n)
			}
		})
	}
	for name, data := range map[string][]byte{
		"field number 0":       protowire.AppendVarint(tag(0, protowire.VarintType), 1),
		"field number too big": protowire.AppendVarint(protowire.AppendVarint(nil, uint64(protowire.MaxValidNumber+1)<<3), 1),
		"truncated tag":        {0x80},
		"truncated bytes":      {0x0a, 0x05, 'a'},
		"bad length":           {0x0a, 0x80},
		"truncated fixed64":    {0x11, 1, 2},
		"unterminated group":   tag(5, protowire.StartGroupType),
		"stray end group":      tag(5, protowire.EndGroupType),
		"reserved wire type":   {0x0e, 0},
	} {
		if num, typ, _, _, _, err := Next(data); err == nil {
			t.Errorf("%s: read field %d, type %d, want an error", name, num, typ)
		}
	}
}

func str(num protowire.Number, s string) []byte {
	return protowire.AppendString(tag(num, protowire.BytesType), s)
}

// TestEntryMatchesGeneratedCode decodes Snapshot.tags entries both ways.
func TestEntryMatchesGeneratedCode(t *testing.T) {
	for name, e := range map[string][]byte{
		"key and value":        slices.Concat(str(1, "k"), str(2, "v")),
		"value first":          slices.Concat(str(2, "v"), str(1, "k")),
		"empty":                nil,
		"key only":             str(1, "k"),
		"repeated: last wins":  slices.Concat(str(1, "a"), str(2, "x"), str(1, "b"), str(2, "y")),
		"unknown and wrong":    slices.Concat(protowire.AppendVarint(tag(1, protowire.VarintType), 3), str(9, "?"), str(1, "k"), str(2, "v")),
		"invalid UTF-8 key":    slices.Concat(str(1, "\xff"), str(2, "v")),
		"invalid UTF-8 value":  slices.Concat(str(1, "k"), str(2, "\xc3")),
		"invalid then valid":   slices.Concat(str(2, "\xff"), str(2, "v")),
		"truncated":            slices.Concat(str(1, "k"), str(2, "v"))[:4],
		"field number 0":       protowire.AppendVarint(tag(0, protowire.VarintType), 1),
		"invalid UTF-8 in 3rd": slices.Concat(str(1, "k"), str(3, "\xff")), // an unknown bytes field: not a string
	} {
		var pb monitorpb.Snapshot
		werr := proto.Unmarshal(protowire.AppendBytes(tag(3, protowire.BytesType), e), &pb)
		k, v, err := Entry(e)
		if (err != nil) != (werr != nil) {
			t.Errorf("%s: error %v, the generated code's %v", name, err, werr)
			continue
		}
		if err != nil {
			continue
		}
		if got, ok := pb.GetTags()[k]; !ok || got != v || len(pb.GetTags()) != 1 {
			t.Errorf("%s: decoded %q: %q, the generated code %q", name, k, v, pb.GetTags())
		}
	}
	if _, err := String(5, []byte("\xff")); !errors.Is(err, ErrInvalidUTF8) {
		t.Fatalf("String: error %v, want ErrInvalidUTF8", err)
	}
}

// TestEncodeMatchesGeneratedCode: the size and append helpers write what
// the generated code does.
func TestEncodeMatchesGeneratedCode(t *testing.T) {
	long := string(bytes.Repeat([]byte("é"), 200))
	for _, s := range []*monitorpb.Snapshot{
		{HostId: "web-1", Tags: map[string]string{"role": "web"}},
		{HostId: long, Tags: map[string]string{"": ""}},
		{Tags: map[string]string{long: long}},
	} {
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		size := 0
		if s.HostId != "" {
			got = AppendString(got, SnapshotHostID, s.HostId)
			size += SizeString(SnapshotHostID, s.HostId)
		}
		for k, v := range s.Tags {
			got = AppendEntry(got, SnapshotTags, k, v)
			size += SizeEntry(SnapshotTags, k, v)
		}
		if !bytes.Equal(got, want) || size != len(got) {
			t.Fatalf("encoded %x (sized %d), the generated code %x", got, size, want)
		}
	}
}
