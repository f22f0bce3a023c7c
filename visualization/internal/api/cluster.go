package api

import (
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	monitorpb "github.com/monitorhq/monitor/proto"
)

// Member is a broker this server follows.
type Member struct {
	ID        string `json:"id"` // empty for a configured address the cluster has not confirmed
	Addr      string `json:"addr"`
	Leader    bool   `json:"leader"`
	Streaming bool   `json:"streaming"` // this server's Subscribe stream to it is open
}

type raftMemberJSON struct {
	ID       string `json:"id"`
	GRPCAddr string `json:"grpc_addr"`
	RaftAddr string `json:"raft_addr"`
	Voter    bool   `json:"voter"`
	Leader   bool   `json:"leader"`
}

type shardJSON struct {
	ID       string   `json:"id"`
	Addrs    []string `json:"addrs"`
	DB       int32    `json:"db"`
	Cluster  bool     `json:"cluster"`
	TLS      bool     `json:"tls"`
	Draining bool     `json:"draining"`
	Hosts    uint64   `json:"hosts"` // registered hosts the current ring gives it
}

type migrationJSON struct {
	RingVersion  uint64   `json:"ring_version"`
	FromVersion  uint64   `json:"from_version"`
	FromShards   []string `json:"from_shards"`
	ToShards     []string `json:"to_shards"`
	Done         bool     `json:"done"`
	HostsTotal   uint64   `json:"hosts_total"`
	HostsScanned uint64   `json:"hosts_scanned"`
	HostsMoved   uint64   `json:"hosts_moved"`
	KeysCopied   uint64   `json:"keys_copied"`
	StartedMs    int64    `json:"started_unix_ms"`
	FinishedMs   int64    `json:"finished_unix_ms"`
	Error        string   `json:"error,omitempty"`
}

type clusterBody struct {
	// Brokers are the brokers this server follows, with its stream state.
	Brokers []Member `json:"brokers"`
	// ControlPlane is false when the brokers run without the Raft control
	// plane (a single broker, standalone); the fields below are then empty
	// and StatusError says why.
	ControlPlane bool   `json:"control_plane"`
	StatusError  string `json:"status_error,omitempty"`

	NodeID       string           `json:"node_id"` // the broker that answered
	Leader       string           `json:"leader"`
	LeaderAddr   string           `json:"leader_addr"`
	Term         uint64           `json:"term"`
	CommitIndex  uint64           `json:"commit_index"`
	AppliedIndex uint64           `json:"applied_index"`
	Members      []raftMemberJSON `json:"members"`
	RingVersion  uint64           `json:"ring_version"`
	Shards       []shardJSON      `json:"shards"`
	Migration    *migrationJSON   `json:"migration"`
}

func (a *API) members() []Member {
	if a.cfg.Members != nil {
		return a.cfg.Members()
	}
	var out []Member
	for _, addr := range a.brokers.Brokers() {
		out = append(out, Member{Addr: addr})
	}
	return out
}

func (a *API) cluster(w http.ResponseWriter, r *http.Request) {
	body := clusterBody{Brokers: a.members(), Members: []raftMemberJSON{}, Shards: []shardJSON{}}
	if body.Brokers == nil {
		body.Brokers = []Member{}
	}
	st, err := a.brokers.ClusterStatus(r.Context())
	if err != nil {
		if status.Code(err) != codes.Unimplemented {
			a.brokerError(w, r, err)
			return
		}
		body.StatusError = "the brokers run without the Raft control plane: " + status.Convert(err).Message()
		writeJSON(w, http.StatusOK, body)
		return
	}
	body.ControlPlane = true
	body.NodeID, body.Leader, body.LeaderAddr = st.GetNodeId(), st.GetLeaderId(), st.GetLeaderGrpcAddr()
	body.Term, body.CommitIndex, body.AppliedIndex = st.GetTerm(), st.GetCommitIndex(), st.GetAppliedIndex()
	body.RingVersion = st.GetRingVersion()
	for _, m := range st.GetMembers() {
		mem := m.GetMember()
		body.Members = append(body.Members, raftMemberJSON{ID: mem.GetId(), GRPCAddr: mem.GetGrpcAddr(), RaftAddr: mem.GetRaftAddr(),
			Voter: m.GetVoter(), Leader: m.GetLeader() || (mem.GetId() != "" && mem.GetId() == st.GetLeaderId())})
	}
	for _, s := range st.GetShards() {
		addrs := s.GetAddrs()
		if addrs == nil {
			addrs = []string{}
		}
		body.Shards = append(body.Shards, shardJSON{ID: s.GetId(), Addrs: addrs, DB: s.GetDb(), Cluster: s.GetCluster(),
			TLS: s.GetTls(), Draining: s.GetDraining(), Hosts: st.GetShardHosts()[s.GetId()]})
	}
	if m := st.GetMigration(); m != nil {
		body.Migration = migrationFromProto(m)
	}
	writeJSON(w, http.StatusOK, body)
}

func migrationFromProto(m *monitorpb.Migration) *migrationJSON {
	from, to := m.GetFromShards(), m.GetToShards()
	if from == nil {
		from = []string{}
	}
	if to == nil {
		to = []string{}
	}
	return &migrationJSON{
		RingVersion: m.GetRingVersion(), FromVersion: m.GetFromVersion(), FromShards: from, ToShards: to,
		Done: m.GetDone(), HostsTotal: m.GetHostsTotal(), HostsScanned: m.GetHostsScanned(), HostsMoved: m.GetHostsMoved(),
		KeysCopied: m.GetKeysCopied(), StartedMs: m.GetStartedUnixMs(), FinishedMs: m.GetFinishedUnixMs(), Error: m.GetError(),
	}
}

func (a *API) stats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, a.cfg.Stats())
}
