// Package alerting evaluates threshold alert rules with a for-duration on
// the live stream.
//
// Rules (monitorpb.AlertRule) live in a RuleStore — the broker cluster's
// control plane — and the engine keeps a validated copy, refreshed every
// Options.Refresh and right after its own writes. Each (rule, host,
// series) the rule watches has a state:
//
//	(none) --breach--> pending --breach for ≥ for_seconds--> firing
//	pending --no breach--> (none)          firing --no breach--> resolved (then none)
//	firing --host silent for StaleAfter--> stale --breach--> firing
//	                                       stale --no breach--> resolved
//
// for_seconds is measured on sample timestamps, so a catch-up replay
// evaluates exactly as the live stream would have. A host that stops
// reporting does not resolve its alerts (its metrics did not recover):
// after StaleAfter without data (engine clock) a firing alert becomes
// "stale" and stays listed until the host reports again or the rule goes;
// its pending states are dropped. A deleted rule, or one that no longer
// selects a host, resolves that host's alerts.
//
// Every state change is published as kind "alert" (payload Event). A rule
// with a webhook gets a JSON POST (Notification) on firing and on
// resolved, from a bounded queue served by Run's worker with retries and
// exponential backoff; a full queue drops the notification and counts it,
// so evaluation never blocks.
//
// Concurrency: every method is safe for concurrent use. Run owns the
// refresher and the webhook worker and returns after both stopped.
package alerting

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// RuleStore is where rules are kept; the server implements it over the
// broker's ClusterService. Delete reports whether the rule existed.
type RuleStore interface {
	List(ctx context.Context) ([]*monitorpb.AlertRule, error)
	Put(ctx context.Context, rule *monitorpb.AlertRule) error
	Delete(ctx context.Context, id string) (bool, error)
}

// Options configure an Engine; zero fields take the defaults.
type Options struct {
	Store      RuleStore
	Refresh    time.Duration // rule reload interval; default 30 s
	StaleAfter time.Duration // a host silent this long makes its firing alerts stale; default 5 min
	// StoreTimeout bounds one store call; default 10 s.
	StoreTimeout time.Duration
	// Publish receives "alert" events; nil: none. Called without the
	// engine's lock held; it must not block for long.
	Publish func(kind string, payload any)
	Now     func() time.Time // engine clock (staleness); nil: time.Now
	Logger  *slog.Logger     // nil: slog.Default()
	Webhook WebhookOptions
}

// States of an alert.
const (
	StatePending  = "pending"
	StateFiring   = "firing"
	StateResolved = "resolved"
	StateStale    = "stale"
	StateInactive = "inactive" // a pending alert whose breach ended before it fired
)

// Alert is the state of one rule on one host's series.
type Alert struct {
	RuleID    string  `json:"rule_id"`
	Host      string  `json:"host"`
	Series    string  `json:"series"`
	State     string  `json:"state"`
	Value     float64 `json:"value"`            // latest value evaluated
	Threshold float64 `json:"threshold"`        //
	Op        string  `json:"op"`               //
	Since     int64   `json:"since"`            // timestamp (Unix s) of the first breaching value
	FiredAt   int64   `json:"fired_at"`         // timestamp it fired (0: not yet)
	LastTS    int64   `json:"last_ts"`          // timestamp of the latest value
	Resolved  int64   `json:"resolved_at"`      // timestamp it resolved (events only)
	Reason    string  `json:"reason,omitempty"` // why it resolved without a value ("rule deleted", "host no longer selected")
}

// Event is the payload of an "alert" event: the alert after the change.
type Event struct {
	Alert Alert `json:"alert"`
}

// Stats counts what the engine did.
type Stats struct {
	Rules          int    `json:"rules"`
	Alerts         int    `json:"alerts"` // pending, firing and stale
	Evaluations    uint64 `json:"evaluations"`
	Fired          uint64 `json:"fired"`
	Resolved       uint64 `json:"resolved"`
	RefreshErrors  uint64 `json:"refresh_errors"`
	InvalidStored  uint64 `json:"invalid_stored"` // stored rules refused by validation (skipped)
	WebhookSent    uint64 `json:"webhook_sent"`
	WebhookRetries uint64 `json:"webhook_retries"`
	WebhookFailed  uint64 `json:"webhook_failed"`  // gave up after the attempts, or a 4xx
	WebhookDropped uint64 `json:"webhook_dropped"` // queue full, or left at shutdown
}

type stateKey struct{ rule, host, series string }

type state struct {
	Alert
	seen   time.Time         // engine clock at the latest value
	labels map[string]string // the host's labels when the state began (rule changes re-check them)
}

// Engine evaluates the rules.
type Engine struct {
	opts   Options
	logger *slog.Logger
	hook   *notifier

	mu      sync.Mutex
	rules   map[string]*compiled
	byName  map[string][]*compiled // metric name -> rules
	states  map[stateKey]*state
	refresh chan struct{}

	evals, fired, resolved, refreshErrs, invalidStored atomic.Uint64
}

// New returns an engine over opts.Store. It loads no rules until Refresh
// or Run.
func New(opts Options) (*Engine, error) {
	if opts.Store == nil {
		return nil, fmt.Errorf("alerting: no rule store")
	}
	if opts.Refresh == 0 {
		opts.Refresh = 30 * time.Second
	}
	if opts.StaleAfter == 0 {
		opts.StaleAfter = 5 * time.Minute
	}
	if opts.StoreTimeout == 0 {
		opts.StoreTimeout = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Refresh < 0 || opts.StaleAfter < 0 || opts.StoreTimeout < 0 {
		return nil, fmt.Errorf("alerting: refresh %s, stale after %s and store timeout %s must be positive", opts.Refresh, opts.StaleAfter, opts.StoreTimeout)
	}
	hook, err := newNotifier(opts.Webhook)
	if err != nil {
		return nil, err
	}
	return &Engine{opts: opts, logger: opts.Logger, hook: hook, rules: map[string]*compiled{}, byName: map[string][]*compiled{},
		states: map[stateKey]*state{}, refresh: make(chan struct{}, 1)}, nil
}

// Run refreshes the rules every Refresh (and at once), marks silent hosts'
// alerts stale, and delivers webhooks, until ctx ends; it returns ctx.Err()
// after its goroutines stopped.
func (e *Engine) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		e.hook.run(ctx)
	}()
	t := time.NewTicker(min(e.opts.Refresh, max(e.opts.StaleAfter/4, time.Second)))
	defer t.Stop()
	lastRefresh := time.Time{}
	for {
		if time.Since(lastRefresh) >= e.opts.Refresh {
			if err := e.Refresh(ctx); err != nil && ctx.Err() == nil {
				e.logger.Warn("alert rules: refresh failed; keeping the previous rules", "err", err)
			}
			lastRefresh = time.Now()
		}
		e.markStale()
		select {
		case <-ctx.Done():
			wg.Wait()
			return ctx.Err()
		case <-t.C:
		case <-e.refresh:
			lastRefresh = time.Time{}
		}
	}
}

// Refresh reloads the rules from the store. Stored rules that fail
// validation are skipped and counted; alerts of rules that are gone, or
// that no longer select their host, resolve.
func (e *Engine) Refresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, e.opts.StoreTimeout)
	defer cancel()
	pbs, err := e.opts.Store.List(ctx)
	if err != nil {
		e.refreshErrs.Add(1)
		return fmt.Errorf("list alert rules: %w", err)
	}
	rules := map[string]*compiled{}
	for _, p := range pbs {
		r := ruleFromPB(p)
		if r.ID == "" || r.Validate() != nil {
			e.invalidStored.Add(1)
			continue
		}
		rules[r.ID] = compile(r)
	}
	byName := map[string][]*compiled{}
	for _, c := range rules {
		byName[c.name] = append(byName[c.name], c)
	}
	var evs []Event
	var notes []notification
	e.mu.Lock()
	old := e.rules
	e.rules, e.byName = rules, byName
	for k, s := range e.states {
		c := rules[k.rule]
		reason := ""
		switch {
		case c == nil:
			reason = "rule deleted"
		case !c.matches(k.series) || !c.selects(k.host, s.labels):
			reason = "host no longer selected"
		default:
			s.Threshold, s.Op = c.Threshold, c.Op
			continue
		}
		delete(e.states, k)
		if s.State == StatePending {
			s.State = StateInactive
		} else {
			s.State, s.Resolved, s.Reason = StateResolved, s.LastTS, reason
			e.resolved.Add(1)
			if o := old[k.rule]; o != nil && o.Webhook != "" {
				notes = append(notes, notification{url: o.Webhook, body: s.Alert})
			}
		}
		evs = append(evs, Event{Alert: s.Alert})
	}
	e.mu.Unlock()
	e.emit(evs, notes)
	return nil
}

// Observe evaluates one stored snapshot from the live path (it satisfies
// live.Observer; live.Sample is storage.Sample).
func (e *Engine) Observe(hostID string, labels map[string]string, ts int64, samples []storage.Sample) {
	var evs []Event
	var notes []notification
	e.mu.Lock()
	now := e.opts.Now()
	for _, smp := range samples {
		name, _, _ := strings.Cut(smp.Series, "{")
		for _, c := range e.byName[name] {
			if !c.matches(smp.Series) || !c.selects(hostID, labels) {
				continue
			}
			evs, notes = e.eval(c, hostID, labels, smp.Series, smp.Value, ts, now, evs, notes)
		}
	}
	e.mu.Unlock()
	e.emit(evs, notes)
}

func (e *Engine) eval(c *compiled, host string, labels map[string]string, series string, v float64, ts int64, now time.Time, evs []Event, notes []notification) ([]Event, []notification) {
	e.evals.Add(1)
	k := stateKey{c.ID, host, series}
	s := e.states[k]
	breach := c.breached(v)
	created := false
	if s == nil {
		if !breach {
			return evs, notes
		}
		created = true
		s = &state{Alert: Alert{RuleID: c.ID, Host: host, Series: series, State: StatePending, Since: ts, Op: c.Op, Threshold: c.Threshold},
			labels: maps.Clone(labels)}
		e.states[k] = s
	} else if ts < s.LastTS {
		return evs, notes // older than what was evaluated: the live feed does not send these
	}
	s.Value, s.LastTS, s.seen = v, ts, now
	prev := s.State
	switch {
	case !breach && prev == StatePending:
		delete(e.states, k)
		s.State = StateInactive
	case !breach: // firing or stale
		delete(e.states, k)
		s.State, s.Resolved = StateResolved, ts
		e.resolved.Add(1)
		if c.Webhook != "" {
			notes = append(notes, notification{url: c.Webhook, body: s.Alert})
		}
	case prev == StatePending && ts-s.Since >= c.ForSeconds:
		s.State, s.FiredAt = StateFiring, ts
		e.fired.Add(1)
		if c.Webhook != "" {
			notes = append(notes, notification{url: c.Webhook, body: s.Alert})
		}
	case prev == StateStale:
		s.State = StateFiring // back from silence, still breaching: no new notification
	}
	if s.State != prev || created {
		evs = append(evs, Event{Alert: s.Alert})
	}
	return evs, notes
}

// markStale turns firing alerts of silent hosts stale and drops their
// pending ones.
func (e *Engine) markStale() {
	var evs []Event
	e.mu.Lock()
	now := e.opts.Now()
	for k, s := range e.states {
		if now.Sub(s.seen) < e.opts.StaleAfter {
			continue
		}
		switch s.State {
		case StatePending:
			delete(e.states, k)
			s.State = StateInactive
		case StateFiring:
			s.State = StateStale
		default:
			continue
		}
		evs = append(evs, Event{Alert: s.Alert})
	}
	e.mu.Unlock()
	e.emit(evs, nil)
}

// MarkStale runs the staleness check now (Run does it periodically).
func (e *Engine) MarkStale() { e.markStale() }

func (e *Engine) emit(evs []Event, notes []notification) {
	for _, n := range notes {
		e.hook.enqueue(n)
	}
	if e.opts.Publish == nil {
		return
	}
	for _, ev := range evs {
		e.opts.Publish("alert", ev)
	}
}

// Rules returns the loaded rules sorted by id, webhooks redacted.
func (e *Engine) Rules() []Rule {
	e.mu.Lock()
	out := make([]Rule, 0, len(e.rules))
	for _, c := range e.rules {
		r := c.Rule
		r.Webhook = redactURL(r.Webhook)
		out = append(out, r)
	}
	e.mu.Unlock()
	slices.SortFunc(out, func(a, b Rule) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Alerts returns the pending, firing and stale alerts, sorted by rule,
// host and series.
func (e *Engine) Alerts() []Alert {
	e.mu.Lock()
	out := make([]Alert, 0, len(e.states))
	for _, s := range e.states {
		out = append(out, s.Alert)
	}
	e.mu.Unlock()
	slices.SortFunc(out, func(a, b Alert) int {
		return strings.Compare(a.RuleID+"\x00"+a.Host+"\x00"+a.Series, b.RuleID+"\x00"+b.Host+"\x00"+b.Series)
	})
	return out
}

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	r, a := len(e.rules), len(e.states)
	e.mu.Unlock()
	h := e.hook.stats()
	return Stats{Rules: r, Alerts: a, Evaluations: e.evals.Load(), Fired: e.fired.Load(), Resolved: e.resolved.Load(),
		RefreshErrors: e.refreshErrs.Load(), InvalidStored: e.invalidStored.Load(),
		WebhookSent: h.sent, WebhookRetries: h.retries, WebhookFailed: h.failed, WebhookDropped: h.dropped}
}

var _ http.HandlerFunc = (*Engine)(nil).HandleList
