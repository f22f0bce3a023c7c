package visualization_test

import (
	"flag"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/monitorhq/monitor/pkg/config"
	"github.com/monitorhq/monitor/pkg/config/configtest"
	"github.com/monitorhq/monitor/visualization"
)

func TestShippedConfigIsTheDefaults(t *testing.T) {
	cfg := visualization.DefaultConfig()
	if err := config.Load("../configs/visualization.yaml", &cfg); err != nil {
		t.Fatalf("load configs/visualization.yaml: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("configs/visualization.yaml does not validate: %v", err)
	}
	if def := visualization.DefaultConfig(); !reflect.DeepEqual(cfg, def) {
		t.Fatalf("configs/visualization.yaml differs from DefaultConfig:\nfile     %+v\ndefaults %+v", cfg, def)
	}
}

func TestDefaultConfigIsValid(t *testing.T) {
	cfg := visualization.DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
}

func TestBadConfigs(t *testing.T) {
	configtest.BadFiles(t, "testdata/*.bad.yaml", func(path string) error {
		cfg := visualization.DefaultConfig()
		if err := config.Load(path, &cfg); err != nil {
			return err
		}
		return cfg.Validate()
	})
}

func TestHTTPListenMustBeLoopback(t *testing.T) {
	cases := []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:8080", true},
		{"127.1.2.3:0", true},
		{"[::1]:8080", true},
		{"localhost:8080", true},
		{"LocalHost:8080", true},
		{":8080", false},
		{"0.0.0.0:8080", false},
		{"[::]:8080", false},
		{"192.168.1.10:8080", false},
		{"example.com:8080", false},
	}
	for _, tc := range cases {
		t.Run(tc.addr, func(t *testing.T) {
			cfg := visualization.DefaultConfig()
			cfg.HTTPListen = tc.addr
			err := cfg.Validate()
			if tc.ok && err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if !tc.ok && (err == nil || !strings.Contains(err.Error(), "no authentication yet")) {
				t.Fatalf("Validate = %v, want a refusal explaining the API has no authentication yet", err)
			}
		})
	}
}

func TestNewRefusesNonLoopbackHTTP(t *testing.T) {
	cfg := visualization.DefaultConfig()
	cfg.HTTPListen = "0.0.0.0:0"
	_, err := visualization.New(cfg, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "config key http_listen") || !strings.Contains(err.Error(), "not loopback") {
		t.Fatalf("New = %v, want a refusal naming http_listen", err)
	}
}

func TestFlagsOverrideTheFile(t *testing.T) {
	fs := flag.NewFlagSet("visualization", flag.ContinueOnError)
	cfg := visualization.DefaultConfig()
	f := config.NewFlags(fs)
	cfg.BindFlags(f)
	if err := fs.Parse([]string{"-broker", "10.0.0.1:9093, 10.0.0.2:9093", "-http", "127.0.0.1:9999", "-quic", "127.0.0.1:9998"}); err != nil {
		t.Fatal(err)
	}
	if err := config.Load("../configs/visualization.yaml", &cfg); err != nil {
		t.Fatal(err)
	}
	if err := f.Apply(); err != nil {
		t.Fatalf("apply flags: %v", err)
	}
	if want := []string{"10.0.0.1:9093", "10.0.0.2:9093"}; !reflect.DeepEqual(cfg.Brokers, want) {
		t.Fatalf("brokers = %v, want %v", cfg.Brokers, want)
	}
	if cfg.HTTPListen != "127.0.0.1:9999" || cfg.QUICListen != "127.0.0.1:9998" {
		t.Fatalf("http/quic = %s/%s", cfg.HTTPListen, cfg.QUICListen)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}

	fs = flag.NewFlagSet("visualization", flag.ContinueOnError)
	f = config.NewFlags(fs)
	cfg.BindFlags(f)
	if err := fs.Parse([]string{"-broker", " , "}); err != nil {
		t.Fatal(err)
	}
	if err := f.Apply(); err == nil || !strings.Contains(err.Error(), "flag -broker") {
		t.Fatalf("apply empty -broker = %v, want an error naming the flag", err)
	}
}
