// Command monitorctl is the cluster admin CLI.
//
//	monitorctl [-broker ADDR] [-json] [-user U -password P] COMMAND [ARGS]
//
// Commands:
//
//	status                 members, leader, term, commit index, ring version, shards
//	remove-broker ID       remove a broker from the cluster (admin)
//
// Credentials come from -user/-password or MONITOR_USER/MONITOR_PASSWORD.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"

	"encoding/base64"

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
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: monitorctl [-broker ADDR] [-json] [-user U -password P] status | remove-broker ID")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	conn, err := grpc.NewClient(*broker, grpc.WithTransportCredentials(insecure.NewCredentials()))
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
		st, err = c.Status(ctx, &monitorpb.StatusRequest{})
	case "remove-broker":
		if fs.NArg() != 2 {
			fmt.Fprintln(stderr, "monitorctl: remove-broker needs the broker id")
			return 2
		}
		st, err = c.RemoveBroker(admin, &monitorpb.RemoveMember{Id: fs.Arg(1)})
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
		fmt.Fprintln(tw, "SHARD\tADDRESSES\tDRAINING")
		for _, s := range st.GetShards() {
			fmt.Fprintf(tw, "%s\t%v\t%v\n", s.GetId(), s.GetAddrs(), s.GetDraining())
		}
		tw.Flush()
	}
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
