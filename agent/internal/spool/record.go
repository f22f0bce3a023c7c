package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// A record is one snapshot: an 8-byte header — the payload length and the
// CRC-32C (Castagnoli) of the payload, both little-endian uint32 — then the
// payload, the snapshot in protobuf encoding. A segment file is the 8-byte
// magic followed by records, back to back.
const (
	headerLen = 8
	// maxRecord bounds a record's payload: a length above it is corruption,
	// not a snapshot (the broker refuses batches far smaller).
	maxRecord = 16 << 20
)

// magic starts every segment file; the last byte is the format version.
var magic = [8]byte{'M', 'O', 'N', 'S', 'P', 'O', 'O', 1}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Errors of decodeRecord. errTorn means the bytes end inside the record — a
// write cut short by a crash when it is the end of the last segment.
var (
	errTorn    = errors.New("record cut short")
	errCorrupt = errors.New("record corrupt")
)

// appendRecord appends payload as a record to b.
func appendRecord(b, payload []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(payload)))
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(payload, crcTable))
	return append(b, payload...)
}

// decodeRecord decodes the record at the start of b and returns its payload
// (a sub-slice of b) and the record's length.
func decodeRecord(b []byte) (payload []byte, n int, err error) {
	if len(b) < headerLen {
		return nil, 0, fmt.Errorf("%w: %d header bytes of %d", errTorn, len(b), headerLen)
	}
	size := binary.LittleEndian.Uint32(b)
	sum := binary.LittleEndian.Uint32(b[4:])
	if size > maxRecord {
		return nil, 0, fmt.Errorf("%w: length %d exceeds %d", errCorrupt, size, maxRecord)
	}
	if uint64(len(b)-headerLen) < uint64(size) {
		return nil, 0, fmt.Errorf("%w: %d payload bytes of %d", errTorn, len(b)-headerLen, size)
	}
	payload = b[headerLen : headerLen+int(size)]
	if got := crc32.Checksum(payload, crcTable); got != sum {
		return nil, 0, fmt.Errorf("%w: checksum %08x, header says %08x", errCorrupt, got, sum)
	}
	return payload, headerLen + int(size), nil
}

// scanRecords returns the offsets (into b) and lengths of the whole,
// intact records at the start of b, and the error that stopped the scan
// (nil when b ends exactly after a record).
func scanRecords(b []byte) (offs []int64, lens []int32, err error) {
	for off := 0; off < len(b); {
		_, n, err := decodeRecord(b[off:])
		if err != nil {
			return offs, lens, fmt.Errorf("at offset %d: %w", off, err)
		}
		offs = append(offs, int64(off))
		lens = append(lens, int32(n))
		off += n
	}
	return offs, lens, nil
}
