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
	return ConvertBatch(FromProto(b), now, lim)
}

// ConvertBatch validates batch b (from DecodeBatch or FromProto) received
// at now.
func ConvertBatch(b *Batch, now time.Time, lim Limits) Result {
	var r Result
	snaps := b.Snapshots
	n := len(snaps)
	if n > lim.MaxBatchSnapshots {
		n = lim.MaxBatchSnapshots
	}
	r.Snapshots = make([]storage.Snapshot, 0, n)
	reject := func(i int, s *Snapshot, metric, reason string) {
		r.Rejections = append(r.Rejections, &monitorpb.Rejection{
			Seq: b.Seq, SnapshotIndex: uint32(i), HostId: s.HostID,
			Timestamp: s.Timestamp, Metric: metric, Reason: reason,
		})
	}
	nowSec := now.Unix()
	oldest := now.Add(-lim.MaxAge).Unix()
	newest := now.Add(lim.MaxFutureSkew).Unix()
	var seen map[string]struct{} // series of the snapshot at hand; one map per batch
	for i := range snaps {
		s := &snaps[i]
		if i >= lim.MaxBatchSnapshots {
			reject(i, s, "", fmt.Sprintf("batch has %d snapshots, the limit is %d; this one and later ones were not stored", len(snaps), lim.MaxBatchSnapshots))
			continue
		}
		if err := storage.ValidateHostID(s.HostID); err != nil {
			reject(i, s, "", err.Error())
			continue
		}
		ts := s.Timestamp
		switch {
		case ts > newest:
			reject(i, s, "", fmt.Sprintf("timestamp %d is %ds ahead of the broker's clock; at most %s is allowed", ts, ts-nowSec, lim.MaxFutureSkew))
			continue
		case ts < oldest:
			reject(i, s, "", fmt.Sprintf("timestamp %d is older than the retention %s", ts, lim.MaxAge))
			continue
		}
		out := storage.Snapshot{HostID: s.HostID, Timestamp: ts}
		if len(s.Tags) > 0 {
			out.Tags = make(map[string]string, len(s.Tags))
			for k, v := range s.Tags {
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
		metrics := s.Metrics
		out.Samples = make([]storage.Sample, 0, min(len(metrics), lim.MaxSamplesPerSnapshot))
		clear(seen)
		for j := range metrics {
			m := &metrics[j]
			if j >= lim.MaxSamplesPerSnapshot {
				reject(i, s, metricRef(m.Name, j), fmt.Sprintf("snapshot has %d metrics, the limit is %d; this one and later ones were not stored", len(metrics), lim.MaxSamplesPerSnapshot))
				break
			}
			// The checks, in this order: name and labels, value, unit. A
			// metric known from the cache (wire.go) passed the first and
			// the last with the same bytes.
			var series string
			var err, unitErr error
			if m.known != nil {
				series = m.known.series
			} else {
				series, err = seriesKey(m.Name, m.Labels)
				unitErr = checkUnit(m.Unit)
				if err == nil && unitErr == nil && m.wireKey != "" {
					rememberMetric(m.wireKey, &metricInfo{name: m.Name, series: series, unit: m.Unit})
				}
			}
			if err == nil {
				err = storage.ValidateValue(m.Value)
			}
			if err == nil {
				err = unitErr
			}
			if err != nil {
				reject(i, s, metricRef(m.Name, j), err.Error())
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
			out.Samples = append(out.Samples, storage.Sample{Series: series, Value: m.Value, Unit: m.Unit})
		}
		out.Samples = lim.Series.admit(out.HostID, now, out.Samples, func(series, reason string) { reject(i, s, series, reason) })
		r.Samples += len(out.Samples)
		r.Snapshots = append(r.Snapshots, out)
	}
	return r
}

func checkUnit(unit string) error {
	if len(unit) > 32 {
		return fmt.Errorf("unit is %d bytes, the limit is 32", len(unit))
	}
	return storage.ValidateTagValue(unit)
}

// metricRef names a refused metric in a Rejection: its name, or "#index"
// when it has none (an empty Metric field means the whole snapshot).
func metricRef(name string, index int) string {
	if name == "" {
		return fmt.Sprintf("#%d", index)
	}
	return name
}
