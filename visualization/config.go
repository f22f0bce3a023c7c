package visualization

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/monitorhq/monitor/pkg/config"
)

// Config is the visualization server's configuration, loaded from
// configs/visualization.yaml with command-line overrides. DefaultConfig holds
// every default; Validate names the bad key and the allowed range.
type Config struct {
	// HTTPListen is the HTTP address of the JSON API and the pages. Until
	// JWT auth lands the API is unauthenticated, so it must be a loopback
	// address (see Validate).
	HTTPListen string `yaml:"http_listen"`
	// QUICListen is the UDP address of the HTTP/3 + WebTransport channel.
	// Validated now; used once the QUIC channel lands.
	QUICListen string `yaml:"quic_listen"`
	// Brokers are the brokers' gRPC addresses. Calls go to one broker and
	// fail over to the next when it is unavailable or times out.
	Brokers []string `yaml:"brokers"`
	// BrokerTimeout is the deadline of every RPC to a broker.
	BrokerTimeout config.Duration `yaml:"broker_timeout"`
	// PullInterval is how often the page refreshes (the seed's 2 s pull);
	// later also the catch-up pull after a push stream reconnects.
	PullInterval config.Duration `yaml:"pull_interval"`
	// OfflineAfter: a host with no heartbeat for this long is offline.
	OfflineAfter config.Duration `yaml:"offline_after"`
	// StaleAfter: a host whose newest data is older than this is stale.
	StaleAfter config.Duration `yaml:"stale_after"`
	// TopK configures the fleet-wide rankings (used once Top-K lands).
	TopK TopKConfig `yaml:"topk"`
	// WebSocket configures the push channel (used once push lands).
	WebSocket WebSocketConfig `yaml:"websocket"`
	// MaxRange is the longest time range one query may ask for.
	MaxRange config.Duration `yaml:"max_range"`
	// MaxPoints is the most points one series of one query may return.
	MaxPoints int `yaml:"max_points"`
}

// TopKConfig is the seed's Top-K engine: K hosts per metric, entries
// expiring after TTL.
type TopKConfig struct {
	K   int             `yaml:"k"`
	TTL config.Duration `yaml:"ttl"`
}

// WebSocketConfig is the browser push channel.
type WebSocketConfig struct {
	// Heartbeat is the ping interval on an open WebSocket.
	Heartbeat config.Duration `yaml:"heartbeat"`
}

// DefaultConfig returns the defaults, the seed's numbers where it has them.
func DefaultConfig() Config {
	return Config{
		HTTPListen:    "127.0.0.1:8080",
		QUICListen:    ":8081",
		Brokers:       []string{"127.0.0.1:9093"},
		BrokerTimeout: config.Duration(5 * time.Second),
		PullInterval:  config.Duration(2 * time.Second),
		OfflineAfter:  config.Duration(30 * time.Second),
		StaleAfter:    config.Duration(15 * time.Second), // 3 × the agent's 5 s interval
		TopK:          TopKConfig{K: 10, TTL: config.Duration(time.Hour)},
		WebSocket:     WebSocketConfig{Heartbeat: config.Duration(30 * time.Second)},
		MaxRange:      config.Duration(7 * 24 * time.Hour),
		MaxPoints:     11000,
	}
}

// maxBrokers bounds the broker list; more is a typo or a misuse (the list
// is a failover order, not a fleet inventory).
const maxBrokers = 64

// Validate checks every key and names the first bad one with what is allowed.
func (c *Config) Validate() error {
	if err := config.Addr("http_listen", c.HTTPListen, false); err != nil {
		return err
	}
	if err := checkLoopback("http_listen", c.HTTPListen); err != nil {
		return err
	}
	if err := config.Addr("quic_listen", c.QUICListen, true); err != nil {
		return err
	}
	if err := config.AddrList("brokers", c.Brokers, maxBrokers); err != nil {
		return err
	}
	checks := []error{
		config.DurationIn("broker_timeout", c.BrokerTimeout, 100*time.Millisecond, 5*time.Minute),
		config.DurationIn("pull_interval", c.PullInterval, 500*time.Millisecond, 10*time.Minute),
		config.DurationIn("offline_after", c.OfflineAfter, time.Second, 24*time.Hour),
		config.DurationIn("stale_after", c.StaleAfter, time.Second, 24*time.Hour),
		config.IntIn("topk.k", c.TopK.K, 1, 1000),
		config.DurationIn("topk.ttl", c.TopK.TTL, time.Minute, 7*24*time.Hour),
		config.DurationIn("websocket.heartbeat", c.WebSocket.Heartbeat, time.Second, 10*time.Minute),
		config.DurationIn("max_range", c.MaxRange, time.Minute, 366*24*time.Hour),
		config.IntIn("max_points", c.MaxPoints, 2, 1_000_000),
	}
	for _, err := range checks {
		if err != nil {
			return err
		}
	}
	return nil
}

// checkLoopback refuses a listen address reachable from other machines. The
// HTTP API has no authentication until the JWT issue lands, so anything but
// loopback would publish the fleet's data to the network.
func checkLoopback(key, addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return config.Errorf(key, "%q is not host:port: %v", addr, err)
	}
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	shown := host
	if shown == "" {
		shown = "every interface"
	}
	return config.Errorf(key, "%q listens on %s, which is not loopback; the HTTP API has no authentication yet (JWT comes in a later release), so only 127.0.0.0/8, ::1 or localhost are allowed", addr, shown)
}

// BindFlags binds the command-line overrides of DESIGN.md §4: -broker,
// -http and -quic. -config and -check-config belong to main.
func (c *Config) BindFlags(f *config.Flags) {
	f.String("broker", "broker gRPC addresses, comma-separated (overrides brokers)", func(v string) error {
		list := config.SplitList(v)
		if len(list) == 0 {
			return fmt.Errorf("no address in %q", v)
		}
		c.Brokers = list
		return nil
	})
	f.String("http", "HTTP listen address (overrides http_listen)", func(v string) error {
		c.HTTPListen = v
		return nil
	})
	f.String("quic", "QUIC listen address (overrides quic_listen)", func(v string) error {
		c.QUICListen = v
		return nil
	})
}
