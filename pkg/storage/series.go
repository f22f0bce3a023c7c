package storage

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"unicode/utf8"
)

// Limits on names that end up in keys and hash fields. Everything from the
// wire passes these checks before it reaches a key.
const (
	MaxHostIDLen     = 128
	MaxMetricNameLen = 200
	MaxLabelNameLen  = 64
	MaxLabelValueLen = 256
	MaxLabels        = 16
	MaxTagValueLen   = 1024
	MaxUnitLen       = 32
)

// ValidateHostID reports whether id may be used in a key: 1..128 characters
// of [A-Za-z0-9._-], starting with a letter or digit. ':' and braces are
// excluded because they are the key layout's separators and Redis Cluster
// hash-tag markers.
func ValidateHostID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: host id is empty", ErrInvalid)
	}
	if len(id) > MaxHostIDLen {
		return fmt.Errorf("%w: host id is %d bytes, the limit is %d", ErrInvalid, len(id), MaxHostIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case isAlnum(c):
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return fmt.Errorf("%w: host id %q has %q at byte %d; allowed are letters, digits and . _ - (not first)", ErrInvalid, id, c, i)
		}
	}
	return nil
}

// ValidateMetricName reports whether name is a valid metric family name:
// [a-zA-Z_][a-zA-Z0-9_.]*, at most 200 bytes, e.g. "cpu.usage_percent".
func ValidateMetricName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: metric name is empty", ErrInvalid)
	}
	if len(name) > MaxMetricNameLen {
		return fmt.Errorf("%w: metric name is %d bytes, the limit is %d", ErrInvalid, len(name), MaxMetricNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if isAlpha(c) || c == '_' || (i > 0 && (isDigit(c) || c == '.')) {
			continue
		}
		return fmt.Errorf("%w: metric name %q has %q at byte %d; allowed are [a-zA-Z_][a-zA-Z0-9_.]*", ErrInvalid, name, c, i)
	}
	return nil
}

// ValidateLabelName reports whether name is a valid label or tag name:
// [a-zA-Z_][a-zA-Z0-9_]*, at most 64 bytes.
func ValidateLabelName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: label name is empty", ErrInvalid)
	}
	if len(name) > MaxLabelNameLen {
		return fmt.Errorf("%w: label name is %d bytes, the limit is %d", ErrInvalid, len(name), MaxLabelNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if isAlpha(c) || c == '_' || (i > 0 && isDigit(c)) {
			continue
		}
		return fmt.Errorf("%w: label name %q has %q at byte %d; allowed are [a-zA-Z_][a-zA-Z0-9_]*", ErrInvalid, name, c, i)
	}
	return nil
}

// ValidateLabelValue reports whether v may appear in a series key: 1..256
// bytes of valid UTF-8 without control characters or any of { } = , " \.
func ValidateLabelValue(v string) error {
	if v == "" {
		return fmt.Errorf("%w: label value is empty (omit the label instead)", ErrInvalid)
	}
	if len(v) > MaxLabelValueLen {
		return fmt.Errorf("%w: label value is %d bytes, the limit is %d", ErrInvalid, len(v), MaxLabelValueLen)
	}
	return checkText(v, `{}=,"\`)
}

// ValidateTagValue reports whether v may be stored as a tag value: at most
// 1024 bytes of valid UTF-8 without control characters.
func ValidateTagValue(v string) error {
	if len(v) > MaxTagValueLen {
		return fmt.Errorf("%w: tag value is %d bytes, the limit is %d", ErrInvalid, len(v), MaxTagValueLen)
	}
	return checkText(v, "")
}

// ValidateUnit reports whether u may be stored as a sample's unit: at most
// 32 bytes of valid UTF-8 without control characters ("" is allowed). Units
// end up inside JSON strings in Redis, so they must be valid text.
func ValidateUnit(u string) error {
	if len(u) > MaxUnitLen {
		return fmt.Errorf("%w: unit is %d bytes, the limit is %d", ErrInvalid, len(u), MaxUnitLen)
	}
	return checkText(u, "")
}

// ValidateValue refuses NaN and ±Inf, which no chart or aggregate can use.
func ValidateValue(v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Errorf("%w: value %v is not a finite number", ErrInvalid, v)
	}
	return nil
}

func checkText(v, forbidden string) error {
	if !utf8.ValidString(v) {
		return fmt.Errorf("%w: %q is not valid UTF-8", ErrInvalid, v)
	}
	for i, r := range v {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("%w: %q has a control character at byte %d", ErrInvalid, v, i)
		}
		if forbidden != "" && strings.ContainsRune(forbidden, r) {
			return fmt.Errorf("%w: %q has %q at byte %d; not allowed are control characters and %s", ErrInvalid, v, r, i, forbidden)
		}
	}
	return nil
}

// SeriesKey returns the canonical series key of a metric: the name alone, or
// name{k=v,...} with labels sorted by key. It validates every part.
func SeriesKey(name string, labels map[string]string) (string, error) {
	if err := ValidateMetricName(name); err != nil {
		return "", err
	}
	if len(labels) == 0 {
		return name, nil
	}
	if len(labels) > MaxLabels {
		return "", fmt.Errorf("%w: metric %q has %d labels, the limit is %d", ErrInvalid, name, len(labels), MaxLabels)
	}
	keys := make([]string, 0, len(labels))
	size := len(name) + 2
	for k, v := range labels {
		if err := ValidateLabelName(k); err != nil {
			return "", fmt.Errorf("metric %q: %w", name, err)
		}
		if err := ValidateLabelValue(v); err != nil {
			return "", fmt.Errorf("metric %q label %q: %w", name, k, err)
		}
		keys = append(keys, k)
		size += len(k) + len(v) + 2
	}
	sort.Strings(keys)
	var b strings.Builder
	b.Grow(size)
	b.WriteString(name)
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(labels[k])
	}
	b.WriteByte('}')
	return b.String(), nil
}

// ParseSeries splits a canonical series key into its name and labels. It is
// the inverse of SeriesKey.
func ParseSeries(series string) (name string, labels map[string]string, err error) {
	name, err = scanSeries(series, func(k, v string) {
		if labels == nil {
			labels = make(map[string]string, strings.Count(series, ",")+1)
		}
		labels[k] = v
	})
	if err != nil {
		return "", nil, err
	}
	return name, labels, nil
}

// ValidateSeries checks a canonical series key as ParseSeries does, without
// building the label map (the write path's hot loop).
func ValidateSeries(series string) error {
	_, err := scanSeries(series, nil)
	return err
}

// scanSeries validates series and hands each label to label (when not nil).
func scanSeries(series string, label func(k, v string)) (string, error) {
	open := strings.IndexByte(series, '{')
	if open < 0 {
		return series, ValidateMetricName(series)
	}
	name := series[:open]
	if err := ValidateMetricName(name); err != nil {
		return "", err
	}
	if !strings.HasSuffix(series, "}") || open == len(series)-2 {
		return "", fmt.Errorf("%w: series %q: labels must be {k=v,...}", ErrInvalid, series)
	}
	body := series[open+1 : len(series)-1]
	prev := ""
	for more := true; more; {
		var pair string
		pair, body, more = strings.Cut(body, ",")
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			return "", fmt.Errorf("%w: series %q: label %q has no '='", ErrInvalid, series, pair)
		}
		if err := ValidateLabelName(k); err != nil {
			return "", fmt.Errorf("series %q: %w", series, err)
		}
		if err := ValidateLabelValue(v); err != nil {
			return "", fmt.Errorf("series %q: %w", series, err)
		}
		if k <= prev {
			return "", fmt.Errorf("%w: series %q: labels are not sorted or repeat %q", ErrInvalid, series, k)
		}
		prev = k
		if label != nil {
			label(k, v)
		}
	}
	return name, nil
}

// ValidateSnapshot checks everything in s that ends up in a key or field.
// Backends call it before writing; the broker's ingest validation reports
// finer-grained per-sample errors first.
func ValidateSnapshot(s *Snapshot) error {
	if err := ValidateHostID(s.HostID); err != nil {
		return err
	}
	if s.Timestamp <= 0 {
		return fmt.Errorf("%w: host %q: timestamp %d is not a positive Unix time", ErrInvalid, s.HostID, s.Timestamp)
	}
	for k, v := range s.Tags {
		if err := ValidateLabelName(k); err != nil {
			return fmt.Errorf("host %q tag: %w", s.HostID, err)
		}
		if err := ValidateTagValue(v); err != nil {
			return fmt.Errorf("host %q tag %q: %w", s.HostID, k, err)
		}
	}
	for i := range s.Samples {
		if err := ValidateSeries(s.Samples[i].Series); err != nil {
			return fmt.Errorf("host %q: %w", s.HostID, err)
		}
		if err := ValidateValue(s.Samples[i].Value); err != nil {
			return fmt.Errorf("host %q series %q: %w", s.HostID, s.Samples[i].Series, err)
		}
		if err := ValidateUnit(s.Samples[i].Unit); err != nil {
			return fmt.Errorf("host %q series %q: %w", s.HostID, s.Samples[i].Series, err)
		}
	}
	return nil
}

func isAlpha(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isAlnum(c byte) bool { return isAlpha(c) || isDigit(c) }
