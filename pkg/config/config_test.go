package config

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func TestDecodeStrictWithDurations(t *testing.T) {
	type C struct {
		Interval Duration `yaml:"interval"`
		Name     string   `yaml:"name"`
	}
	c := C{Interval: Duration(5 * time.Second), Name: "default"}
	if err := Decode([]byte("interval: 500ms\n"), &c); err != nil || c.Interval.D() != 500*time.Millisecond || c.Name != "default" {
		t.Fatalf("decode: %+v %v", c, err)
	}
	if err := Decode([]byte("interval: 5\n"), &c); err == nil || !strings.Contains(err.Error(), "not a duration") {
		t.Fatalf("bare number accepted as a duration: %v", err)
	}
	if err := Decode([]byte("intervall: 5s\n"), &c); err == nil || !strings.Contains(err.Error(), "field intervall not found") {
		t.Fatalf("unknown key accepted: %v", err)
	}
	if err := Decode(nil, &c); err != nil {
		t.Fatalf("empty file: %v", err)
	}
}

func TestAddrList(t *testing.T) {
	for _, tc := range []struct {
		addrs []string
		want  string
	}{
		{[]string{"127.0.0.1:9093", "b:9093"}, ""},
		{nil, "config key brokers: is empty"},
		{[]string{"a:1", "b:2", "c:3"}, "has 3 addresses; allowed 1 … 2"},
		{[]string{"a:1", "a:1"}, `config key brokers[1]: "a:1" is listed twice`},
		{[]string{"a"}, `config key brokers[0]: "a" is not host:port`},
		{[]string{"a:x1"}, "non-numeric port"},
	} {
		err := AddrList("brokers", tc.addrs, 2)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("AddrList(%q) = %v, want %q", tc.addrs, err, tc.want)
		}
	}
}

func TestFlagsApplyOnlyGivenFlags(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := NewFlags(fs)
	a, b := "file-a", "file-b"
	f.String("a", "", func(v string) error { a = v; return nil })
	f.String("b", "", func(v string) error { b = v; return nil })
	if err := fs.Parse([]string{"-a", ""}); err != nil {
		t.Fatal(err)
	}
	if err := f.Apply(); err != nil {
		t.Fatal(err)
	}
	if a != "" || b != "file-b" {
		t.Fatalf("a=%q b=%q: a given flag (even empty) must win, an absent one must not touch the file's value", a, b)
	}
	if got := SplitList(" x, ,y ,"); len(got) != 2 || got[0] != "x" || got[1] != "y" {
		t.Fatalf("SplitList = %q", got)
	}
}
