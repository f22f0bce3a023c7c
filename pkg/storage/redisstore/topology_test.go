package redisstore

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/monitorhq/monitor/internal/redistest"
	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/pkg/storage/storagetest"
)

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		ok, err := cond()
		if ok {
			return
		}
		lastErr = err
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v (last error: %v)", what, timeout, lastErr)
}

// commandCalls reads INFO commandstats: calls per command name.
func commandCalls(t testing.TB, c *redis.Client) map[string]int {
	t.Helper()
	info, err := c.Info(ctxT(t), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		line := sc.Text() // cmdstat_hgetall:calls=12,usec=...
		name, rest, ok := strings.Cut(strings.TrimPrefix(line, "cmdstat_"), ":calls=")
		if !ok || !strings.HasPrefix(line, "cmdstat_") {
			continue
		}
		n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
		out[name] = n
	}
	return out
}

// TestReplicaReads starts a primary and a replica (--replicaof): history
// reads are served by the replica and are correct once replication has
// caught up; Latest and Hosts stay on the primary; a replica that goes
// down moves its reads to the primary.
func TestReplicaReads(t *testing.T) {
	// No delay before the initial (diskless) sync.
	primary := redistest.Start(t, "--repl-diskless-sync-delay", "0")
	host, port, _ := net.SplitHostPort(primary.Addr)
	replica := redistest.Start(t, "--replicaof", host, port)
	pc, rc := rawClient(t, primary.Addr), rawClient(t, replica.Addr)
	ctx := ctxT(t)
	waitFor(t, "replica in sync", 10*time.Second, func() (bool, error) {
		info, err := rc.Info(ctx, "replication").Result()
		return strings.Contains(info, "master_link_status:up"), err
	})

	s := openStore(t, Config{Shards: []ShardConfig{{Addr: primary.Addr, Replicas: []string{replica.Addr}}}, ReadFromReplicas: true})
	defer s.Close()
	b := time.Now().Unix() - 300
	var batch []storage.Snapshot
	for i := int64(0); i < 60; i++ {
		batch = append(batch, storage.Snapshot{HostID: "rep", Timestamp: b + i, Samples: []storage.Sample{{Series: "v", Value: float64(i)}}})
	}
	if err := s.WriteSnapshots(ctx, batch); err != nil {
		t.Fatal(err)
	}
	// Poll through the store until the replica has everything.
	waitFor(t, "range from the replica complete", 10*time.Second, func() (bool, error) {
		got, err := s.Range(ctx, storage.RangeQuery{HostID: "rep", From: 0, To: 1 << 62})
		return len(got) == 60, err
	})
	waitFor(t, "rollups on the replica complete", 10*time.Second, func() (bool, error) {
		got, err := s.RangeRollup(ctx, storage.RollupQuery{HostID: "rep", Resolution: storage.Hour, From: 0, To: 1 << 62})
		var n int64
		for _, r := range got {
			for _, p := range r.Points {
				n += p.Count
			}
		}
		return n == 60, err
	})

	if err := pc.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	got, err := s.Range(ctx, storage.RangeQuery{HostID: "rep", From: 0, To: 1 << 62})
	if err != nil || len(got) != 60 || got[59].Samples[0].Value != 59 {
		t.Fatalf("Range from the replica: %d snapshots, %v", len(got), err)
	}
	if _, err := s.RangeRollup(ctx, storage.RollupQuery{HostID: "rep", Resolution: storage.Minute, From: 0, To: 1 << 62}); err != nil {
		t.Fatal(err)
	}
	if pcalls, rcalls := commandCalls(t, pc), commandCalls(t, rc); pcalls["hgetall"]+pcalls["get"]+pcalls["zrangebyscore"] != 0 ||
		rcalls["hgetall"] != 60 || rcalls["get"] == 0 || rcalls["zrangebyscore"] != 4 {
		// 4: the range reads the seed index and the compact layout's two
		// window indexes (compact.go), the rollup read its index.
		t.Fatalf("history reads: primary %v, replica %v; want all on the replica", pcalls, rcalls)
	}
	// Fresh reads stay on the primary.
	if _, ok, err := s.Latest(ctx, "rep"); err != nil || !ok {
		t.Fatalf("Latest: %v, %v", ok, err)
	}
	if _, err := s.Hosts(ctx); err != nil {
		t.Fatal(err)
	}
	if pcalls, rcalls := commandCalls(t, pc), commandCalls(t, rc); pcalls["hgetall"] != 2 || rcalls["hgetall"] != 60 {
		t.Fatalf("Latest and Hosts: primary hgetall %d, replica %d; want them on the primary", pcalls["hgetall"], rcalls["hgetall"])
	}

	// A replica that is down costs nothing but a warning.
	replica.Stop()
	got, err = s.Range(ctx, storage.RangeQuery{HostID: "rep", From: 0, To: 1 << 62})
	if err != nil || len(got) != 60 {
		t.Fatalf("Range with the replica down: %d snapshots, %v", len(got), err)
	}
}

// TestReplicasNotReadByDefault: without ReadFromReplicas the replicas are
// not even dialed.
func TestReplicasNotReadByDefault(t *testing.T) {
	primary := redistest.Start(t)
	s := openStore(t, Config{Shards: []ShardConfig{{Addr: primary.Addr, Replicas: []string{"127.0.0.1:1"}}}})
	defer s.Close()
	ctx := ctxT(t)
	ts := time.Now().Unix()
	if err := s.WriteSnapshots(ctx, []storage.Snapshot{{HostID: "h", Timestamp: ts}}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Range(ctx, storage.RangeQuery{HostID: "h", From: 0, To: ts}); err != nil || len(got) != 1 {
		t.Fatalf("Range = %d, %v", len(got), err)
	}
}

// TestACLUser runs the conformance suite as a Redis user that may run only
// what the store needs: no KEYS, FLUSHALL, CONFIG, INFO (-@dangerous), and
// keys under monitor: only.
func TestACLUser(t *testing.T) {
	srv := redistest.Start(t)
	admin := rawClient(t, srv.Addr)
	ctx := ctxT(t)
	const pw = "s3cret-acl-pw"
	err := admin.Do(ctx, "ACL", "SETUSER", "monitor", "reset", "on", ">"+pw, "~monitor:*", "resetchannels",
		"+@read", "+@write", "+@transaction", "+@scripting", "-@dangerous", "+ping").Err()
	if err != nil {
		t.Fatal(err)
	}
	// The user is as narrow as it should be.
	user := redis.NewClient(&redis.Options{Addr: srv.Addr, Username: "monitor", Password: pw, Protocol: 2, DisableIdentity: true})
	defer user.Close()
	for _, cmd := range [][]interface{}{{"FLUSHALL"}, {"KEYS", "*"}, {"CONFIG", "GET", "maxmemory"}, {"SET", "other:key", "x"}} {
		if err := user.Do(ctx, cmd...).Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
			t.Fatalf("the ACL user may run %v: %v", cmd, err)
		}
	}
	storagetest.Run(t, func(t *testing.T, clock *storagetest.Clock) storage.Store {
		cfg := conformanceConfig(clock, ShardConfig{Addr: srv.Addr, Username: "monitor", Password: pw})
		cfg.KeyPrefix = "monitor:" + cfg.KeyPrefix
		return openStore(t, cfg)
	})

	// A wrong password is an error that names the shard, not the password.
	_, err = New(ctx, Config{Shards: []ShardConfig{{Addr: srv.Addr, Username: "monitor", Password: "wrong-" + pw}}}, nil)
	if err == nil || !strings.Contains(err.Error(), srv.Addr) || strings.Contains(err.Error(), pw) {
		t.Fatalf("New with a wrong password = %v", err)
	}
}

func TestShardConfigHidesPassword(t *testing.T) {
	sc := ShardConfig{Addr: "10.0.0.1:6379", Replicas: []string{"10.0.0.2:6379"}, Username: "monitor", Password: "s3cret", TLS: TLSConfig{Enabled: true}}
	for _, s := range []string{sc.String(), fmt.Sprint(sc), fmt.Sprintf("%+v", sc), fmt.Sprint([]ShardConfig{sc}), sc.LogValue().String()} {
		if strings.Contains(s, "s3cret") || !strings.Contains(s, "10.0.0.1:6379") || !strings.Contains(s, "monitor") {
			t.Fatalf("shard prints as %q", s)
		}
	}
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("x", "shards", []ShardConfig{sc})
	if strings.Contains(b.String(), "s3cret") {
		t.Fatalf("shard logs as %q", b.String())
	}
}

func TestShardConfigRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		sc   ShardConfig
		want string
	}{
		{"cluster without name", ShardConfig{Cluster: true, ClusterAddrs: []string{"a:1"}}, "has no name"},
		{"cluster with addr", ShardConfig{Name: "c", Cluster: true, Addr: "a:1", ClusterAddrs: []string{"a:1"}}, "seed nodes"},
		{"cluster without addrs", ShardConfig{Name: "c", Cluster: true}, "no seed addresses"},
		{"cluster with db", ShardConfig{Name: "c", Cluster: true, ClusterAddrs: []string{"a:1"}, DB: 1}, "only database 0"},
		{"bad cluster addr", ShardConfig{Name: "c", Cluster: true, ClusterAddrs: []string{"a"}}, "not host:port"},
		{"bad replica", ShardConfig{Addr: "a:1", Replicas: []string{"b"}}, `replica address "b"`},
		{"primary as replica", ShardConfig{Addr: "a:1", Replicas: []string{"a:1"}}, "primary as a replica"},
		{"cluster addrs without cluster", ShardConfig{Addr: "a:1", ClusterAddrs: []string{"b:1"}}, "not a cluster"},
		{"cert without key", ShardConfig{Addr: "a:1", TLS: TLSConfig{Enabled: true, CertFile: "c.pem"}}, "certificate and its key"},
		{"missing CA file", ShardConfig{Addr: "a:1", TLS: TLSConfig{Enabled: true, CAFile: "/nonexistent/ca.pem"}}, "tls client: read CA file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(context.Background(), Config{Shards: []ShardConfig{tc.sc}}, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// certs writes a CA and a server and a client certificate signed by it
// (server valid for 127.0.0.1) to dir.
func certs(t *testing.T, dir string) (ca, serverCert, serverKey, clientCert, clientKey string) {
	t.Helper()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey := key()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "monitor test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, usage x509.ExtKeyUsage, name string) (string, string) {
		k := key()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "EC PRIVATE KEY", kder)
	}
	ca = write("ca.pem", "CERTIFICATE", caDER)
	serverCert, serverKey = leaf(2, x509.ExtKeyUsageServerAuth, "server")
	clientCert, clientKey = leaf(3, x509.ExtKeyUsageClientAuth, "client")
	return
}

// TestTLS connects to a redis-server that speaks TLS on a second port and
// requires a client certificate.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	ca, sc, sk, cc, ck := certs(t, dir)
	tlsPort := freePort(t)
	redistest.Start(t, "--tls-port", strconv.Itoa(tlsPort), "--tls-cert-file", sc, "--tls-key-file", sk,
		"--tls-ca-cert-file", ca, "--tls-auth-clients", "yes")
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort))
	ctx := ctxT(t)

	s := openStore(t, Config{Shards: []ShardConfig{{Addr: addr, TLS: TLSConfig{Enabled: true, CAFile: ca, CertFile: cc, KeyFile: ck}}}})
	defer s.Close()
	ts := time.Now().Unix()
	if err := s.WriteSnapshots(ctx, []storage.Snapshot{{HostID: "tls", Timestamp: ts, Samples: []storage.Sample{{Series: "v", Value: 1}}}}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Range(ctx, storage.RangeQuery{HostID: "tls", From: 0, To: ts}); err != nil || len(got) != 1 {
		t.Fatalf("Range over TLS = %d, %v", len(got), err)
	}

	for _, tc := range []struct {
		name string
		tls  TLSConfig
		want string
	}{
		{"system roots do not know the test CA", TLSConfig{Enabled: true, CertFile: cc, KeyFile: ck}, "certificate"},
		{"no client certificate", TLSConfig{Enabled: true, CAFile: ca}, ""},
		{"wrong server name", TLSConfig{Enabled: true, CAFile: ca, CertFile: cc, KeyFile: ck, ServerName: "redis.example"}, "redis.example"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s, err := New(ctx, Config{Shards: []ShardConfig{{Addr: addr, TLS: tc.tls}}}, nil)
			if err == nil {
				s.Close()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), addr) {
				t.Fatalf("New = %v, want an error naming %s and containing %q", err, addr, tc.want)
			}
		})
	}
}

// startCluster starts a Redis Cluster of three primaries on loopback, each
// holding a third of the slots, and waits until every node reports the
// cluster ok.
func startCluster(t *testing.T) []string {
	t.Helper()
	var addrs []string
	var busPorts []int
	var clients []*redis.Client
	for i := 0; i < 3; i++ {
		// The bus port is set: port+10000 may be taken or past 65535.
		bus := freePort(t)
		srv := redistest.Start(t, "--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(bus),
			"--cluster-node-timeout", "2000")
		addrs = append(addrs, srv.Addr)
		busPorts = append(busPorts, bus)
		clients = append(clients, rawClient(t, srv.Addr))
	}
	ctx := ctxT(t)
	ranges := [][2]int{{0, 5460}, {5461, 10922}, {10923, 16383}}
	for i, c := range clients {
		if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", ranges[i][0], ranges[i][1]).Err(); err != nil {
			t.Fatalf("CLUSTER ADDSLOTSRANGE on %s: %v", addrs[i], err)
		}
	}
	for i, a := range addrs[1:] {
		host, port, _ := net.SplitHostPort(a)
		if err := clients[0].Do(ctx, "CLUSTER", "MEET", host, port, busPorts[i+1]).Err(); err != nil {
			t.Fatalf("CLUSTER MEET %s: %v", a, err)
		}
	}
	waitFor(t, "cluster state ok on every node", 20*time.Second, func() (bool, error) {
		for _, c := range clients {
			info, err := c.ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_known_nodes:3") {
				return false, err
			}
		}
		return true, nil
	})
	return addrs
}

// TestCluster runs the conformance suite against a shard that is a real
// three-node Redis Cluster, then checks the hash-tagged layout: every key
// of a host on the node that serves the host's slot, every key with a TTL.
func TestCluster(t *testing.T) {
	addrs := startCluster(t)
	storagetest.Run(t, func(t *testing.T, clock *storagetest.Clock) storage.Store {
		cfg := conformanceConfig(clock, ShardConfig{Name: "cluster-a", Cluster: true, ClusterAddrs: addrs})
		cfg.ReadFromReplicas = true // no replicas here: reads fall back to the primaries
		return openStore(t, cfg)
	})

	s := openStore(t, Config{Shards: []ShardConfig{{Name: "cluster-a", Cluster: true, ClusterAddrs: addrs}}})
	defer s.Close()
	ctx := ctxT(t)
	ts := time.Now().Unix()
	var batch []storage.Snapshot
	for i := 0; i < 20; i++ {
		batch = append(batch, storage.Snapshot{HostID: fmt.Sprintf("web-%d", i), Timestamp: ts, Samples: []storage.Sample{{Series: "v", Value: 1}}})
	}
	if err := s.WriteSnapshots(ctx, batch); err != nil {
		t.Fatal(err)
	}
	nodes := map[string]*redis.Client{}
	for _, a := range addrs {
		nodes[a] = rawClient(t, a)
	}
	perNode := map[string]int{}
	for _, sn := range batch {
		tag := "{" + sn.HostID + "}"
		want := []string{
			"monitor:metrics:" + tag + ":" + strconv.FormatInt(ts, 10),
			"monitor:index:metrics:" + tag,
			"monitor:rollup:1m:" + tag + ":" + strconv.FormatInt(ts-ts%60, 10),
			"monitor:rollup:1h:" + tag + ":" + strconv.FormatInt(ts-ts%3600, 10),
			"monitor:index:rollup:1m:" + tag,
			"monitor:index:rollup:1h:" + tag,
			"monitor:rollup:seen:" + tag + ":" + strconv.FormatInt(ts-ts%3600, 10),
		}
		found := ""
		for a, c := range nodes {
			n, err := c.Exists(ctx, want...).Result()
			if err != nil && strings.HasPrefix(err.Error(), "MOVED") {
				continue // the slot is served by another node
			}
			if err != nil {
				t.Fatal(err) // CROSSSLOT: the keys are not in one slot
			}
			if n == int64(len(want)) {
				found = a
			}
		}
		if found == "" {
			t.Fatalf("host %s: its keys %v are not all on one node", sn.HostID, want)
		}
		perNode[found]++
		// The index member is the tagged hash key.
		if m := nodes[found].ZRange(ctx, want[1], 0, -1).Val(); len(m) != 1 || m[0] != want[0] {
			t.Fatalf("index of %s = %v, want [%s]", sn.HostID, m, want[0])
		}
	}
	if len(perNode) < 2 {
		t.Fatalf("20 hosts on nodes %v: the hash tags do not spread them", perNode)
	}
	for a, c := range nodes {
		t.Run("ttl "+a, func(t *testing.T) { checkEveryKeyHasTTL(t, c, 1) })
	}
}

func TestClusterKeyNames(t *testing.T) {
	plain, tagged := keyspace{prefix: "monitor:"}, keyspace{prefix: "monitor:", tag: true}
	for _, tc := range []struct{ got, want string }{
		{string(plain.metrics(nil, "web-1", 1755100754)), "monitor:metrics:web-1:1755100754"},
		{string(tagged.metrics(nil, "web-1", 1755100754)), "monitor:metrics:{web-1}:1755100754"},
		{plain.index("web-1"), "monitor:index:metrics:web-1"},
		{tagged.index("web-1"), "monitor:index:metrics:{web-1}"},
		{tagged.host("web-1"), "monitor:host:{web-1}"},
		{tagged.hosts(), "monitor:hosts"},
		{tagged.rollup(storage.Minute, "web-1", 1755100740), "monitor:rollup:1m:{web-1}:1755100740"},
		{plain.rollup(storage.Hour, "web-1", 1755097200), "monitor:rollup:1h:web-1:1755097200"},
		{tagged.rollupIndex(storage.Hour, "web-1"), "monitor:index:rollup:1h:{web-1}"},
		{tagged.seen("web-1", 1755097200), "monitor:rollup:seen:{web-1}:1755097200"},
	} {
		if tc.got != tc.want {
			t.Errorf("key %q, want %q", tc.got, tc.want)
		}
	}
}
