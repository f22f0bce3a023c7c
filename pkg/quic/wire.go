package quic

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// ALPN protocols on the QUIC port.
const (
	// ALPNHTTP3 is HTTP/3, which carries WebTransport for browsers.
	ALPNHTTP3 = "h3"
	// ALPNNative is the native push protocol for Go clients (monitorctl
	// watch): the session below directly on a QUIC connection.
	ALPNNative = "monitor-push/1"
)

// WebTransportPath is the HTTP/3 path of the WebTransport session.
const WebTransportPath = "/api/v1/wt"

// Session close codes (a WebTransport session error code, or the QUIC
// application error code on a native connection). The 4xxx codes follow
// the WebSocket's: 4001 means refresh the token and reconnect.
const (
	CodeNormal        = 0
	CodeGoingAway     = 1001 // the server is shutting down
	CodeTryAgainLater = 1013 // too many clients
	CodeTokenExpired  = 4001 // the session's token expired
	CodeBadRequest    = 4400 // the first message was not an auth message, or a frame was too long
	CodeUnauthorized  = 4401 // no token, or a bad one
	CodeTimeout       = 4408 // no auth message in time, or a write stalled
)

// Auth is the first frame a client sends on its stream. The token travels
// inside the encrypted session, never in a URL.
type Auth struct {
	Type  string `json:"type"` // "auth"
	Token string `json:"token"`
	// Datagrams asks for sample messages as QUIC datagrams (latest values,
	// loss tolerated, numbered by "seq"); false sends them on the stream
	// in order. Absent means true.
	Datagrams *bool `json:"datagrams,omitempty"`
}

// Session protocol, on one bidirectional stream the client opens: frames
// are JSON objects, one per line (encoding/json and JSON.stringify never
// put a raw newline inside one). The client writes Auth first, then
// commands; the server writes hello, subscribed, error, gap and event
// messages, and the samples too when datagrams are off.

// ErrFrameTooLong is returned by FrameReader.Next for a line over the
// limit.
var ErrFrameTooLong = errors.New("frame too long")

// FrameReader reads newline-delimited frames with a size limit.
type FrameReader struct {
	r     *bufio.Reader
	limit int
}

// NewFrameReader reads frames of at most limit bytes from r.
func NewFrameReader(r io.Reader, limit int) *FrameReader {
	return &FrameReader{r: bufio.NewReaderSize(r, 4096), limit: limit}
}

// Next returns the next frame without its newline; the slice is valid
// until the next call. Empty lines are skipped. A final frame without a
// newline is returned before io.EOF.
func (f *FrameReader) Next() ([]byte, error) {
	var buf []byte
	for {
		line, err := f.r.ReadSlice('\n')
		if len(buf)+len(line) > f.limit+1 {
			return nil, fmt.Errorf("%w: over %d bytes", ErrFrameTooLong, f.limit)
		}
		switch {
		case err == nil:
			if buf != nil {
				line = append(buf, line...)
			}
			line = bytes.TrimRight(line, "\r\n")
			if len(line) == 0 {
				buf = nil
				continue
			}
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			buf = append(buf, line...)
		case errors.Is(err, io.EOF) && len(buf)+len(line) > 0:
			return append(buf, line...), nil
		default:
			return nil, err
		}
	}
}

// AppendFrame appends msg and a newline to dst.
func AppendFrame(dst, msg []byte) []byte { return append(append(dst, msg...), '\n') }

// SeqDatagram returns msg (a JSON object) with "seq":seq as its first
// member: {"seq":7,"type":"sample",...}.
func SeqDatagram(dst []byte, seq uint64, msg []byte) []byte {
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	if len(msg) > 2 {
		dst = append(dst, ',')
	}
	return append(dst, msg[1:]...)
}

// DatagramSeq reads the sequence number of a datagram made by SeqDatagram.
func DatagramSeq(d []byte) (uint64, error) {
	rest, ok := bytes.CutPrefix(d, []byte(`{"seq":`))
	if !ok {
		return 0, errors.New("datagram does not start with a sequence number")
	}
	end := bytes.IndexAny(rest, ",}")
	if end <= 0 {
		return 0, errors.New("datagram's sequence number is not terminated")
	}
	return strconv.ParseUint(string(rest[:end]), 10, 64)
}

// SplitSamples splits a sample message ({"type":"sample","host","ts",
// "samples":[...]}) into messages of the same host and timestamp that
// are each at most max bytes once numbered. A single sample that is too
// large on its own is returned in rest for the caller to send another
// way.
func SplitSamples(msg []byte, max int) (parts, rest [][]byte, err error) {
	var m struct {
		Type    string            `json:"type"`
		Host    string            `json:"host"`
		TS      int64             `json:"ts"`
		Samples []json.RawMessage `json:"samples"`
	}
	if err := json.Unmarshal(msg, &m); err != nil {
		return nil, nil, fmt.Errorf("split a sample message: %w", err)
	}
	head, _ := json.Marshal(struct {
		Type string `json:"type"`
		Host string `json:"host"`
		TS   int64  `json:"ts"`
	}{m.Type, m.Host, m.TS})
	head = append(head[:len(head)-1], `,"samples":[`...)
	// seqRoom is the room SeqDatagram needs: {"seq":<20 digits>, minus '{'.
	const seqRoom = 28
	build := func(samples []json.RawMessage) []byte {
		b := append([]byte(nil), head...)
		for i, s := range samples {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, s...)
		}
		return append(b, "]}"...)
	}
	var cur []json.RawMessage
	size := len(head) + 2 + seqRoom
	for _, s := range m.Samples {
		if len(head)+2+seqRoom+len(s) > max {
			rest = append(rest, build([]json.RawMessage{s}))
			continue
		}
		if len(cur) > 0 && size+1+len(s) > max {
			parts = append(parts, build(cur))
			cur, size = nil, len(head)+2+seqRoom
		}
		if len(cur) > 0 {
			size++
		}
		cur = append(cur, s)
		size += len(s)
	}
	if len(cur) > 0 {
		parts = append(parts, build(cur))
	}
	return parts, rest, nil
}
