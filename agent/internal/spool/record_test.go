package spool

import (
	"bytes"
	"errors"
	"testing"
)

func TestRecordRoundTrip(t *testing.T) {
	for _, payload := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte{0xab}, 70000)} {
		b := appendRecord(nil, payload)
		got, n, err := decodeRecord(b)
		if err != nil || n != len(b) || !bytes.Equal(got, payload) {
			t.Fatalf("payload of %d bytes: got %d bytes, n %d, err %v", len(payload), len(got), n, err)
		}
		if _, _, err := decodeRecord(b[:len(b)-1]); !errors.Is(err, errTorn) {
			t.Fatalf("cut record: %v, want errTorn", err)
		}
		if len(payload) > 0 {
			bad := bytes.Clone(b)
			bad[len(bad)-1] ^= 1
			if _, _, err := decodeRecord(bad); !errors.Is(err, errCorrupt) {
				t.Fatalf("flipped bit: %v, want errCorrupt", err)
			}
		}
	}
	huge := appendRecord(nil, nil)
	huge[3] = 0x7f // length 2 GiB
	if _, _, err := decodeRecord(huge); !errors.Is(err, errCorrupt) {
		t.Fatalf("absurd length: %v", err)
	}
}

// FuzzDecodeRecord feeds arbitrary bytes to the record decoder and the
// segment scanner: they must never panic, and whatever they accept must
// re-encode to exactly the bytes they consumed.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(appendRecord(nil, []byte("snapshot")))
	f.Add(appendRecord(appendRecord(nil, []byte("a")), []byte("bc")))
	f.Add(appendRecord(nil, nil))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		payload, n, err := decodeRecord(b)
		if err == nil {
			if n > len(b) || !bytes.Equal(appendRecord(nil, payload), b[:n]) {
				t.Fatalf("accepted %d bytes that do not re-encode", n)
			}
		} else if !errors.Is(err, errTorn) && !errors.Is(err, errCorrupt) {
			t.Fatalf("unexpected error kind: %v", err)
		}
		offs, lens, _ := scanRecords(b)
		var re []byte
		for i := range offs {
			p, m, err := decodeRecord(b[offs[i]:])
			if err != nil || m != int(lens[i]) {
				t.Fatalf("scan accepted a record decode refuses: %v", err)
			}
			re = appendRecord(re, p)
		}
		if !bytes.Equal(re, b[:len(re)]) {
			t.Fatal("scanned records do not re-encode to the input's prefix")
		}
	})
}
