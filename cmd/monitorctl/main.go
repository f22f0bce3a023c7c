// Command monitorctl is the cluster admin CLI.
//
//	monitorctl [-broker ADDR] [-json] [-user U -password P] COMMAND [ARGS]
//
// Commands:
//
//	status                 members, leader, term, commit index, ring version,
//	                       shards with host counts, migration progress
//	add-broker ID GRPC RAFT add a broker as a voter on its behalf (admin), as
//	                       -join does; start it with -join ADDR right away
//	remove-broker ID       remove a broker from the cluster (admin)
//	shard add ID ADDR[,REPLICA...] [-db N] [-cluster] [-user U] [-tls]
//	                       put a Redis shard on the ring (admin); the hosts
//	                       the new ring gives it move there live
//	shard remove ID        drain a shard and take it off (admin)
//	wait-migration         wait until no ring change is moving hosts
//	top [-shm NAME] [-metric M] [-k N]
//	                       the Top-K hosts per metric, read from the shared
//	                       memory of the visualization server on this
//	                       machine (no broker needed)
//	watch [-addr HOST:8081] [-n N] [-host H] [-metric PREFIX] [-token T]
//	                       live samples as JSON lines over the visualization
//	                       server's native QUIC protocol (watch.go)
//	agent-token -host ID [-secret-file F]
//	                       print the agent token of host ID under the agent
//	                       secret in F or MONITOR_AGENT_SECRET (no broker
//	                       needed; docs/security.md)
//	certs -out DIR [-hosts H,IP,...] [-agents ID,...] [-clients NAME,...]
//	                       a CA, a server certificate for brokers and the
//	                       visualization server, agent and other client
//	                       certificates, ECDSA P-256, files 0600, never
//	                       overwritten (certs.go; no broker needed)
//
// Credentials come from -user/-password or MONITOR_USER/MONITOR_PASSWORD.
// With -tls (or any -tls-* flag) the broker is dialed over TLS: -tls-ca
// names the roots (default: system), -tls-cert/-tls-key a client
// certificate for brokers that require one.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"

	"encoding/base64"

	"github.com/monitorhq/monitor/pkg/grpcauth"
	"github.com/monitorhq/monitor/pkg/tlsconfig"
	monitorpb "github.com/monitorhq/monitor/proto"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("monitorctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	broker := fs.String("broker", "127.0.0.1:9093", "gRPC address of any broker")
	asJSON := fs.Bool("json", false, "print JSON")
	user := fs.String("user", envOr("MONITOR_USER", "admin"), "admin user (env MONITOR_USER)")
	password := fs.String("password", os.Getenv("MONITOR_PASSWORD"), "admin password (env MONITOR_PASSWORD)")
	timeout := fs.Duration("timeout", 10*time.Second, "deadline of the command")
	var tc tlsconfig.Config
	fs.BoolVar(&tc.Enabled, "tls", false, "dial the broker over TLS")
	fs.StringVar(&tc.CAFile, "tls-ca", "", "PEM roots of the broker's certificate (implies -tls; default system roots)")
	fs.StringVar(&tc.CertFile, "tls-cert", "", "client certificate, PEM (implies -tls)")
	fs.StringVar(&tc.KeyFile, "tls-key", "", "client certificate's key, PEM")
	fs.StringVar(&tc.ServerName, "tls-server-name", "", "name to verify in the broker's certificate (default: the host dialed)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: monitorctl [-broker ADDR] [-json] [-user U -password P] status | add-broker ID GRPC RAFT | remove-broker ID | shard add ID ADDR[,REPLICA...] [-db N] [-cluster] [-user U] [-tls] | shard remove ID | wait-migration | top [-shm NAME] [-metric M] [-k N] | watch [-addr HOST:8081] [-n N] [-host H] [-metric PREFIX] [-token T] | agent-token -host ID [-secret-file F] | certs -out DIR [-hosts H,IP,...] [-agents ID,...] [-clients NAME,...]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	switch fs.Arg(0) {
	case "agent-token":
		return agentTokenCmd(fs.Args()[1:], stdout, stderr)
	case "certs":
		return certsCmd(fs.Args()[1:], stdout, stderr)
	}
	tc.Enabled = tc.Enabled || tc.CAFile != "" || tc.CertFile != "" || tc.ServerName != ""
	if err := tc.Validate("-tls"); err != nil {
		fmt.Fprintln(stderr, "monitorctl:", err)
		return 2
	}
	dial, err := grpcauth.Client{TLS: tc}.DialOptions()
	if err != nil {
		fmt.Fprintln(stderr, "monitorctl:", err)
		return 1
	}
	conn, err := grpc.NewClient(*broker, dial...)
	if err != nil {
		fmt.Fprintln(stderr, "monitorctl:", err)
		return 1
	}
	defer conn.Close()
	c := monitorpb.NewClusterServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	admin := metadata.AppendToOutgoingContext(ctx, "authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(*user+":"+*password)))

	var st *monitorpb.StatusResponse
	switch cmd := fs.Arg(0); cmd {
	case "status":
		st, err = c.Status(readerAuth(ctx, admin, *password), &monitorpb.StatusRequest{})
	case "add-broker":
		if fs.NArg() != 4 {
			fmt.Fprintln(stderr, "monitorctl: add-broker needs ID GRPC_ADDR RAFT_ADDR")
			return 2
		}
		var jr *monitorpb.JoinResponse
		jr, err = c.Join(admin, &monitorpb.JoinRequest{Member: &monitorpb.Member{Id: fs.Arg(1), GrpcAddr: fs.Arg(2), RaftAddr: fs.Arg(3)}})
		st = jr.GetStatus()
	case "remove-broker":
		if fs.NArg() != 2 {
			fmt.Fprintln(stderr, "monitorctl: remove-broker needs the broker id")
			return 2
		}
		st, err = c.RemoveBroker(admin, &monitorpb.RemoveMember{Id: fs.Arg(1)})
	case "shard":
		st, err = shardCmd(admin, c, fs.Args()[1:], stderr)
		if err == errUsage {
			return 2
		}
	case "wait-migration":
		st, err = waitMigration(readerAuth(ctx, admin, *password), c, stderr)
	case "watch":
		return watchCmd(fs.Args()[1:], *user, *password, stdout, stderr)
	case "top":
		return topCmd(fs.Args()[1:], *asJSON, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "monitorctl: unknown command %q\n", cmd)
		fs.Usage()
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "monitorctl:", err)
		return 1
	}
	if *asJSON {
		b, _ := protojson.MarshalOptions{Multiline: true, EmitUnpopulated: true}.Marshal(st)
		var v any
		_ = json.Unmarshal(b, &v)
		out, _ := json.MarshalIndent(v, "", "  ")
		fmt.Fprintln(stdout, string(out))
		return 0
	}
	printStatus(stdout, st)
	return 0
}

func printStatus(w io.Writer, st *monitorpb.StatusResponse) {
	fmt.Fprintf(w, "answered by %s (%s)\nleader: %s   term: %d   commit index: %d   applied: %d   ring version: %d\n\n",
		st.GetNodeId(), st.GetState(), orNone(st.GetLeaderId()), st.GetTerm(), st.GetCommitIndex(), st.GetAppliedIndex(), st.GetRingVersion())
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BROKER\tGRPC\tRAFT\tROLE")
	for _, m := range st.GetMembers() {
		role := "follower"
		if m.GetLeader() {
			role = "leader"
		}
		if !m.GetVoter() {
			role += " (non-voter)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.GetMember().GetId(), m.GetMember().GetGrpcAddr(), m.GetMember().GetRaftAddr(), role)
	}
	tw.Flush()
	if len(st.GetShards()) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SHARD\tADDRESSES\tHOSTS\tSTATE")
		for _, s := range st.GetShards() {
			state := "on ring"
			if s.GetDraining() {
				state = "draining"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", s.GetId(), strings.Join(s.GetAddrs(), ","), st.GetShardHosts()[s.GetId()], state)
		}
		tw.Flush()
	}
	if m := st.GetMigration(); m != nil && m.GetFromVersion() > 0 {
		fmt.Fprintln(w)
		state := "running"
		end := time.Now()
		if m.GetDone() {
			state, end = "done", time.UnixMilli(m.GetFinishedUnixMs())
		}
		took := end.Sub(time.UnixMilli(m.GetStartedUnixMs())).Round(time.Millisecond)
		fmt.Fprintf(w, "migration to ring %d (from %d): %s, %d/%d hosts moved, %d keys copied, %s\n",
			m.GetRingVersion(), m.GetFromVersion(), state, m.GetHostsMoved(), m.GetHostsTotal(), m.GetKeysCopied(), took)
		if m.GetError() != "" {
			fmt.Fprintf(w, "last error (retried): %s\n", m.GetError())
		}
	}
}

var errUsage = errors.New("usage")

// shardCmd runs `shard add` and `shard remove`.
func shardCmd(ctx context.Context, c monitorpb.ClusterServiceClient, args []string, stderr io.Writer) (*monitorpb.StatusResponse, error) {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "monitorctl: shard needs add or remove")
		return nil, errUsage
	}
	switch args[0] {
	case "add":
		fs := flag.NewFlagSet("shard add", flag.ContinueOnError)
		fs.SetOutput(stderr)
		db := fs.Int("db", 0, "Redis database (0 … 15)")
		cluster := fs.Bool("cluster", false, "the addresses are seed nodes of a Redis Cluster")
		user := fs.String("user", "", "Redis ACL user (the password comes from the brokers' configuration)")
		tls := fs.Bool("tls", false, "connect with TLS")
		// Flags may follow the positional arguments.
		var pos []string
		rest := args[1:]
		for len(rest) > 0 {
			if err := fs.Parse(rest); err != nil {
				return nil, errUsage
			}
			if fs.NArg() == 0 {
				break
			}
			pos = append(pos, fs.Arg(0))
			rest = fs.Args()[1:]
		}
		if len(pos) != 2 {
			fmt.Fprintln(stderr, "monitorctl: shard add needs ID and ADDR[,REPLICA...]")
			return nil, errUsage
		}
		return c.AddShard(ctx, &monitorpb.Shard{Id: pos[0], Addrs: strings.Split(pos[1], ","), Db: int32(*db),
			Cluster: *cluster, Username: *user, Tls: *tls})
	case "remove":
		if len(args) != 2 {
			fmt.Fprintln(stderr, "monitorctl: shard remove needs the shard id")
			return nil, errUsage
		}
		return c.RemoveStorageShard(ctx, &monitorpb.RemoveShard{Id: args[1]})
	}
	fmt.Fprintf(stderr, "monitorctl: unknown shard command %q\n", args[0])
	return nil, errUsage
}

// waitMigration follows the cluster's Watch stream until no ring change is
// moving hosts.
func waitMigration(ctx context.Context, c monitorpb.ClusterServiceClient, stderr io.Writer) (*monitorpb.StatusResponse, error) {
	stream, err := c.Watch(ctx, &monitorpb.StatusRequest{})
	if err != nil {
		return nil, err
	}
	var last uint64
	for {
		st, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		m := st.GetMigration()
		if m == nil || m.GetDone() {
			return st, nil
		}
		if m.GetHostsMoved() != last {
			last = m.GetHostsMoved()
			fmt.Fprintf(stderr, "ring %d: %d/%d hosts moved\n", m.GetRingVersion(), m.GetHostsMoved(), m.GetHostsTotal())
		}
	}
}

// readerAuth is the credential of read-only cluster calls (Status, Watch),
// which a broker with agent authentication asks for: the admin's when a
// password is given, else the cluster secret from MONITOR_CLUSTER_SECRET,
// else none (brokers without authentication).
func readerAuth(ctx, admin context.Context, password string) context.Context {
	if password != "" {
		return admin
	}
	if s := os.Getenv("MONITOR_CLUSTER_SECRET"); s != "" {
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+s)
	}
	return ctx
}

// agentTokenCmd prints an agent token (pkg/grpcauth) for -host.
func agentTokenCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("agent-token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	host := fs.String("host", "", "the agent's host id (its host_id)")
	secretFile := fs.String("secret-file", "", "file holding the agent secret (default: env MONITOR_AGENT_SECRET)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *host == "" || fs.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: monitorctl agent-token -host ID [-secret-file F]   (secret from F or MONITOR_AGENT_SECRET)")
		return 2
	}
	secret := os.Getenv("MONITOR_AGENT_SECRET")
	if *secretFile != "" {
		b, err := os.ReadFile(*secretFile)
		if err != nil {
			fmt.Fprintln(stderr, "monitorctl: read the agent secret:", err)
			return 1
		}
		secret = strings.TrimSpace(string(b))
	}
	if secret == "" {
		fmt.Fprintln(stderr, "monitorctl: agent-token needs the agent secret: -secret-file F or MONITOR_AGENT_SECRET (one of the brokers' auth.agent_secrets)")
		return 2
	}
	tok, err := grpcauth.Mint([]byte(secret), *host)
	if err != nil {
		fmt.Fprintln(stderr, "monitorctl: agent-token:", err)
		return 1
	}
	fmt.Fprintln(stdout, tok)
	return 0
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
