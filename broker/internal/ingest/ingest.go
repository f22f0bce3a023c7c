// Package ingest turns an agent's batch from the wire into storage
// snapshots, refusing bad items one by one: a bad snapshot or sample is
// reported as a Rejection and the rest of the batch is kept. Nothing from the
// wire reaches a storage key without passing these checks.
//
// Convert is safe for concurrent use; its only state is the optional
// SeriesCap in Limits (per-host distinct series per hour), itself safe for
// concurrent use.
package ingest

import (
	"fmt"
	"time"

	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// Limits bound one batch.
type Limits struct {
	MaxBatchSnapshots     int
	MaxSamplesPerSnapshot int
	MaxFutureSkew         time.Duration // timestamps further ahead of now are refused
	MaxAge                time.Duration // older timestamps are refused (they would expire at once)
	// Series, when set, caps the distinct series per host and hour; samples
	// of new series past it are refused (a cardinality bomb).
	Series *SeriesCap
}

// Result is a converted batch.
type Result struct {
	Snapshots  []storage.Snapshot
	Samples    int
	Rejections []*monitorpb.Rejection
}

// Convert validates batch b received at now.
func Convert(b *monitorpb.Batch, now time.Time, lim Limits) Result {
	var r Result
	snaps := b.GetSnapshots()
	n := len(snaps)
	if n > lim.MaxBatchSnapshots {
		n = lim.MaxBatchSnapshots
	}
	r.Snapshots = make([]storage.Snapshot, 0, n)
	reject := func(i int, s *monitorpb.Snapshot, metric, reason string) {
		r.Rejections = append(r.Rejections, &monitorpb.Rejection{
			Seq: b.GetSeq(), SnapshotIndex: uint32(i), HostId: s.GetHostId(),
			Timestamp: s.GetTimestamp(), Metric: metric, Reason: reason,
		})
	}
	nowSec := now.Unix()
	oldest := now.Add(-lim.MaxAge).Unix()
	newest := now.Add(lim.MaxFutureSkew).Unix()
	for i, s := range snaps {
		if i >= lim.MaxBatchSnapshots {
			reject(i, s, "", fmt.Sprintf("batch has %d snapshots, the limit is %d; this one and later ones were not stored", len(snaps), lim.MaxBatchSnapshots))
			continue
		}
		if err := storage.ValidateHostID(s.GetHostId()); err != nil {
			reject(i, s, "", err.Error())
			continue
		}
		ts := s.GetTimestamp()
		switch {
		case ts > newest:
			reject(i, s, "", fmt.Sprintf("timestamp %d is %ds ahead of the broker's clock; at most %s is allowed", ts, ts-nowSec, lim.MaxFutureSkew))
			continue
		case ts < oldest:
			reject(i, s, "", fmt.Sprintf("timestamp %d is older than the retention %s", ts, lim.MaxAge))
			continue
		}
		out := storage.Snapshot{HostID: s.GetHostId(), Timestamp: ts}
		if len(s.GetTags()) > 0 {
			out.Tags = make(map[string]string, len(s.GetTags()))
			for k, v := range s.GetTags() {
				err := storage.ValidateLabelName(k)
				if err == nil {
					err = storage.ValidateTagValue(v)
				}
				if err != nil {
					reject(i, s, "tag:"+k, err.Error())
					continue
				}
				out.Tags[k] = v
			}
		}
		metrics := s.GetMetrics()
		out.Samples = make([]storage.Sample, 0, min(len(metrics), lim.MaxSamplesPerSnapshot))
		var seen map[string]struct{}
		for j, m := range metrics {
			if j >= lim.MaxSamplesPerSnapshot {
				reject(i, s, metricRef(m.GetName(), j), fmt.Sprintf("snapshot has %d metrics, the limit is %d; this one and later ones were not stored", len(metrics), lim.MaxSamplesPerSnapshot))
				break
			}
			series, err := storage.SeriesKey(m.GetName(), m.GetLabels())
			if err == nil {
				err = storage.ValidateValue(m.GetValue())
			}
			if err == nil && len(m.GetUnit()) > 32 {
				err = fmt.Errorf("unit is %d bytes, the limit is 32", len(m.GetUnit()))
			}
			if err == nil {
				err = storage.ValidateTagValue(m.GetUnit())
			}
			if err != nil {
				reject(i, s, metricRef(m.GetName(), j), err.Error())
				continue
			}
			if seen == nil {
				seen = make(map[string]struct{}, len(metrics))
			}
			if _, dup := seen[series]; dup {
				reject(i, s, series, "series appears twice in one snapshot; the first value was kept")
				continue
			}
			seen[series] = struct{}{}
			out.Samples = append(out.Samples, storage.Sample{Series: series, Value: m.GetValue(), Unit: m.GetUnit()})
		}
		out.Samples = lim.Series.admit(out.HostID, now, out.Samples, func(series, reason string) { reject(i, s, series, reason) })
		r.Samples += len(out.Samples)
		r.Snapshots = append(r.Snapshots, out)
	}
	return r
}

// metricRef names a refused metric in a Rejection: its name, or "#index"
// when it has none (an empty Metric field means the whole snapshot).
func metricRef(name string, index int) string {
	if name == "" {
		return fmt.Sprintf("#%d", index)
	}
	return name
}
