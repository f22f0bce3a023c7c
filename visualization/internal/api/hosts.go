package api

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/monitorhq/monitor/pkg/storage"
)

// hostJSON is one host of GET /api/v1/hosts. Times are Unix seconds, 0 when
// never seen.
type hostJSON struct {
	ID             string            `json:"id"`
	Hostname       string            `json:"hostname"`
	OS             string            `json:"os"`
	Platform       string            `json:"platform"`
	Kernel         string            `json:"kernel"`
	Arch           string            `json:"arch"`
	CPUCount       uint32            `json:"cpu_count"`
	MemoryBytes    uint64            `json:"memory_bytes"`
	Labels         map[string]string `json:"labels"`
	AgentVersion   string            `json:"agent_version"`
	BootTime       int64             `json:"boot_time"`
	FirstSeen      int64             `json:"first_seen"`
	LastRegistered int64             `json:"last_registered"`
	LastHeartbeat  int64             `json:"last_heartbeat"`
	LastData       int64             `json:"last_data"`
	// Online: a heartbeat or registration within offline_after. Computed here from the
	// timestamps rather than taken from the broker, so every host is judged
	// by this server's threshold and clock.
	Online bool `json:"online"`
	// Fresh: stored data within stale_after. Liveness and freshness are
	// apart on purpose: an agent with a stuck collector is online, not fresh.
	Fresh bool `json:"fresh"`
}

type hostsBody struct {
	Hosts []hostJSON `json:"hosts"`
}

func (a *API) hosts(w http.ResponseWriter, r *http.Request) {
	list, err := a.brokers.ListHosts(r.Context())
	if err != nil {
		a.brokerError(w, r, err)
		return
	}
	now := a.cfg.Now()
	body := hostsBody{Hosts: make([]hostJSON, 0, len(list))}
	for _, h := range list {
		info := h.GetInfo()
		body.Hosts = append(body.Hosts, hostJSON{
			ID:             info.GetHostId(),
			Hostname:       info.GetHostname(),
			OS:             info.GetOs(),
			Platform:       info.GetPlatform(),
			Kernel:         info.GetKernel(),
			Arch:           info.GetArch(),
			CPUCount:       info.GetCpuCount(),
			MemoryBytes:    info.GetMemoryBytes(),
			Labels:         nonNil(info.GetLabels()),
			AgentVersion:   info.GetAgentVersion(),
			BootTime:       info.GetBootTime(),
			FirstSeen:      h.GetFirstSeen(),
			LastRegistered: h.GetLastRegistered(),
			LastHeartbeat:  h.GetLastHeartbeat(),
			LastData:       h.GetLastData(),
			Online:         within(now, max(h.GetLastHeartbeat(), h.GetLastRegistered()), a.cfg.OfflineAfter),
			Fresh:          within(now, h.GetLastData(), a.cfg.StaleAfter),
		})
	}
	writeJSON(w, http.StatusOK, body)
}

// within reports whether the Unix time ts (0: never) is no older than d at
// now. A time ahead of now (clock skew) counts as recent.
func within(now time.Time, ts int64, d time.Duration) bool {
	return ts > 0 && now.Sub(time.Unix(ts, 0)) <= d
}

type metricJSON struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels"`
	Value  float64           `json:"value"`
	Unit   string            `json:"unit"`
}

type latestBody struct {
	HostID    string            `json:"host_id"`
	Timestamp int64             `json:"timestamp"`
	Tags      map[string]string `json:"tags"`
	Metrics   []metricJSON      `json:"metrics"`
}

func (a *API) latest(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := storage.ValidateHostID(id); err != nil {
		writeError(w, http.StatusBadRequest, "host id: "+err.Error())
		return
	}
	snap, err := a.brokers.Latest(r.Context(), id)
	if err != nil {
		a.brokerError(w, r, err)
		return
	}
	if snap == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("host %q has no stored data", id))
		return
	}
	body := latestBody{
		HostID:    snap.GetHostId(),
		Timestamp: snap.GetTimestamp(),
		Tags:      nonNil(snap.GetTags()),
		Metrics:   make([]metricJSON, 0, len(snap.GetMetrics())),
	}
	for _, m := range snap.GetMetrics() {
		body.Metrics = append(body.Metrics, metricJSON{Name: m.GetName(), Labels: nonNil(m.GetLabels()), Value: m.GetValue(), Unit: m.GetUnit()})
	}
	writeJSON(w, http.StatusOK, body)
}

type healthBody struct {
	Status  string `json:"status"`
	Brokers int    `json:"brokers"`
	Error   string `json:"error,omitempty"`
}

// healthz is 200 while at least one broker has a ready connection; brokers
// counts them.
func (a *API) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.HealthTimeout)
	defer cancel()
	n := a.brokers.Reachable(ctx)
	if n == 0 {
		writeJSON(w, http.StatusServiceUnavailable, healthBody{
			Status: "unavailable",
			Error:  fmt.Sprintf("none of the %d configured brokers is reachable", a.brokers.Len()),
		})
		return
	}
	writeJSON(w, http.StatusOK, healthBody{Status: "ok", Brokers: n})
}

// nonNil makes an absent map encode as {} rather than null.
func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
