package broker

import (
	"reflect"
	"testing"

	"github.com/monitorhq/monitor/pkg/config"
	"github.com/monitorhq/monitor/pkg/config/configtest"
)

func TestShippedConfigLoads(t *testing.T) {
	cfg := DefaultConfig()
	if err := config.Load("../configs/broker.yaml", &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	// The shipped file must state the defaults, not drift from them.
	def := DefaultConfig()
	// "key: []" decodes to an empty slice; the default is nil.
	if len(cfg.Raft.Join) == 0 {
		cfg.Raft.Join = nil
	}
	if len(cfg.Storage.Redis.Shards) == 0 {
		cfg.Storage.Redis.Shards = nil
	}
	if !reflect.DeepEqual(cfg, def) {
		t.Fatalf("configs/broker.yaml differs from DefaultConfig:\n%+v\n%+v", cfg, def)
	}
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
	fs := newFlagSet()
	flags := config.NewFlags(fs)
	cfg.BindFlags(flags)
	if err := fs.Parse([]string{"-grpc", "127.0.0.1:7000", "-storage", "redis://u:p@127.0.0.1:6390/2,redis://127.0.0.1:6391"}); err != nil {
		t.Fatal(err)
	}
	if err := config.Decode([]byte("grpc_listen: \":9999\"\nnode_id: b7\n"), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := flags.Apply(); err != nil {
		t.Fatal(err)
	}
	if cfg.GRPCListen != "127.0.0.1:7000" || cfg.NodeID != "b7" {
		t.Fatalf("flag must win over the file and leave other keys: %+v", cfg)
	}
	if cfg.Storage.Backend != "redis" || len(cfg.Storage.Redis.Shards) != 2 || cfg.Storage.Redis.Shards[0].DB != 2 || cfg.Storage.Redis.Shards[0].Username != "u" {
		t.Fatalf("storage spec not applied: %+v", cfg.Storage)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestShippedConfigDocumentsEveryKey: configs/broker.yaml names every key
// of Config, each with a comment (docs/configuration.md points to it as the
// reference).
func TestShippedConfigDocumentsEveryKey(t *testing.T) {
	configtest.DocumentedKeys(t, "../configs/broker.yaml", Config{})
}
