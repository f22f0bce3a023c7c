// Package config loads the components' YAML files: strict decoding (an
// unknown key is an error naming it), durations written as "5s", and a small
// error type that names the bad key and the allowed range. Each component
// owns its Config struct, its defaults and its Validate method; this package
// holds only what all three share.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Load decodes the YAML file at path into dst, which holds the defaults on
// entry: keys absent from the file keep their default. Unknown keys are
// errors. An empty path leaves dst untouched.
func Load(path string, dst any) error {
	if path == "" {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	if err := Decode(data, dst); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// Decode is Load for bytes already in memory.
func Decode(data []byte, dst any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(dst); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// Duration is a time.Duration written in YAML as a Go duration string ("5s",
// "500ms", "168h").
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats like time.Duration.
func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML accepts a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: duration must be a string such as \"5s\"", n.Line)
	}
	v, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration such as \"5s\" or \"500ms\"", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// Error is a validation failure of one key.
type Error struct {
	Key     string // dotted path, e.g. "storage.redis.shards[0].addr"
	Problem string // what is wrong and what is allowed
}

func (e *Error) Error() string { return fmt.Sprintf("config key %s: %s", e.Key, e.Problem) }

// Errorf returns an *Error for key.
func Errorf(key, format string, args ...any) error {
	return &Error{Key: key, Problem: fmt.Sprintf(format, args...)}
}

// DurationIn checks min <= d <= max for key.
func DurationIn(key string, d Duration, min, max time.Duration) error {
	if d.D() < min || d.D() > max {
		return Errorf(key, "%s is out of range; allowed %s … %s", d, min, max)
	}
	return nil
}

// IntIn checks min <= v <= max for key.
func IntIn(key string, v, min, max int) error {
	if v < min || v > max {
		return Errorf(key, "%d is out of range; allowed %d … %d", v, min, max)
	}
	return nil
}

// Addr checks a host:port listen or dial address for key; empty is allowed
// only when optional.
func Addr(key, addr string, optional bool) error {
	if addr == "" {
		if optional {
			return nil
		}
		return Errorf(key, "is empty; want host:port such as 127.0.0.1:9093")
	}
	i := strings.LastIndexByte(addr, ':')
	if i < 0 || i == len(addr)-1 {
		return Errorf(key, "%q is not host:port", addr)
	}
	for _, c := range addr[i+1:] {
		if c < '0' || c > '9' {
			return Errorf(key, "%q has a non-numeric port", addr)
		}
	}
	return nil
}

// AddrList checks a non-empty list of at most max host:port addresses, each
// listed once, for key (e.g. "brokers").
func AddrList(key string, addrs []string, max int) error {
	if len(addrs) == 0 {
		return Errorf(key, "is empty; list at least one host:port such as 127.0.0.1:9093")
	}
	if len(addrs) > max {
		return Errorf(key, "has %d addresses; allowed 1 … %d", len(addrs), max)
	}
	seen := make(map[string]bool, len(addrs))
	for i, a := range addrs {
		k := fmt.Sprintf("%s[%d]", key, i)
		if err := Addr(k, a, false); err != nil {
			return err
		}
		if seen[a] {
			return Errorf(k, "%q is listed twice", a)
		}
		seen[a] = true
	}
	return nil
}

// Logger returns a text logger to w at level ("debug", "info", "warn" or
// "error"), the -log-level flag of every binary.
func Logger(level string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
