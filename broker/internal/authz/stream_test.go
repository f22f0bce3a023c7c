package authz

import (
	"testing"

	"github.com/monitorhq/monitor/broker/internal/ingest"
)

// The broker's service reads Ingest with its own decoder: the stream check
// must see that type's host ids (a type it cannot read is refused).
var _ HostBatch = (*ingest.Request)(nil)

func TestRequestSnapshotHosts(t *testing.T) {
	var hello ingest.Request
	if _, ok := hello.BatchSeq(); ok {
		t.Fatal("a request without a batch reports a batch")
	}
	req := ingest.Request{Batch: &ingest.Batch{Seq: 7, Snapshots: []ingest.Snapshot{{HostID: "web-1"}, {HostID: "web-2"}}}}
	seq, ok := req.BatchSeq()
	var hosts []string
	for i, h := range req.SnapshotHosts() {
		if i != len(hosts) {
			t.Fatalf("index %d, want %d", i, len(hosts))
		}
		hosts = append(hosts, h)
	}
	if !ok || seq != 7 || len(hosts) != 2 || hosts[0] != "web-1" || hosts[1] != "web-2" {
		t.Fatalf("seq %d %v, hosts %v", seq, ok, hosts)
	}
}
