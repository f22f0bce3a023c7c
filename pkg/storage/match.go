package storage

import "strings"

// Matcher selects series by the names a query asks for. Each name is one of:
//   - a family, "cpu.usage_percent": the series with that name, any labels;
//   - an exact series, "net.rx_bytes_per_sec{interface=eth0}";
//   - a prefix ending in "*", "net.*": every series key that starts with it.
//
// A nil or empty Matcher matches everything.
type Matcher struct {
	exact    map[string]struct{}
	families map[string]struct{}
	prefixes []string
}

// NewMatcher builds a Matcher; it returns nil (match all) for no names.
func NewMatcher(names []string) *Matcher {
	if len(names) == 0 {
		return nil
	}
	m := &Matcher{exact: map[string]struct{}{}, families: map[string]struct{}{}}
	for _, n := range names {
		switch {
		case strings.HasSuffix(n, "*"):
			m.prefixes = append(m.prefixes, strings.TrimSuffix(n, "*"))
		case strings.Contains(n, "{"):
			m.exact[n] = struct{}{}
		default:
			m.families[n] = struct{}{}
		}
	}
	return m
}

// Match reports whether the series key is selected.
func (m *Matcher) Match(series string) bool {
	if m == nil {
		return true
	}
	if _, ok := m.exact[series]; ok {
		return true
	}
	name := series
	if i := strings.IndexByte(series, '{'); i >= 0 {
		name = series[:i]
	}
	if _, ok := m.families[name]; ok {
		return true
	}
	for _, p := range m.prefixes {
		if strings.HasPrefix(series, p) {
			return true
		}
	}
	return false
}

// Filter keeps the samples of s that m selects, in place.
func (m *Matcher) Filter(s *Snapshot) {
	if m == nil {
		return
	}
	kept := s.Samples[:0]
	for _, smp := range s.Samples {
		if m.Match(smp.Series) {
			kept = append(kept, smp)
		}
	}
	s.Samples = kept
}
