package broker

// GET /federate: the fleet's latest samples in the Prometheus text
// exposition format, so an existing Prometheus scrapes everything the agents
// collect from any one broker (every broker reads the whole storage, so one
// scrape target is enough; scrape two for redundancy — the samples carry
// their own timestamps, so duplicates collapse).
//
//	scrape_configs:
//	  - job_name: monitor-fleet
//	    honor_labels: true
//	    metrics_path: /federate
//	    static_configs: [{targets: ["broker-1:9095"]}]
//
// Each host's newest snapshot becomes one sample per series, at the
// snapshot's time (milliseconds). Names are sanitized (cpu.usage_percent →
// monitor_cpu_usage_percent); the series' labels are kept; host="<id>" and
// the host's registered labels are added (a series label of the same name
// wins; a series label called "host" is renamed exported_host). Filters:
//
//	host=ID       exact host id, or a prefix ending in "*" (repeatable)
//	name=N        a metric family (cpu.usage_percent), a prefix ending in
//	              "*" (net.*) or an exact series — storage.Matcher (repeatable)
//	max_age=DUR   hosts whose newest data is older are left out (default 5m,
//	              what Prometheus' lookback would show; 0: no limit)
//
// Hosts are read with at most federateParallel Latest calls at once, all
// within federateTimeout; a host that could not be read is left out and
// counted in monitor_federate_errors (the first error is a comment line).

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/monitorhq/monitor/pkg/storage"
)

const (
	// federateParallel bounds the concurrent Latest calls of one scrape.
	federateParallel = 16
	// federateTimeout bounds one scrape's reads, below the HTTP server's
	// 10 s write timeout and Prometheus' usual scrape timeout.
	federateTimeout = 8 * time.Second
	// federateMaxAge is the default max_age.
	federateMaxAge = 5 * time.Minute
	// federatePrefix starts every fleet metric name.
	federatePrefix = "monitor_"
)

// federateQuery is a parsed /federate request.
type federateQuery struct {
	hosts  []string // exact ids, or prefixes ending in "*"
	names  *storage.Matcher
	maxAge time.Duration // 0: no limit
}

func parseFederateQuery(r *http.Request) (federateQuery, error) {
	q := r.URL.Query()
	fq := federateQuery{hosts: q["host"], names: storage.NewMatcher(q["name"]), maxAge: federateMaxAge}
	for k := range q {
		switch k {
		case "host", "name", "max_age":
		default:
			return fq, fmt.Errorf("unknown parameter %q; allowed are host, name and max_age", k)
		}
	}
	for _, h := range fq.hosts {
		if h == "" || strings.Contains(strings.TrimSuffix(h, "*"), "*") {
			return fq, fmt.Errorf("host %q: a host id, or a prefix ending in a single *", h)
		}
	}
	for _, n := range q["name"] {
		if n == "" {
			return fq, fmt.Errorf("name: empty; give a metric family, a prefix ending in *, or a series")
		}
	}
	if v := q.Get("max_age"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fq, fmt.Errorf("max_age %q: a non-negative Go duration such as 5m (0: no limit)", v)
		}
		fq.maxAge = d
	}
	return fq, nil
}

func (fq federateQuery) wantHost(id string) bool {
	if len(fq.hosts) == 0 {
		return true
	}
	for _, h := range fq.hosts {
		if p, ok := strings.CutSuffix(h, "*"); ok {
			if strings.HasPrefix(id, p) {
				return true
			}
		} else if h == id {
			return true
		}
	}
	return false
}

// fedSample is one rendered sample line without its metric name.
type fedSample struct {
	labels string // {...} or ""
	value  float64
	tsMs   int64
}

type fedFamily struct {
	help    string
	samples []fedSample
}

// federate serves GET /federate (see the comment at the top of the file).
func (b *Broker) federate(w http.ResponseWriter, r *http.Request) {
	fq, err := parseFederateQuery(r)
	if err != nil {
		http.Error(w, "federate: "+err.Error(), http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), federateTimeout)
	defer cancel()
	hosts, err := b.store.Hosts(ctx)
	if err != nil {
		http.Error(w, "federate: list hosts: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	res := collectFederate(ctx, b.store, hosts, fq, time.Now())
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_ = res.write(w)
}

// fedResult is what one scrape read.
type fedResult struct {
	families map[string]*fedFamily
	read     int    // hosts whose snapshot was read
	old      int    // hosts left out by max_age
	errors   int    // hosts that could not be read
	firstErr string // the first of those errors
}

// collectFederate reads the latest snapshot of every selected host with
// bounded concurrency and groups the samples by metric family.
func collectFederate(ctx context.Context, store storage.Store, hosts []storage.Host, fq federateQuery, now time.Time) *fedResult {
	res := &fedResult{families: map[string]*fedFamily{}}
	var todo []storage.Host
	for _, h := range hosts {
		if !fq.wantHost(h.ID) {
			continue
		}
		if h.LastData == 0 || (fq.maxAge > 0 && now.Sub(time.Unix(h.LastData, 0)) > fq.maxAge) {
			res.old++
			continue
		}
		todo = append(todo, h)
	}
	snaps := make([]storage.Snapshot, len(todo))
	errs := make([]error, len(todo))
	var wg sync.WaitGroup
	sem := make(chan struct{}, federateParallel)
	for i, h := range todo {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			snap, ok, err := store.Latest(ctx, h.ID)
			switch {
			case err != nil:
				errs[i] = fmt.Errorf("read the latest snapshot of host %q: %w", h.ID, err)
			case ok:
				snaps[i] = snap
			}
		})
	}
	wg.Wait()
	for i, h := range todo {
		if errs[i] != nil {
			if res.errors == 0 {
				res.firstErr = errs[i].Error()
			}
			res.errors++
			continue
		}
		if snaps[i].HostID == "" {
			continue // no data after all (expired between the calls)
		}
		if fq.maxAge > 0 && now.Sub(time.Unix(snaps[i].Timestamp, 0)) > fq.maxAge {
			res.old++
			continue
		}
		res.read++
		res.add(h, snaps[i], fq.names)
	}
	return res
}

// add renders the samples of one host's snapshot into their families.
func (res *fedResult) add(h storage.Host, snap storage.Snapshot, names *storage.Matcher) {
	tsMs := snap.Timestamp * 1000
	for _, smp := range snap.Samples {
		if !names.Match(smp.Series) || math.IsNaN(smp.Value) {
			continue
		}
		name, labels, err := storage.ParseSeries(smp.Series)
		if err != nil {
			continue // stored series are validated; a bad one is not ours to show
		}
		metric := federatePrefix + sanitizeName(name)
		fam := res.families[metric]
		if fam == nil {
			help := name
			if smp.Unit != "" {
				help += " (" + smp.Unit + ")"
			}
			fam = &fedFamily{help: help}
			res.families[metric] = fam
		}
		fam.samples = append(fam.samples, fedSample{labels: renderLabels(h, labels), value: smp.Value, tsMs: tsMs})
	}
}

// renderLabels renders {k="v",...}: the series' labels, host, then the
// host's registered labels not already used, sorted by name.
func renderLabels(h storage.Host, series map[string]string) string {
	all := make(map[string]string, len(series)+len(h.Labels)+1)
	for k, v := range series {
		k = sanitizeName(k)
		if k == "host" {
			k = "exported_host"
		}
		all[k] = v
	}
	all["host"] = h.ID
	for k, v := range h.Labels {
		k = sanitizeName(k)
		if _, used := all[k]; !used && !strings.HasPrefix(k, "__") {
			all[k] = v
		}
	}
	keys := make([]string, 0, len(all))
	for k := range all {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var sb strings.Builder
	sb.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(k)
		sb.WriteString(`="`)
		sb.WriteString(escapeLabelValue(all[k]))
		sb.WriteByte('"')
	}
	sb.WriteByte('}')
	return sb.String()
}

// write renders the families sorted by name, then the scrape's own figures.
func (res *fedResult) write(w io.Writer) error {
	names := make([]string, 0, len(res.families))
	for n := range res.families {
		names = append(names, n)
	}
	slices.Sort(names)
	var buf []byte
	for _, n := range names {
		fam := res.families[n]
		slices.SortFunc(fam.samples, func(a, b fedSample) int { return cmp.Compare(a.labels, b.labels) })
		buf = fmt.Appendf(buf, "# HELP %s %s\n# TYPE %s untyped\n", n, escapeHelp(fam.help), n)
		for _, s := range fam.samples {
			buf = append(buf, n...)
			buf = append(buf, s.labels...)
			buf = append(buf, ' ')
			buf = strconv.AppendFloat(buf, s.value, 'g', -1, 64)
			buf = append(buf, ' ')
			buf = strconv.AppendInt(buf, s.tsMs, 10)
			buf = append(buf, '\n')
		}
		if len(buf) > 64<<10 {
			if _, err := w.Write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
	}
	if res.firstErr != "" {
		buf = fmt.Appendf(buf, "# federate: %d host(s) could not be read; first: %s\n", res.errors, oneLine(res.firstErr))
	}
	buf = fmt.Appendf(buf, "# HELP monitor_federate_hosts Hosts whose latest snapshot this scrape returned.\n# TYPE monitor_federate_hosts gauge\nmonitor_federate_hosts %d\n", res.read)
	buf = fmt.Appendf(buf, "# HELP monitor_federate_old_hosts Hosts left out because their newest data is older than max_age.\n# TYPE monitor_federate_old_hosts gauge\nmonitor_federate_old_hosts %d\n", res.old)
	buf = fmt.Appendf(buf, "# HELP monitor_federate_errors Hosts this scrape could not read (left out).\n# TYPE monitor_federate_errors gauge\nmonitor_federate_errors %d\n", res.errors)
	_, err := w.Write(buf)
	return err
}

// sanitizeName maps a dotted name or label name to [a-zA-Z_][a-zA-Z0-9_]*.
func sanitizeName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9')) {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "_"
	}
	return string(b)
}

var labelValueEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)

func escapeLabelValue(v string) string { return labelValueEscaper.Replace(v) }

var helpEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`)

func escapeHelp(v string) string { return helpEscaper.Replace(v) }

func oneLine(s string) string { return strings.NewReplacer("\n", " ", "\r", " ").Replace(s) }
