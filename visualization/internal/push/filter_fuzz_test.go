package push

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/monitorhq/monitor/pkg/storage"
)

// FuzzCompileFilter feeds subscription filters, as a client sends them in
// its subscribe message (JSON), to compile: it must never panic, and what
// it accepts is in the forms the hub indexes — bounded counts, at least one
// host and metric pattern, no "*" left in a metric prefix, exact host
// patterns valid host ids, and no control kind subscribed.
func FuzzCompileFilter(f *testing.F) {
	f.Add([]byte(`{"hosts":["web-*","db-1"],"labels":["env=prod"],"metrics":["cpu.","net.rx_*"],"kinds":["sample","topk"]}`))
	f.Add([]byte(`{"hosts":["*"],"metrics":["*"]}`))
	f.Add([]byte(`{"hosts":["a**"],"labels":["=x","k=1","k=2"],"kinds":["hello",""]}`))
	f.Add([]byte(`{"metrics":["cpu.usage_percent{cpu=0}","\u0000"],"hosts":["host:with:colons"]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var flt Filter
		if json.Unmarshal(data, &flt) != nil {
			return
		}
		c, err := compile(flt)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an error without a message")
			}
			return
		}
		n := len(flt.Hosts) + len(flt.Labels) + len(flt.Metrics) + len(flt.Kinds)
		if n > maxPatterns || len(c.hosts) == 0 || len(c.metrics) == 0 || len(c.kinds) == 0 {
			t.Fatalf("accepted %+v as %d hosts, %d metrics, %d kinds", flt, len(c.hosts), len(c.metrics), len(c.kinds))
		}
		for _, m := range c.metrics {
			if strings.ContainsAny(m, "*\x00") || len(m) > maxPatternLen {
				t.Fatalf("metric pattern %q accepted", m)
			}
		}
		for _, h := range flt.Hosts {
			if !strings.HasSuffix(h, "*") && storage.ValidateHostID(h) != nil {
				t.Fatalf("invalid exact host %q accepted", h)
			}
		}
		for k := range c.kinds {
			switch k {
			case TypeHello, TypeSubscribed, TypeError, TypeGap, "":
				t.Fatalf("control kind %q subscribed", k)
			}
		}
	})
}
