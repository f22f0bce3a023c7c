package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/monitorhq/monitor/pkg/config"
	"github.com/monitorhq/monitor/pkg/grpcauth"
	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/pkg/tlsconfig"
)

// Config is the agent's configuration; configs/agent.yaml documents every
// key. DefaultConfig holds the defaults.
type Config struct {
	HostID           string            `yaml:"host_id"`
	Brokers          []string          `yaml:"brokers"`
	FollowMembership bool              `yaml:"follow_membership"`
	Interval         config.Duration   `yaml:"interval"`
	Labels           map[string]string `yaml:"labels"`
	Collectors       CollectorsConfig  `yaml:"collectors"`
	CollectorTimeout config.Duration   `yaml:"collector_timeout"`
	TopProcesses     int               `yaml:"top_processes"`
	RateWindow       config.Duration   `yaml:"rate_window"`
	ProcPath         string            `yaml:"proc_path"`
	SysPath          string            `yaml:"sys_path"`

	RingSize      int    `yaml:"ring_size"`
	RingMaxBytes  int    `yaml:"ring_max_bytes"`
	DataDir       string `yaml:"data_dir"`
	SpoolMaxBytes int    `yaml:"spool_max_bytes"`
	HTTPListen    string `yaml:"http_listen"`
	GoMaxProcs    int    `yaml:"gomaxprocs"`

	BatchMaxSnapshots   int             `yaml:"batch_max_snapshots"`
	MaxInflightBatches  int             `yaml:"max_inflight_batches"`
	HeartbeatInterval   config.Duration `yaml:"heartbeat_interval"`
	ReconnectMinBackoff config.Duration `yaml:"reconnect_min_backoff"`
	ReconnectMaxBackoff config.Duration `yaml:"reconnect_max_backoff"`
	ShutdownTimeout     config.Duration `yaml:"shutdown_timeout"`

	// TLS is how the agent reaches the brokers (docs/configuration.md
	// "TLS blocks"); with cert_file it presents a client certificate.
	TLS tlsconfig.Config `yaml:"tls"`
	// Token (or the file holding it, or env MONITOR_AGENT_TOKEN) proves the
	// host id to brokers that require it (monitorctl agent-token). It is
	// sent only over TLS, unless InsecureLoopbackToken allows clear text to
	// loopback brokers.
	Token                 string `yaml:"token"`
	TokenFile             string `yaml:"token_file"`
	InsecureLoopbackToken bool   `yaml:"insecure_loopback_token"`
}

// CollectorsConfig switches the collectors on and off (docs/metrics.md
// lists what each one sends).
type CollectorsConfig struct {
	CPU        bool `yaml:"cpu"`
	Memory     bool `yaml:"memory"`
	Filesystem bool `yaml:"filesystem"`
	Disk       bool `yaml:"disk"`
	Network    bool `yaml:"network"`
	TCP        bool `yaml:"tcp"`
	TCPStates  bool `yaml:"tcp_states"`
	Processes  bool `yaml:"processes"`
	System     bool `yaml:"system"`
	Sensors    bool `yaml:"sensors"`
}

func (c CollectorsConfig) any() bool {
	return c.CPU || c.Memory || c.Filesystem || c.Disk || c.Network || c.TCP || c.TCPStates || c.Processes || c.System || c.Sensors
}

// DefaultConfig returns the defaults: the host's sanitized hostname as id,
// one broker on localhost whose cluster's member list is followed, the
// seed's 5 s interval and 1024-slot ring, every collector on but
// tcp_states (costly, see docs/metrics.md), the spool in data/agent.
func DefaultConfig() Config {
	return Config{
		HostID:           DefaultHostID(),
		Brokers:          []string{"127.0.0.1:9093"},
		FollowMembership: true,
		Interval:         config.Duration(5 * time.Second),
		Collectors: CollectorsConfig{CPU: true, Memory: true, Filesystem: true, Disk: true, Network: true,
			TCP: true, Processes: true, System: true, Sensors: true},
		CollectorTimeout:    config.Duration(2 * time.Second),
		TopProcesses:        5,
		ProcPath:            "/proc",
		SysPath:             "/sys",
		RingSize:            1024,
		RingMaxBytes:        4 << 20,
		DataDir:             filepath.Join("data", "agent"),
		SpoolMaxBytes:       256 << 20,
		GoMaxProcs:          1,
		BatchMaxSnapshots:   64,
		MaxInflightBatches:  8,
		HeartbeatInterval:   config.Duration(10 * time.Second),
		ReconnectMinBackoff: config.Duration(500 * time.Millisecond),
		ReconnectMaxBackoff: config.Duration(30 * time.Second),
		ShutdownTimeout:     config.Duration(10 * time.Second),
	}
}

// DefaultHostID returns the hostname reduced to what storage.ValidateHostID
// accepts: characters outside [A-Za-z0-9._-] become '-', leading
// punctuation is dropped, the result is cut to storage.MaxHostIDLen. It
// returns "localhost" when nothing usable is left.
func DefaultHostID() string {
	name, err := os.Hostname()
	if err != nil {
		return "localhost"
	}
	return sanitizeHostID(name)
}

func sanitizeHostID(name string) string {
	b := []byte(name)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '-'
		}
	}
	id := strings.TrimLeft(string(b), "._-")
	if len(id) > storage.MaxHostIDLen {
		id = id[:storage.MaxHostIDLen]
	}
	if id == "" {
		return "localhost"
	}
	return id
}

// Validate checks every key and names the first bad one.
func (c *Config) Validate() error {
	if err := storage.ValidateHostID(c.HostID); err != nil {
		return config.Errorf("host_id", "%v", err)
	}
	if err := config.AddrList("brokers", c.Brokers, 64); err != nil {
		return err
	}
	checks := []error{
		config.DurationIn("interval", c.Interval, time.Second, time.Hour),
		config.DurationIn("collector_timeout", c.CollectorTimeout, 10*time.Millisecond, time.Hour),
		config.IntIn("top_processes", c.TopProcesses, 0, 100),
		config.DurationIn("rate_window", c.RateWindow, 0, time.Hour),
		config.IntIn("ring_size", c.RingSize, 16, 1<<20),
		config.IntIn("ring_max_bytes", c.RingMaxBytes, 64<<10, 1<<30),
		config.IntIn("spool_max_bytes", c.SpoolMaxBytes, 1<<20, 1<<40),
		config.Addr("http_listen", c.HTTPListen, true),
		config.IntIn("gomaxprocs", c.GoMaxProcs, 0, 1024),
		config.IntIn("batch_max_snapshots", c.BatchMaxSnapshots, 1, 1000),
		config.IntIn("max_inflight_batches", c.MaxInflightBatches, 1, 1024),
		config.DurationIn("heartbeat_interval", c.HeartbeatInterval, time.Second, time.Hour),
		config.DurationIn("reconnect_min_backoff", c.ReconnectMinBackoff, 10*time.Millisecond, time.Minute),
		config.DurationIn("reconnect_max_backoff", c.ReconnectMaxBackoff, 10*time.Millisecond, time.Hour),
		config.DurationIn("shutdown_timeout", c.ShutdownTimeout, 0, 10*time.Minute),
	}
	for _, err := range checks {
		if err != nil {
			return err
		}
	}
	if c.RingSize&(c.RingSize-1) != 0 {
		return config.Errorf("ring_size", "%d is not a power of two (16, 32, … 1048576)", c.RingSize)
	}
	if c.ProcPath == "" || c.SysPath == "" {
		return config.Errorf("proc_path", "proc_path and sys_path must name where /proc and /sys are mounted")
	}
	if c.CollectorTimeout >= c.Interval {
		return config.Errorf("collector_timeout", "%s is not shorter than interval %s; a round must end before the next starts", c.CollectorTimeout, c.Interval)
	}
	if c.ReconnectMaxBackoff < c.ReconnectMinBackoff {
		return config.Errorf("reconnect_max_backoff", "%s is shorter than reconnect_min_backoff %s", c.ReconnectMaxBackoff, c.ReconnectMinBackoff)
	}
	for k, v := range c.Labels {
		if err := storage.ValidateLabelName(k); err != nil {
			return config.Errorf("labels", "%v", err)
		}
		if err := storage.ValidateTagValue(v); err != nil {
			return config.Errorf("labels."+k, "%v", err)
		}
	}
	if !c.Collectors.any() {
		return config.Errorf("collectors", "every collector is off; turn at least one on")
	}
	return c.validateAuth()
}

// validateAuth checks tls, token and token_file.
func (c *Config) validateAuth() error {
	if err := c.TLS.Validate("tls"); err != nil {
		return err
	}
	if c.TLS.ClientAuth != "" && c.TLS.ClientAuth != tlsconfig.ClientAuthNone {
		return config.Errorf("tls.client_auth", "is a server key; the agent only dials (leave it empty)")
	}
	if c.Token != "" && c.TokenFile != "" {
		return config.Errorf("token_file", "is set together with token; use one")
	}
	tok, err := c.token()
	if err != nil {
		return config.Errorf("token_file", "%v", err)
	}
	if tok == "" {
		if c.InsecureLoopbackToken {
			return config.Errorf("insecure_loopback_token", "is set but there is no token (token, token_file or MONITOR_AGENT_TOKEN)")
		}
		return nil
	}
	key := "token"
	if c.TokenFile != "" {
		key = "token_file"
	}
	host, err := grpcauth.TokenHost(tok)
	if err != nil {
		return config.Errorf(key, "is not an agent token (want v1.<host>.<signature>, from monitorctl agent-token)")
	}
	if host != c.HostID {
		return config.Errorf(key, "is the token of host %q but host_id is %q; brokers would refuse every write", host, c.HostID)
	}
	if !c.TLS.Enabled {
		if !c.InsecureLoopbackToken {
			return config.Errorf("tls.enabled", "is false but a token is set; a token is sent only over TLS (or set insecure_loopback_token for brokers on this machine)")
		}
		for i, b := range c.Brokers {
			if !grpcauth.IsLoopback(b) {
				return config.Errorf(fmt.Sprintf("brokers[%d]", i), "%q is not a loopback address but tls is off; insecure_loopback_token sends the token in clear text only to this machine", b)
			}
		}
	}
	return nil
}

// token returns the agent token from token, token_file or
// MONITOR_AGENT_TOKEN, in that order ("" when none).
func (c *Config) token() (string, error) {
	switch {
	case c.Token != "":
		return strings.TrimSpace(c.Token), nil
	case c.TokenFile != "":
		b, err := os.ReadFile(c.TokenFile)
		if err != nil {
			return "", fmt.Errorf("read the agent token: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return strings.TrimSpace(os.Getenv("MONITOR_AGENT_TOKEN")), nil
}

// dialOptions are the uplink's and the membership watcher's credentials.
func (c *Config) dialOptions() ([]grpc.DialOption, error) {
	tok, err := c.token()
	if err != nil {
		return nil, err
	}
	return grpcauth.Client{TLS: c.TLS, Token: tok, AllowInsecureLoopback: c.InsecureLoopbackToken}.DialOptions()
}

// BindFlags binds the command-line flags of DESIGN.md §4: -broker, -host-id
// and -interval, plus -data (data_dir) and -http (http_listen), named as the
// broker's (-config, -once and -check-config belong to main).
func (c *Config) BindFlags(f *config.Flags) {
	f.String("broker", "broker gRPC address(es), comma-separated host:port", func(v string) error {
		c.Brokers = config.SplitList(v)
		return nil
	})
	f.String("host-id", "this host's id (default: the hostname)", func(v string) error { c.HostID = v; return nil })
	f.String("interval", "collection interval, e.g. 5s (collector_timeout is lowered to half of it if not shorter)", c.SetInterval)
	f.String("data", "directory of the spool of unacknowledged snapshots (data_dir; empty: memory only)", func(v string) error { c.DataDir = v; return nil })
	f.String("http", "address of the /metrics and /healthz listener, e.g. :9100 (http_listen; empty: off)", func(v string) error { c.HTTPListen = v; return nil })
}

// SetInterval sets the collection interval from a duration string such as
// "5s". -interval 1s must work on its own, so collector_timeout is lowered to
// half the interval when it would not be shorter.
func (c *Config) SetInterval(v string) error {
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("%q is not a duration such as \"5s\"", v)
	}
	c.Interval = config.Duration(d)
	if c.RingSize&(c.RingSize-1) != 0 {
		return config.Errorf("ring_size", "%d is not a power of two (16, 32, … 1048576)", c.RingSize)
	}
	if c.ProcPath == "" || c.SysPath == "" {
		return config.Errorf("proc_path", "proc_path and sys_path must name where /proc and /sys are mounted")
	}
	if c.CollectorTimeout >= c.Interval {
		c.CollectorTimeout = c.Interval / 2
	}
	return nil
}
