package agent

import (
	"flag"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/monitorhq/monitor/pkg/config"
	"github.com/monitorhq/monitor/pkg/config/configtest"
	"github.com/monitorhq/monitor/pkg/storage"
)

func TestShippedConfigLoads(t *testing.T) {
	cfg := DefaultConfig()
	if err := config.Load("../configs/agent.yaml", &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	// The shipped file must state the defaults, not drift from them (the
	// host id is left commented out: it defaults to the hostname).
	def := DefaultConfig()
	if !equalIgnoringLabels(cfg, def) || len(cfg.Labels) != 0 {
		t.Fatalf("configs/agent.yaml differs from DefaultConfig:\n got %+v\nwant %+v", cfg, def)
	}
	if cfg.RingSize != 1024 || cfg.DataDir != "data/agent" || cfg.HTTPListen != "" {
		t.Fatalf("seed defaults changed: ring %d data_dir %q http %q", cfg.RingSize, cfg.DataDir, cfg.HTTPListen)
	}
}

// equalIgnoringLabels compares configs whose labels are both empty (nil
// and an empty map are the same here).
func equalIgnoringLabels(a, b Config) bool {
	a.Labels, b.Labels = nil, nil
	return reflect.DeepEqual(a, b)
}

func TestBadConfigs(t *testing.T) {
	configtest.BadFiles(t, "testdata/*.bad.yaml", func(path string) error {
		cfg := DefaultConfig()
		if err := config.Load(path, &cfg); err != nil {
			return err
		}
		return cfg.Validate()
	})
}

func TestFlagsOverrideFile(t *testing.T) {
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	flags := config.NewFlags(fs)
	cfg.BindFlags(flags)
	if err := fs.Parse([]string{"-broker", "10.0.0.1:9093, 10.0.0.2:9093", "-host-id", "db-7", "-interval", "2s",
		"-data", "/var/lib/monitor/agent", "-http", "127.0.0.1:9100"}); err != nil {
		t.Fatal(err)
	}
	if err := config.Decode([]byte("interval: 30s\nring_size: 64\nhost_id: from-file\ndata_dir: x\n"), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := flags.Apply(); err != nil {
		t.Fatal(err)
	}
	if cfg.Interval.D() != 2*time.Second || cfg.HostID != "db-7" || cfg.RingSize != 64 || cfg.CollectorTimeout.D() != time.Second ||
		cfg.DataDir != "/var/lib/monitor/agent" || cfg.HTTPListen != "127.0.0.1:9100" {
		t.Fatalf("flags must win over the file and leave other keys: %+v", cfg)
	}
	if len(cfg.Brokers) != 2 || cfg.Brokers[1] != "10.0.0.2:9093" {
		t.Fatalf("brokers = %q", cfg.Brokers)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}

	bad := DefaultConfig()
	fs = flag.NewFlagSet("agent", flag.ContinueOnError)
	flags = config.NewFlags(fs)
	bad.BindFlags(flags)
	if err := fs.Parse([]string{"-interval", "soon"}); err != nil {
		t.Fatal(err)
	}
	if err := flags.Apply(); err == nil {
		t.Fatal("-interval soon was accepted")
	}
}

func TestDefaultHostIDIsValid(t *testing.T) {
	if err := storage.ValidateHostID(DefaultHostID()); err != nil {
		t.Fatalf("DefaultHostID() = %q: %v", DefaultHostID(), err)
	}
	cases := map[string]string{
		"web-01":                 "web-01",
		"web01.example.com":      "web01.example.com",
		"My Laptop (2)":          "My-Laptop--2-",
		"_build:host":            "build-host",
		"...":                    "localhost",
		"":                       "localhost",
		"h\u00f6st":              "h--st",
		string(make([]byte, 10)): "localhost",
	}
	for in, want := range cases {
		got := sanitizeHostID(in)
		if got != want {
			t.Errorf("sanitizeHostID(%q) = %q, want %q", in, got, want)
		}
		if err := storage.ValidateHostID(got); err != nil {
			t.Errorf("sanitizeHostID(%q) = %q: %v", in, got, err)
		}
	}
	if got := sanitizeHostID(strings.Repeat("a", 300)); len(got) != storage.MaxHostIDLen {
		t.Errorf("a 300-byte hostname became %d bytes", len(got))
	}
}

// TestShippedConfigDocumentsEveryKey: configs/agent.yaml names every key
// of Config, each with a comment (docs/configuration.md points to it as the
// reference).
func TestShippedConfigDocumentsEveryKey(t *testing.T) {
	configtest.DocumentedKeys(t, "../configs/agent.yaml", Config{})
}
