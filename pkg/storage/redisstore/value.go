package redisstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
)

// A metric field's value is the seed's JSON object {"value":75.5,"unit":"%"}.
// Writing and reading it is the hot path of every write and range query, so
// both directions are done by hand: the writer produces exactly what
// encoding/json would (same float formatting), the reader takes that exact
// shape without reflection and hands anything else (whitespace, other key
// order, escapes in the unit, extra keys from other writers) to
// encoding/json.

const (
	valuePrefix = `{"value":`
	unitInfix   = `,"unit":"`
)

// appendValue appends the JSON value object for v and unit.
func appendValue(b []byte, v float64, unit string) []byte {
	b = append(b, valuePrefix...)
	b = appendFloat(b, v)
	b = append(b, unitInfix...)
	b = appendJSONText(b, unit)
	return append(b, '"', '}')
}

// appendFloat formats v as encoding/json does: the shortest representation
// that round-trips, in exponent form only below 1e-6 or from 1e21 on, with
// a two-digit negative exponent shortened (1e-07 -> 1e-7). v is finite.
func appendFloat(b []byte, v float64) []byte {
	abs := math.Abs(v)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, v, format, -1, 64)
	if format == 'e' {
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendJSONText appends s escaped for the inside of a JSON string, as
// encoding/json does without HTML escaping. s is valid UTF-8
// (storage.ValidateUnit), so only '"', '\', control characters and
// U+2028/U+2029 need escapes.
func appendJSONText(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\b':
			b = append(b, '\\', 'b')
		case c == '\f':
			b = append(b, '\\', 'f')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		case c == 0xe2 && i+2 < len(s) && s[i+1] == 0x80 && (s[i+2] == 0xa8 || s[i+2] == 0xa9):
			// U+2028 and U+2029 are valid JSON but not valid JavaScript.
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[s[i+2]&0xf])
			i += 2
		default:
			b = append(b, c)
		}
	}
	return b
}

// decodeValue parses a metric field's value. The unit it returns shares
// memory with s (no allocation on the fast path).
func decodeValue(s string) (float64, string, error) {
	if v, unit, ok := decodeValueFast(s); ok {
		return v, unit, nil
	}
	return decodeValueSlow(s)
}

// decodeValueFast accepts exactly {"value":NUMBER,"unit":"TEXT"} or
// {"value":NUMBER} where TEXT has no escapes or control characters and is
// valid UTF-8. ok is false for anything else, including numbers outside
// float64's range, so that the slow path decides.
func decodeValueFast(s string) (v float64, unit string, ok bool) {
	if len(s) < len(valuePrefix)+2 || s[:len(valuePrefix)] != valuePrefix {
		return 0, "", false
	}
	rest := s[len(valuePrefix):]
	n := jsonNumberLen(rest)
	if n == 0 {
		return 0, "", false
	}
	v, err := strconv.ParseFloat(rest[:n], 64)
	if err != nil {
		return 0, "", false
	}
	rest = rest[n:]
	if rest == "}" {
		return v, "", true
	}
	if len(rest) < len(unitInfix)+2 || rest[:len(unitInfix)] != unitInfix {
		return 0, "", false
	}
	rest = rest[len(unitInfix):]
	ascii := true
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		switch {
		case c == '"':
			if rest[i+1:] != "}" {
				return 0, "", false
			}
			unit = rest[:i]
			if !ascii && !utf8.ValidString(unit) {
				return 0, "", false
			}
			return v, unit, true
		case c == '\\' || c < 0x20:
			return 0, "", false
		case c >= 0x80:
			ascii = false
		}
	}
	return 0, "", false
}

// jsonNumberLen returns the length of the JSON number at the start of s
// (RFC 8259: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?), 0 if none.
func jsonNumberLen(s string) int {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	default:
		return 0
	}
	if i < len(s) && s[i] == '.' {
		i++
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == start {
			return 0
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == start {
			return 0
		}
	}
	return i
}

var errNoValue = errors.New(`no "value" number`)

func decodeValueSlow(s string) (float64, string, error) {
	var m struct {
		Value *float64 `json:"value"`
		Unit  string   `json:"unit"`
	}
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return 0, "", fmt.Errorf("metric value %.80q is not {\"value\":N,\"unit\":\"U\"}: %w", s, err)
	}
	if m.Value == nil {
		return 0, "", fmt.Errorf("metric value %.80q: %w", s, errNoValue)
	}
	return *m.Value, m.Unit, nil
}
