// Package configfuzz fuzzes config loading: pkg/config.Decode of arbitrary
// YAML into each component's Config (agent, broker, visualization) on top of
// its defaults, then Validate. Neither may panic, a refused file gets an
// error that says something, and a file Validate accepts decodes and
// validates the same way twice. It is a test-only package: pkg/config may
// not import the components, and the components' own packages hold other
// work.
package configfuzz

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/monitorhq/monitor/agent"
	"github.com/monitorhq/monitor/broker"
	"github.com/monitorhq/monitor/pkg/config"
	"github.com/monitorhq/monitor/visualization"
)

type validator interface{ Validate() error }

// check decodes data into a fresh default config and validates it.
func check[T any](t *testing.T, def func() T, data []byte) {
	load := func() (T, error) {
		cfg := def()
		if err := config.Decode(data, &cfg); err != nil {
			return cfg, err
		}
		return cfg, any(&cfg).(validator).Validate()
	}
	a, errA := load()
	if errA != nil && errA.Error() == "" {
		t.Fatalf("%T: an error without a message", a)
	}
	b, errB := load()
	if (errA == nil) != (errB == nil) {
		t.Fatalf("%T: decoding twice gave %v, then %v", a, errA, errB)
	}
	if errA == nil && !reflect.DeepEqual(a, b) {
		t.Fatalf("%T: decoding twice gave two configs", a)
	}
}

func FuzzConfigDecode(f *testing.F) {
	for _, pattern := range []string{"../../configs/*.yaml", "../../*/testdata/*.bad.yaml"} {
		files, _ := filepath.Glob(pattern)
		for _, p := range files {
			if data, err := os.ReadFile(p); err == nil {
				f.Add(data)
			}
		}
	}
	f.Add([]byte("ingest:\n  max_series_per_host: 0\n"))
	f.Add([]byte("interval: -5s\n"))
	f.Add([]byte("brokers: [\"\", \"::::\"]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		check(t, agent.DefaultConfig, data)
		check(t, broker.DefaultConfig, data)
		check(t, visualization.DefaultConfig, data)
	})
}
