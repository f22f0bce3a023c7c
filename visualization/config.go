package visualization

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path"
	"strings"
	"time"

	"github.com/monitorhq/monitor/pkg/config"
	pq "github.com/monitorhq/monitor/pkg/quic"
	"github.com/monitorhq/monitor/pkg/tlsconfig"
	"github.com/monitorhq/monitor/visualization/internal/auth"
)

// Config is the visualization server's configuration, loaded from
// configs/visualization.yaml with command-line overrides. DefaultConfig holds
// every default; Validate names the bad key and the allowed range.
type Config struct {
	// HTTPListen is the HTTP address of the JSON API, the WebSocket and
	// the pages. The default is loopback; any address is allowed (every
	// API route needs a token), and Run warns when it is not loopback and
	// TLS is off: passwords and tokens would cross the network in clear.
	HTTPListen string `yaml:"http_listen"`
	// TLS serves http_listen as HTTPS (and wss:); client_auth require
	// makes it mTLS. Without quic.cert_file the QUIC channel uses the same
	// certificate.
	TLS tlsconfig.Config `yaml:"tls"`
	// HSTSMaxAge is the max-age of the Strict-Transport-Security header
	// sent with every HTTPS response; 0 sends none.
	HSTSMaxAge config.Duration `yaml:"hsts_max_age"`
	// TrustedProxies are the reverse proxies (IPs or CIDR prefixes) whose
	// X-Forwarded-For is believed: the login limits key on the client it
	// names, and their connections do not count against
	// max_connections_per_ip. Empty: the header is ignored.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// MaxConnections caps the open HTTP connections (WebSockets
	// included); more are closed at once.
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionsPerIP caps the open HTTP connections of one client
	// address (trusted proxies excepted); 0: no per-address cap.
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip"`
	// MetricsListen is the HTTP address of /metrics (Prometheus text),
	// /healthz (liveness) and /readyz (metrics.go), apart from the API
	// port: scrapers carry no JWT, so these routes are open and belong on
	// an address only the monitoring network reaches. Empty: not served.
	MetricsListen string `yaml:"metrics_listen"`
	// QUICListen is the UDP address of the QUIC channel: HTTP/3 +
	// WebTransport for browsers and the native protocol for monitorctl
	// watch, on one socket. Empty disables it.
	QUICListen string `yaml:"quic_listen"`
	// QUIC configures the channel's certificate.
	QUIC QUICConfig `yaml:"quic"`
	// BrokerTLS makes every connection to the brokers TLS (calls, the
	// live streams, membership); a cert_file/key_file in it answers
	// brokers that require mTLS.
	BrokerTLS tlsconfig.Config `yaml:"broker_tls"`
	// Brokers are the brokers' gRPC addresses: the seeds from which the
	// server learns the cluster's members (pkg/membership). Calls go to one
	// broker and fail over to the next when it is unavailable or times out;
	// every broker's Subscribe stream is followed.
	Brokers []string `yaml:"brokers"`
	// BrokerTimeout is the deadline of every RPC to a broker.
	BrokerTimeout config.Duration `yaml:"broker_timeout"`
	// PullInterval is how often the status page refreshes (the seed's 2 s
	// pull). Live data no longer waits for it: brokers push every stored
	// batch, and a reconnected stream catches up with one incremental pull.
	PullInterval config.Duration `yaml:"pull_interval"`
	// OfflineAfter: a host with no heartbeat for this long is offline.
	OfflineAfter config.Duration `yaml:"offline_after"`
	// StaleAfter: a host whose newest data is older than this is stale.
	StaleAfter config.Duration `yaml:"stale_after"`
	// TopK configures the fleet-wide rankings (used once Top-K lands).
	TopK TopKConfig `yaml:"topk"`
	// WebSocket configures the push channel at /api/v1/ws.
	WebSocket WebSocketConfig `yaml:"websocket"`
	// Auth configures login and tokens.
	Auth AuthConfig `yaml:"auth"`
	// ClusterSecret is the brokers' shared cluster secret, sent with every
	// call to them (brokers with auth on require it of this server) over
	// broker_tls, or in clear text to loopback brokers only;
	// MONITOR_CLUSTER_SECRET overrides it. Empty: calls go without it.
	ClusterSecret Secret `yaml:"cluster_secret"`
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
	// ShmName is the POSIX shared-memory segment the current top K of
	// every metric is exported to ("/name"; `monitorctl top` reads it).
	// Empty: no export.
	ShmName string `yaml:"shm_name"`
}

// WebSocketConfig is the browser push channel.
type WebSocketConfig struct {
	// Heartbeat is the ping interval on an open WebSocket; a pong or a
	// write that takes longer closes the connection.
	Heartbeat config.Duration `yaml:"heartbeat"`
	// AllowedOrigins are the origins, besides the server's own, whose
	// pages may open the WebSocket: host patterns ("dash.example.com",
	// "*.example.com") or with a scheme ("https://dash.example.com").
	AllowedOrigins []string `yaml:"allowed_origins"`
	// QueueSize is each client's queue in messages; a client further behind
	// gets the latest value per series and a gap marker instead.
	QueueSize int `yaml:"queue_size"`
	// ReadLimit is the largest message a client may send, in bytes.
	ReadLimit int `yaml:"read_limit"`
	// MaxClients caps the open WebSockets.
	MaxClients int `yaml:"max_clients"`
}

// QUICConfig is the QUIC channel's TLS certificate: a configured one
// (CertFile and KeyFile), or self-signed ECDSA P-256 certificates made at
// start and rotated before expiry, which clients pin by hash (GET
// /api/v1/quic). Origins allowed to open WebTransport are
// websocket.allowed_origins.
type QUICConfig struct {
	// CertFile and KeyFile are a PEM certificate chain and its key; both
	// or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// CertValidity is each self-signed certificate's lifetime: under 14
	// days, because Chromium refuses longer ones with
	// serverCertificateHashes.
	CertValidity config.Duration `yaml:"cert_validity"`
	// CertRotateBefore: with this much validity left the next certificate
	// is made and its hash announced; at half of it the server switches.
	CertRotateBefore config.Duration `yaml:"cert_rotate_before"`
	// CertHosts are extra DNS names and IPs of the self-signed
	// certificate (localhost, the loopback addresses and the host name are
	// always in it); only clients that do not pin check them.
	CertHosts []string `yaml:"cert_hosts"`
}

// AuthConfig is login and tokens: HS256 JWTs signed with JWTSecret.
type AuthConfig struct {
	// JWTSecret signs the tokens: at least 32 bytes; MONITOR_JWT_SECRET
	// overrides it. Required to start (standalone makes a random one).
	JWTSecret Secret `yaml:"jwt_secret"`
	// Issuer and Audience are the iss and aud of issued tokens, required
	// on every token presented.
	Issuer   string `yaml:"issuer"`
	Audience string `yaml:"audience"`
	// AccessTTL is the lifetime of an access token.
	AccessTTL config.Duration `yaml:"access_ttl"`
	// RefreshTTL is the lifetime of a refresh token (each works once).
	RefreshTTL config.Duration `yaml:"refresh_ttl"`
	// LoginBurst attempts of login or refresh are allowed at once per
	// client address, then one per LoginInterval; and as many failed
	// logins per user name, from any address.
	LoginBurst    int             `yaml:"login_burst"`
	LoginInterval config.Duration `yaml:"login_interval"`
	// Users are the accounts. Required to start.
	Users []UserConfig `yaml:"users"`
}

// UserConfig is one account.
type UserConfig struct {
	Username string `yaml:"username"`
	// PasswordHash is a bcrypt hash ($2a$, $2b$ or $2y$).
	PasswordHash string `yaml:"password_hash"`
	// Role is viewer (reads) or admin (reads and changes).
	Role string `yaml:"role"`
}

// Secret is a configured secret: it prints as "[redacted]", so a Config
// can be logged or shown in a test failure without leaking it.
type Secret string

// String hides the value.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// LogValue hides the value from slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// GoString hides the value from %#v.
func (s Secret) GoString() string { return `"` + s.String() + `"` }

// DefaultConfig returns the defaults, the seed's numbers where it has them.
func DefaultConfig() Config {
	return Config{
		HTTPListen:          "127.0.0.1:8080",
		TLS:                 tlsconfig.Config{ClientAuth: tlsconfig.ClientAuthNone},
		HSTSMaxAge:          config.Duration(365 * 24 * time.Hour),
		TrustedProxies:      []string{},
		MaxConnections:      20000,
		MaxConnectionsPerIP: 512,
		QUICListen:          ":8081",
		QUIC: QUICConfig{
			CertValidity:     config.Duration(240 * time.Hour),
			CertRotateBefore: config.Duration(48 * time.Hour),
			CertHosts:        []string{},
		},
		Brokers:       []string{"127.0.0.1:9093"},
		BrokerTimeout: config.Duration(5 * time.Second),
		PullInterval:  config.Duration(2 * time.Second),
		OfflineAfter:  config.Duration(30 * time.Second),
		StaleAfter:    config.Duration(15 * time.Second), // 3 × the agent's 5 s interval
		TopK:          TopKConfig{K: 10, TTL: config.Duration(time.Hour), ShmName: "/monitor-topk"},
		WebSocket: WebSocketConfig{
			Heartbeat:      config.Duration(30 * time.Second),
			AllowedOrigins: []string{},
			QueueSize:      256,
			ReadLimit:      16 << 10,
			MaxClients:     10000,
		},
		Auth: AuthConfig{
			Issuer:        "monitor",
			Audience:      "monitor-api",
			AccessTTL:     config.Duration(15 * time.Minute),
			RefreshTTL:    config.Duration(12 * time.Hour),
			LoginBurst:    5,
			LoginInterval: config.Duration(12 * time.Second),
			Users:         []UserConfig{},
		},
		MaxRange:  config.Duration(7 * 24 * time.Hour),
		MaxPoints: 11000,
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
	if err := config.Addr("quic_listen", c.QUICListen, true); err != nil {
		return err
	}
	if err := config.Addr("metrics_listen", c.MetricsListen, true); err != nil {
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
		shmName("topk.shm_name", c.TopK.ShmName),
		config.DurationIn("websocket.heartbeat", c.WebSocket.Heartbeat, time.Second, 10*time.Minute),
		config.DurationIn("max_range", c.MaxRange, time.Minute, 366*24*time.Hour),
		config.IntIn("max_points", c.MaxPoints, 2, 1_000_000),
		config.IntIn("websocket.queue_size", c.WebSocket.QueueSize, 8, 100_000),
		config.IntIn("websocket.read_limit", c.WebSocket.ReadLimit, 512, 1<<20),
		config.IntIn("websocket.max_clients", c.WebSocket.MaxClients, 1, 1_000_000),
		config.DurationIn("auth.access_ttl", c.Auth.AccessTTL, time.Minute, 24*time.Hour),
		config.DurationIn("auth.refresh_ttl", c.Auth.RefreshTTL, c.Auth.AccessTTL.D(), 30*24*time.Hour),
		config.IntIn("auth.login_burst", c.Auth.LoginBurst, 1, 1000),
		config.DurationIn("auth.login_interval", c.Auth.LoginInterval, 100*time.Millisecond, time.Hour),
		config.DurationIn("hsts_max_age", c.HSTSMaxAge, 0, 2*365*24*time.Hour),
		config.IntIn("max_connections", c.MaxConnections, 16, 10_000_000),
		config.IntIn("max_connections_per_ip", c.MaxConnectionsPerIP, 0, c.MaxConnections),
		c.TLS.ValidateServer("tls"),
		c.BrokerTLS.Validate("broker_tls"),
	}
	for _, err := range checks {
		if err != nil {
			return err
		}
	}
	if err := c.QUIC.validate(); err != nil {
		return err
	}
	if c.BrokerTLS.ClientAuth != "" && c.BrokerTLS.ClientAuth != tlsconfig.ClientAuthNone {
		return config.Errorf("broker_tls.client_auth", "%q: client_auth is for servers; this block is the client side (set cert_file and key_file for mTLS)", c.BrokerTLS.ClientAuth)
	}
	if c.TLS.InsecureSkipVerify || c.TLS.ServerName != "" {
		return config.Errorf("tls", "insecure_skip_verify and server_name are client settings; the https listener uses cert_file, key_file, ca_file and client_auth")
	}
	if _, err := c.trustedProxies(); err != nil {
		return err
	}
	for i, o := range c.WebSocket.AllowedOrigins {
		key := fmt.Sprintf("websocket.allowed_origins[%d]", i)
		if o == "" || o == "*" {
			return config.Errorf(key, "%q: name the origins (dash.example.com, *.example.com, https://dash.example.com); allowing every origin would let any web page use a visitor's token", o)
		}
		if _, err := path.Match(o, ""); err != nil {
			return config.Errorf(key, "%q is not a valid pattern: %v", o, err)
		}
	}
	if n := len(c.Auth.JWTSecret); n > 0 && n < auth.MinSecretBytes {
		return config.Errorf("auth.jwt_secret", "has %d bytes; at least %d are needed (e.g. `openssl rand -base64 48`)", n, auth.MinSecretBytes)
	}
	if strings.TrimSpace(c.Auth.Issuer) == "" {
		return config.Errorf("auth.issuer", "is empty; it names this server in every token")
	}
	if strings.TrimSpace(c.Auth.Audience) == "" {
		return config.Errorf("auth.audience", "is empty; it names who the tokens are for")
	}
	seen := map[string]bool{}
	for i, u := range c.Auth.Users {
		key := fmt.Sprintf("auth.users[%d]", i)
		if err := auth.CheckUser(auth.User{Username: u.Username, PasswordHash: u.PasswordHash, Role: auth.Role(u.Role)}); err != nil {
			return config.Errorf(key, "%v", err)
		}
		if seen[u.Username] {
			return config.Errorf(key, "user %q is listed twice", u.Username)
		}
		seen[u.Username] = true
	}
	if strings.TrimSpace(string(c.ClusterSecret)) != string(c.ClusterSecret) {
		return config.Errorf("cluster_secret", "has leading or trailing white space")
	}
	if c.ClusterSecret != "" && !c.BrokerTLS.Enabled {
		for _, b := range c.Brokers {
			if !isLoopback(dialAddr(b)) {
				return config.Errorf("broker_tls", "is off, but cluster_secret is set and broker %s is not on this machine: the secret would cross the network in clear text; turn broker_tls on (or leave cluster_secret empty if the brokers do not ask for it)", b)
			}
		}
	}
	return nil
}

// Ready checks what a server needs to start beyond Validate: a JWT secret
// and at least one user. The shipped defaults have neither on purpose (a
// known secret or password would be a hole); standalone makes both.
func (c *Config) Ready() error {
	if c.Auth.JWTSecret == "" {
		return config.Errorf("auth.jwt_secret", "is empty; set it or MONITOR_JWT_SECRET to at least %d random bytes (e.g. `openssl rand -base64 48`)", auth.MinSecretBytes)
	}
	if len(c.Auth.Users) == 0 {
		return config.Errorf("auth.users", "is empty; add a user {username, password_hash (bcrypt), role: viewer|admin}")
	}
	return nil
}

// FromEnv applies the environment: MONITOR_JWT_SECRET and
// MONITOR_CLUSTER_SECRET override the file (secrets are better kept out of
// it). Flags are applied after, but none sets a secret.
func (c *Config) FromEnv(getenv func(string) string) {
	if v := getenv("MONITOR_JWT_SECRET"); v != "" {
		c.Auth.JWTSecret = Secret(v)
	}
	if v := getenv("MONITOR_CLUSTER_SECRET"); v != "" {
		c.ClusterSecret = Secret(v)
	}
}

// trustedProxies parses trusted_proxies: IPs or CIDR prefixes.
func (c *Config) trustedProxies() ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(c.TrustedProxies))
	for i, v := range c.TrustedProxies {
		key := fmt.Sprintf("trusted_proxies[%d]", i)
		if p, err := netip.ParsePrefix(v); err == nil {
			out = append(out, p.Masked())
			continue
		}
		ip, err := netip.ParseAddr(v)
		if err != nil {
			return nil, config.Errorf(key, "%q is not an IP address or a CIDR prefix (10.0.0.5, 10.0.0.0/8, fd00::/8)", v)
		}
		ip = ip.Unmap()
		out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
	}
	return out, nil
}

// dialAddr is the address to dial for a broker address: one with an
// unspecified host (":9093", "0.0.0.0:9093", "[::]:9093" — what a broker
// listening on every interface reports, as standalone's does) is this
// machine, dialed at loopback; any other address is dialed as it is.
func dialAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" {
		return net.JoinHostPort("127.0.0.1", port)
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		if ip.Is4() {
			return net.JoinHostPort("127.0.0.1", port)
		}
		return net.JoinHostPort("::1", port)
	}
	return addr
}

// isLoopback reports whether a listen address is reachable only from this
// machine.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
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

// shmName checks an optional POSIX shared-memory name ("/name").
func shmName(key, v string) error {
	if v == "" {
		return nil
	}
	if len(v) < 2 || v[0] != '/' || strings.ContainsRune(v[1:], '/') || len(v) > 255 {
		return config.Errorf(key, "%q is not a shared-memory name: want \"/name\" with no other slash (or empty to turn the export off)", v)
	}
	return nil
}

// validate checks the quic keys.
func (q *QUICConfig) validate() error {
	if (q.CertFile == "") != (q.KeyFile == "") {
		return config.Errorf("quic.cert_file", "and quic.key_file go together: set both (a configured certificate) or neither (self-signed)")
	}
	if err := config.DurationIn("quic.cert_validity", q.CertValidity, time.Hour, pq.MaxSelfSignedValidity); err != nil {
		return fmt.Errorf("%w (Chromium refuses certificates pinned by hash that are valid for more than 14 days)", err)
	}
	if err := config.DurationIn("quic.cert_rotate_before", q.CertRotateBefore, time.Minute, q.CertValidity.D()/2); err != nil {
		return fmt.Errorf("%w (at most half of quic.cert_validity)", err)
	}
	for i, h := range q.CertHosts {
		if h == "" || strings.ContainsAny(h, " /:*") && net.ParseIP(h) == nil {
			return config.Errorf(fmt.Sprintf("quic.cert_hosts[%d]", i), "%q is not a DNS name or an IP address", h)
		}
	}
	return nil
}
