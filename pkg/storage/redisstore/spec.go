package redisstore

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// SpecSyntax is the command-line form of a list of Redis shards.
const SpecSyntax = "redis://[user:pass@]host:port[/db],redis://..."

// ParseSpec parses the broker's -storage value when it names Redis shards:
// a comma-separated list of redis://[user:pass@]host:port[/db] (rediss://
// for TLS). The port defaults to 6379 and the database to 0. Errors name the
// bad item by position and never contain a password.
func ParseSpec(spec string) ([]ShardConfig, error) {
	if strings.TrimSpace(spec) == "" {
		return nil, fmt.Errorf("redis storage spec is empty; want %s", SpecSyntax)
	}
	items := strings.Split(spec, ",")
	out := make([]ShardConfig, 0, len(items))
	seen := make(map[string]int, len(items))
	for i, raw := range items {
		item := strings.TrimSpace(raw)
		if item == "" {
			return nil, fmt.Errorf("redis storage spec item %d is empty (a stray comma?); want %s", i+1, SpecSyntax)
		}
		sc, err := parseShardURL(item)
		if err != nil {
			return nil, fmt.Errorf("redis storage spec item %d (%s): %w", i+1, redactURL(item), err)
		}
		name := sc.name()
		if j, dup := seen[name]; dup {
			return nil, fmt.Errorf("redis storage spec item %d (%s): shard %s is already item %d", i+1, redactURL(item), name, j)
		}
		seen[name] = i + 1
		out = append(out, sc)
	}
	return out, nil
}

func parseShardURL(item string) (ShardConfig, error) {
	var sc ShardConfig
	scheme, rest, ok := strings.Cut(item, "://")
	if !ok {
		return sc, errors.New("want a URL such as redis://host:6379")
	}
	switch strings.ToLower(scheme) {
	case "redis":
	case "rediss":
		sc.TLS.Enabled = true
	default:
		return sc, fmt.Errorf("scheme %q is not redis:// or rediss://", scheme)
	}
	// Split off the user info by hand, at the last '@', so that nothing
	// below ever quotes any part of a password (url.Parse's errors quote
	// the whole input, and a '/' in a password confuses it).
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		user, pass, _ := strings.Cut(rest[:at], ":")
		var err error
		if sc.Username, err = url.PathUnescape(user); err != nil {
			return sc, errors.New("user name has a bad %-escape")
		}
		if sc.Password, err = url.PathUnescape(pass); err != nil {
			return sc, errors.New("password has a bad %-escape")
		}
		rest = rest[at+1:]
	}
	if strings.ContainsAny(rest, "?#") {
		return sc, errors.New("query parameters are not supported here (set TLS and replicas in the YAML)")
	}
	hostport, db, hasDB := strings.Cut(rest, "/")
	host, port := hostport, ""
	if strings.HasPrefix(hostport, "[") || strings.Count(hostport, ":") == 1 {
		h, p, err := net.SplitHostPort(hostport)
		if err != nil {
			return sc, fmt.Errorf("address %q is not host:port", hostport)
		}
		host, port = h, p
		if port == "" {
			return sc, errors.New("empty port after ':'")
		}
	} else if strings.Contains(hostport, ":") {
		return sc, fmt.Errorf("address %q is not host:port (write IPv6 addresses as [addr]:port)", hostport)
	}
	if host == "" {
		return sc, errors.New("no host")
	}
	if port == "" {
		port = "6379"
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return sc, fmt.Errorf("port %q is not a number in 1..65535", port)
	}
	sc.Addr = net.JoinHostPort(host, port)
	if hasDB && db != "" {
		n, err := strconv.Atoi(db)
		if err != nil || n < 0 {
			return sc, fmt.Errorf("database %q after the slash is not a number >= 0", db)
		}
		sc.DB = n
	}
	return sc, nil
}

// redactURL replaces the user-info part of a URL-like string (everything
// between "://" and the last '@') with "***" so that it can be quoted in an
// error.
func redactURL(s string) string {
	start := 0
	if i := strings.Index(s, "://"); i >= 0 {
		start = i + 3
	}
	if at := strings.LastIndexByte(s[start:], '@'); at >= 0 {
		return s[:start] + "***@" + s[start+at+1:]
	}
	return s
}
