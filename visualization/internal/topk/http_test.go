package topk

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/monitorhq/monitor/pkg/storage"
)

func TestHandleTopKAndObserve(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	e, err := New(Options{K: 2, Now: clk.Now, Metrics: []string{"cpu."}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ts := clk.Now().Unix()
	for i, h := range []string{"a", "b", "c"} {
		e.Observe(h, nil, ts, []storage.Sample{{Series: "cpu.usage", Value: float64(i)}, {Series: "mem.used", Value: 1}})
	}
	cases := []struct {
		name, query string
		code        int
		body        string
	}{
		{"metric", "metric=cpu.usage", 200, `{"metric":"cpu.usage","k":2,"entries":[{"host":"c","value":2,"ts":1700000000},{"host":"b","value":1,"ts":1700000000}]}`},
		{"k", "metric=cpu.usage&k=1", 200, `{"metric":"cpu.usage","k":1,"entries":[{"host":"c","value":2,"ts":1700000000}]}`},
		{"unknown metric is empty", "metric=mem.used", 200, `{"metric":"mem.used","k":2,"entries":[]}`},
		{"list", "", 200, `{"k":2,"metrics":["cpu.usage"]}`},
		{"bad k", "metric=cpu.usage&k=0", 400, `parameter k`},
		{"k not a number", "metric=cpu.usage&k=x", 400, `parameter k`},
		{"k too large", "metric=cpu.usage&k=1001", 400, `parameter k`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			e.HandleTopK(rec, httptest.NewRequest("GET", "/api/v1/topk?"+c.query, nil))
			body := strings.TrimSpace(rec.Body.String())
			if rec.Code != c.code || !strings.Contains(body, c.body) {
				t.Fatalf("%d %s, want %d containing %s", rec.Code, body, c.code, c.body)
			}
			if rec.Code != 200 {
				var m map[string]string
				if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil || m["error"] == "" {
					t.Fatalf("error body %s", body)
				}
			}
		})
	}
	if got := e.Metrics(); !slices.Equal(got, []string{"cpu.usage"}) {
		t.Fatalf("Metrics = %v (Observe must feed only the selected prefixes)", got)
	}
	var _ http.HandlerFunc = e.HandleTopK
}
