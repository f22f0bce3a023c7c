package alerting

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// AlertsResponse is the body of GET /api/v1/alerts.
type AlertsResponse struct {
	Rules  []Rule  `json:"rules"`  // webhooks redacted to scheme://host/…
	Alerts []Alert `json:"alerts"` // pending, firing and stale
	Stats  Stats   `json:"stats"`
}

// HandleList serves GET /api/v1/alerts (viewer): the rules and the
// current alert states.
func (e *Engine) HandleList(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, AlertsResponse{Rules: e.Rules(), Alerts: e.Alerts(), Stats: e.Stats()})
}

// maxRuleBody bounds a rule's JSON body.
const maxRuleBody = 64 << 10

// HandleCreate serves POST /api/v1/alerts/rules (admin): body a Rule; an
// empty id is generated. 201 with the stored rule; 400 for an invalid rule,
// 409 when the id exists, 502/504 when the store fails.
func (e *Engine) HandleCreate(w http.ResponseWriter, r *http.Request) {
	rule, ok := readRule(w, r)
	if !ok {
		return
	}
	if rule.ID == "" {
		rule.ID = newID()
	} else if e.hasRule(rule.ID) {
		writeError(w, http.StatusConflict, fmt.Sprintf("alert rule %q exists; PUT /api/v1/alerts/rules/%s replaces it", rule.ID, rule.ID))
		return
	}
	if !e.put(r.Context(), w, rule) {
		return
	}
	writeJSON(w, http.StatusCreated, rule)
}

// HandleReplace serves PUT /api/v1/alerts/rules/{id} (admin): creates or
// replaces the rule with that id (a body id, if any, must match). 200 with
// the stored rule; 400 for an invalid rule or mismatched id.
func (e *Engine) HandleReplace(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := validateID(id); err != nil || id == "" {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("rule id %q in the path: want 1..64 of letters, digits and . _ -", id))
		return
	}
	rule, ok := readRule(w, r)
	if !ok {
		return
	}
	if rule.ID != "" && rule.ID != id {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("body id %q differs from path id %q", rule.ID, id))
		return
	}
	rule.ID = id
	if !e.put(r.Context(), w, rule) {
		return
	}
	writeJSON(w, http.StatusOK, rule)
}

// HandleDelete serves DELETE /api/v1/alerts/rules/{id} (admin): 200
// {"deleted": id}, 404 if there was no such rule. The rule's alerts resolve.
func (e *Engine) HandleDelete(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := validateID(id); err != nil || id == "" {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("rule id %q in the path: want 1..64 of letters, digits and . _ -", id))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), e.opts.StoreTimeout)
	defer cancel()
	found, err := e.opts.Store.Delete(ctx, id)
	if err != nil {
		writeStoreError(w, fmt.Errorf("delete alert rule %q: %w", id, err))
		return
	}
	if !found {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no alert rule %q", id))
		return
	}
	e.refreshAfterWrite(r.Context())
	writeJSON(w, http.StatusOK, map[string]string{"deleted": id})
}

func (e *Engine) hasRule(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.rules[id] != nil
}

// put stores rule and reloads the rules; false when it wrote an error.
func (e *Engine) put(ctx context.Context, w http.ResponseWriter, rule Rule) bool {
	sctx, cancel := context.WithTimeout(ctx, e.opts.StoreTimeout)
	defer cancel()
	if err := e.opts.Store.Put(sctx, rule.PB()); err != nil {
		writeStoreError(w, fmt.Errorf("store alert rule %q: %w", rule.ID, err))
		return false
	}
	e.refreshAfterWrite(ctx)
	return true
}

// refreshAfterWrite reloads the rules at once so the write shows in the
// next evaluation and listing; if that fails, Run's loop retries soon.
func (e *Engine) refreshAfterWrite(ctx context.Context) {
	if err := e.Refresh(ctx); err != nil {
		e.logger.Warn("alert rules: refresh after a write failed", "err", err)
		select {
		case e.refresh <- struct{}{}:
		default:
		}
	}
}

// readRule decodes and validates a rule body; false when it wrote an error.
func readRule(w http.ResponseWriter, r *http.Request) (Rule, bool) {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxRuleBody))
	dec.DisallowUnknownFields()
	var rule Rule
	if err := dec.Decode(&rule); err != nil {
		writeError(w, http.StatusBadRequest, "alert rule body: "+err.Error())
		return Rule{}, false
	}
	if err := rule.Validate(); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return Rule{}, false
	}
	return rule, true
}

func writeStoreError(w http.ResponseWriter, err error) {
	code := http.StatusBadGateway
	if errors.Is(err, context.DeadlineExceeded) {
		code = http.StatusGatewayTimeout
	}
	if errors.Is(err, ErrInvalidRule) {
		code = http.StatusBadRequest
	}
	writeError(w, code, strings.TrimSpace(err.Error()))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}
