package visualization_test

import (
	"flag"
	"fmt"
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

func TestHTTPListenAnyAddress(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:8080", "[::1]:8080", ":8080", "0.0.0.0:8080", "192.168.1.10:8080"} {
		cfg := visualization.DefaultConfig()
		cfg.HTTPListen = addr
		if err := cfg.Validate(); err != nil {
			t.Errorf("Validate with http_listen %s: %v (every route needs a token now)", addr, err)
		}
	}
}

// TestNewRefusesWithoutSecretOrUsers: outside standalone the server does
// not start without a JWT secret of 32 bytes or more and a user.
func TestNewRefusesWithoutSecretOrUsers(t *testing.T) {
	cases := []struct {
		name string
		edit func(*visualization.Config)
		want string
	}{
		{"no secret", func(c *visualization.Config) { c.Auth.JWTSecret = "" }, "config key auth.jwt_secret: is empty"},
		{"weak secret", func(c *visualization.Config) { c.Auth.JWTSecret = "0123456789012345678901234567890" }, "has 31 bytes; at least 32"},
		{"no users", func(c *visualization.Config) { c.Auth.Users = nil }, "config key auth.users: is empty"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			tc.edit(&cfg)
			_, err := visualization.New(cfg, slog.New(slog.DiscardHandler))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want %q", err, tc.want)
			}
		})
	}
	if cfg := visualization.DefaultConfig(); cfg.Ready() == nil {
		t.Fatal("the defaults are ready to serve; they must not carry a secret or a user")
	}
}

func TestEnvOverridesSecrets(t *testing.T) {
	cfg := visualization.DefaultConfig()
	cfg.Auth.JWTSecret = "from-the-file-from-the-file-from-the-file"
	env := map[string]string{"MONITOR_JWT_SECRET": "from-the-env-from-the-env-from-the-env!", "MONITOR_CLUSTER_SECRET": "cluster"}
	cfg.FromEnv(func(k string) string { return env[k] })
	if cfg.Auth.JWTSecret != "from-the-env-from-the-env-from-the-env!" || cfg.ClusterSecret != "cluster" {
		t.Fatalf("after FromEnv: jwt %d bytes, cluster %d bytes", len(cfg.Auth.JWTSecret), len(cfg.ClusterSecret))
	}
	// Secrets never print.
	for _, s := range []string{fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg)} {
		if strings.Contains(s, "from-the-env") || strings.Contains(s, "cluster\"") {
			t.Fatalf("a secret is printed: %s", s)
		}
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

// TestShippedConfigDocumentsEveryKey: configs/visualization.yaml names
// every key of Config, each with a comment (docs/configuration.md points to
// it as the reference).
func TestShippedConfigDocumentsEveryKey(t *testing.T) {
	configtest.DocumentedKeys(t, "../configs/visualization.yaml", visualization.Config{})
}
