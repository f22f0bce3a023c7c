package quic

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestFrameReader(t *testing.T) {
	long := strings.Repeat("x", 5000)
	cases := []struct {
		name  string
		in    string
		limit int
		want  []string
		err   error
	}{
		{name: "lines", in: "{\"a\":1}\n{\"b\":2}\n", limit: 100, want: []string{`{"a":1}`, `{"b":2}`}, err: io.EOF},
		{name: "blank lines and CRLF skipped", in: "\n\r\n{\"a\":1}\r\n\n", limit: 100, want: []string{`{"a":1}`}, err: io.EOF},
		{name: "last frame without newline", in: "{\"a\":1}", limit: 100, want: []string{`{"a":1}`}, err: io.EOF},
		{name: "frame longer than the buffer", in: long + "\n", limit: 6000, want: []string{long}, err: io.EOF},
		{name: "frame over the limit", in: long + "\n", limit: 4999, err: ErrFrameTooLong},
		{name: "frame at the limit", in: long + "\n", limit: 5000, want: []string{long}, err: io.EOF},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fr := NewFrameReader(strings.NewReader(tc.in), tc.limit)
			var got []string
			var err error
			for {
				var f []byte
				if f, err = fr.Next(); err != nil {
					break
				}
				got = append(got, string(f))
			}
			if !errors.Is(err, tc.err) {
				t.Fatalf("error = %v, want %v", err, tc.err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("frames = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSeqDatagramRoundTrip(t *testing.T) {
	d := SeqDatagram(nil, 42, []byte(`{"type":"sample","host":"h"}`))
	if string(d) != `{"seq":42,"type":"sample","host":"h"}` {
		t.Fatalf("datagram = %s", d)
	}
	if seq, err := DatagramSeq(d); err != nil || seq != 42 {
		t.Fatalf("seq = %d, %v", seq, err)
	}
	if !json.Valid(SeqDatagram(nil, 1, []byte(`{}`))) {
		t.Fatal("an empty object does not stay valid JSON")
	}
	if _, err := DatagramSeq([]byte(`{"type":"x"}`)); err == nil {
		t.Fatal("a datagram without seq was accepted")
	}
}

func TestSplitSamplesKeepsEverySampleUnderTheBudget(t *testing.T) {
	var samples []string
	for i := range 100 {
		samples = append(samples, fmt.Sprintf(`{"series":"net.rx_bytes_per_sec{interface=eth%d}","value":%d,"unit":"B/s"}`, i, i))
	}
	huge := `{"series":"x","value":1,"unit":"` + strings.Repeat("u", 2000) + `"}`
	msg := `{"type":"sample","host":"web-1","ts":1700000000,"samples":[` + strings.Join(samples, ",") + "," + huge + `]}`
	parts, rest, err := SplitSamples([]byte(msg), 1100)
	if err != nil {
		t.Fatal(err)
	}
	if len(rest) != 1 || !bytes.Contains(rest[0], []byte(strings.Repeat("u", 2000))) {
		t.Fatalf("rest = %d messages, want the huge sample alone", len(rest))
	}
	seen := 0
	for _, p := range parts {
		d := SeqDatagram(nil, ^uint64(0), p)
		if len(d) > 1100 {
			t.Fatalf("a part of %d bytes is over the budget", len(d))
		}
		var m struct {
			Type    string            `json:"type"`
			Host    string            `json:"host"`
			TS      int64             `json:"ts"`
			Samples []json.RawMessage `json:"samples"`
		}
		if err := json.Unmarshal(d, &m); err != nil {
			t.Fatalf("part %s: %v", d, err)
		}
		if m.Type != "sample" || m.Host != "web-1" || m.TS != 1700000000 {
			t.Fatalf("part lost its head: %s", d)
		}
		for _, s := range m.Samples {
			if string(s) != samples[seen] {
				t.Fatalf("sample %d = %s, want %s", seen, s, samples[seen])
			}
			seen++
		}
	}
	if seen != len(samples) || len(parts) < 2 {
		t.Fatalf("%d samples in %d parts, want %d in several", seen, len(parts), len(samples))
	}
}

func TestSelfSignedRotation(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	const validity, before = 240 * time.Hour, 48 * time.Hour
	c, err := NewSelfSigned(SelfSignedOptions{Validity: validity, RotateBefore: before, Hosts: []string{"dash.example.com", "10.0.0.7"}, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := c.GetCertificate(nil)
	leaf := first.Leaf
	if _, ok := first.PrivateKey.(*ecdsa.PrivateKey); !ok || leaf.PublicKey.(*ecdsa.PublicKey).Curve != elliptic.P256() {
		t.Fatal("the certificate is not ECDSA P-256")
	}
	if d := leaf.NotAfter.Sub(leaf.NotBefore); d > 14*24*time.Hour || d != validity {
		t.Fatalf("validity = %s, want %s (Chromium pins at most 14 days)", d, validity)
	}
	if err := leaf.VerifyHostname("dash.example.com"); err != nil {
		t.Fatalf("configured host missing: %v", err)
	}
	if err := leaf.VerifyHostname("10.0.0.7"); err != nil {
		t.Fatalf("configured IP missing: %v", err)
	}
	if h := c.Hashes(); len(h) != 1 || h[0].Algorithm != "sha-256" || len(h[0].Value) != 32 {
		t.Fatalf("hashes = %+v", h)
	}

	wait, err := c.Tick()
	if err != nil || wait != validity-before-time.Minute {
		t.Fatalf("first tick: wait %s, %v; want %s", wait, err, validity-before-time.Minute)
	}
	now = now.Add(wait) // before of validity left: the next one is announced
	if wait, err = c.Tick(); err != nil || wait != before/2 {
		t.Fatalf("announce tick: wait %s, %v; want %s", wait, err, before/2)
	}
	h := c.Hashes()
	if cur, _ := c.GetCertificate(nil); len(h) != 2 || cur != first {
		t.Fatalf("after the announcement: %d hashes, same certificate %v; want 2 and still the first", len(h), cur == first)
	}
	now = now.Add(wait) // half of it left: switched
	if _, err = c.Tick(); err != nil {
		t.Fatal(err)
	}
	cur, _ := c.GetCertificate(nil)
	if cur == first || !bytes.Equal(HashOf(cur.Leaf.Raw).Value, h[1].Value) {
		t.Fatal("the announced certificate is not the one served after the switch")
	}
	if got := c.Hashes(); len(got) != 1 || !bytes.Equal(got[0].Value, h[1].Value) {
		t.Fatalf("hashes after the switch = %d", len(got))
	}

	if err := c.Rotate(); err != nil {
		t.Fatal(err)
	}
	if again, _ := c.GetCertificate(nil); again == cur {
		t.Fatal("Rotate kept the certificate")
	}
}

func TestSelfSignedRefusesLongValidity(t *testing.T) {
	for _, tc := range []struct {
		validity, before time.Duration
	}{{15 * 24 * time.Hour, time.Hour}, {0, time.Hour}, {24 * time.Hour, 13 * time.Hour}, {24 * time.Hour, 0}} {
		if _, err := NewSelfSigned(SelfSignedOptions{Validity: tc.validity, RotateBefore: tc.before}); err == nil {
			t.Errorf("validity %s rotate before %s accepted", tc.validity, tc.before)
		}
	}
}

// TestListenerRoutesByALPN serves two protocols on one socket; a client
// offering an unknown one fails the handshake.
func TestListenerRoutesByALPN(t *testing.T) {
	certs, err := NewSelfSigned(SelfSignedOptions{Validity: 24 * time.Hour, RotateBefore: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	handler := func(name string) ConnHandler {
		return func(ctx context.Context, conn *quicgo.Conn) {
			str, err := conn.AcceptStream(ctx)
			if err != nil {
				return
			}
			_, _ = str.Write([]byte(name))
			_ = str.Close()
			<-conn.Context().Done()
		}
	}
	ln, err := Listen(ListenerOptions{Addr: "127.0.0.1:0", Certs: certs, Handlers: map[string]ConnHandler{"one": handler("one"), "two": handler("two")}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ln.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	ask := func(proto string) (string, error) {
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		conn, err := quicgo.DialAddr(dctx, ln.Addr().String(), pinned(certs, proto), QUICConfig())
		if err != nil {
			return "", err
		}
		defer conn.CloseWithError(0, "")
		str, err := conn.OpenStreamSync(dctx)
		if err != nil {
			return "", err
		}
		_, _ = str.Write([]byte("?"))
		b, err := io.ReadAll(str)
		return string(b), err
	}
	for _, p := range []string{"one", "two"} {
		if got, err := ask(p); err != nil || got != p {
			t.Fatalf("ALPN %s answered %q, %v", p, got, err)
		}
	}
	if _, err := ask("three"); err == nil {
		t.Fatal("an unknown ALPN got a connection")
	}
}

func pinned(certs *Certs, proto string) *tls.Config {
	return PinnedTLSConfig(certs.Hashes(), proto)
}
