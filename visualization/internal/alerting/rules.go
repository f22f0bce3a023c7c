package alerting

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/url"
	"slices"
	"strings"

	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// ErrInvalidRule wraps every rule validation error.
var ErrInvalidRule = errors.New("invalid alert rule")

// Rule is an alert rule as the HTTP API reads and writes it (the JSON
// form of monitorpb.AlertRule).
type Rule struct {
	ID         string            `json:"id"`
	Metric     string            `json:"metric"`      // a series key, or a metric name matching all its label sets
	Op         string            `json:"op"`          // ">", ">=", "<", "<="
	Threshold  float64           `json:"threshold"`   //
	ForSeconds int64             `json:"for_seconds"` // breach this long before firing; 0: at once
	HostIDs    []string          `json:"host_ids,omitempty"`
	HostLabels map[string]string `json:"host_labels,omitempty"`
	Webhook    string            `json:"webhook,omitempty"` // http(s) URL; redacted to scheme://host/… in listings
}

// ruleFromPB converts a stored rule.
func ruleFromPB(p *monitorpb.AlertRule) Rule {
	return Rule{ID: p.GetId(), Metric: p.GetMetric(), Op: p.GetOp(), Threshold: p.GetThreshold(), ForSeconds: p.GetForSeconds(),
		HostIDs: slices.Clone(p.GetHostIds()), HostLabels: maps.Clone(p.GetHostLabels()), Webhook: p.GetWebhook()}
}

// PB converts r to its stored form.
func (r Rule) PB() *monitorpb.AlertRule {
	return &monitorpb.AlertRule{Id: r.ID, Metric: r.Metric, Op: r.Op, Threshold: r.Threshold, ForSeconds: r.ForSeconds,
		HostIds: slices.Clone(r.HostIDs), HostLabels: maps.Clone(r.HostLabels), Webhook: r.Webhook}
}

// maxRuleIDLen bounds rule ids (they appear in URLs and events).
const maxRuleIDLen = 64

// Validate checks r as the engine accepts it: id (if set) 1..64 of
// [A-Za-z0-9._-], op one of > >= < <=, metric a valid metric name or series
// key, a finite threshold, for_seconds ≥ 0, valid host ids and label
// names, and an http or https webhook URL with a host (or none).
func (r Rule) Validate() error {
	if r.ID != "" {
		if err := validateID(r.ID); err != nil {
			return err
		}
	}
	switch r.Op {
	case ">", ">=", "<", "<=":
	default:
		return fmt.Errorf("%w: op %q: want one of > >= < <=", ErrInvalidRule, r.Op)
	}
	if r.Metric == "" {
		return fmt.Errorf("%w: metric is empty", ErrInvalidRule)
	}
	if err := storage.ValidateSeries(r.Metric); err != nil {
		return fmt.Errorf("%w: metric: %v", ErrInvalidRule, err)
	}
	if math.IsNaN(r.Threshold) || math.IsInf(r.Threshold, 0) {
		return fmt.Errorf("%w: threshold %v is not a finite number", ErrInvalidRule, r.Threshold)
	}
	if r.ForSeconds < 0 || r.ForSeconds > 7*24*3600 {
		return fmt.Errorf("%w: for_seconds %d: want 0..604800", ErrInvalidRule, r.ForSeconds)
	}
	for _, h := range r.HostIDs {
		if err := storage.ValidateHostID(h); err != nil {
			return fmt.Errorf("%w: host_ids: %v", ErrInvalidRule, err)
		}
	}
	for k := range r.HostLabels {
		if err := storage.ValidateLabelName(k); err != nil {
			return fmt.Errorf("%w: host_labels: %v", ErrInvalidRule, err)
		}
	}
	if r.Webhook != "" {
		u, err := url.Parse(r.Webhook)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%w: webhook: want an http or https URL with a host", ErrInvalidRule)
		}
	}
	return nil
}

func validateID(id string) error {
	if len(id) > maxRuleIDLen {
		return fmt.Errorf("%w: id is %d bytes, the limit is %d", ErrInvalidRule, len(id), maxRuleIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: id %q has %q at byte %d; allowed are letters, digits and . _ -", ErrInvalidRule, id, c, i)
		}
	}
	return nil
}

// newID returns a random rule id.
func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return "r-" + hex.EncodeToString(b[:])
}

// redactURL keeps a webhook's scheme and host: the path and query often
// carry a token.
func redactURL(s string) string {
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil {
		return "…"
	}
	return u.Scheme + "://" + u.Host + "/…"
}

// compiled is a validated rule ready for evaluation.
type compiled struct {
	Rule
	hosts map[string]bool // nil: every host
	name  string          // the metric name part of Metric
	exact bool            // Metric is a full series key (has labels)
}

func compile(r Rule) *compiled {
	c := &compiled{Rule: r}
	if len(r.HostIDs) > 0 {
		c.hosts = map[string]bool{}
		for _, h := range r.HostIDs {
			c.hosts[h] = true
		}
	}
	c.name, _, c.exact = strings.Cut(r.Metric, "{")
	return c
}

// selects reports whether the rule applies to a host with these labels.
func (c *compiled) selects(host string, labels map[string]string) bool {
	if c.hosts != nil && !c.hosts[host] {
		return false
	}
	for k, v := range c.HostLabels {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// matches reports whether series (a full key) is one the rule watches.
func (c *compiled) matches(series string) bool {
	if c.exact {
		return series == c.Metric
	}
	name, _, _ := strings.Cut(series, "{")
	return name == c.name
}

// breached applies the rule's comparison.
func (c *compiled) breached(v float64) bool {
	switch c.Op {
	case ">":
		return v > c.Threshold
	case ">=":
		return v >= c.Threshold
	case "<":
		return v < c.Threshold
	default:
		return v <= c.Threshold
	}
}
