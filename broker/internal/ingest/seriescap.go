package ingest

import (
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/monitorhq/monitor/pkg/storage"
)

// SeriesCap bounds how many distinct series one host may write per clock
// hour (a cardinality bomb: an agent that sends a million metric names
// would otherwise fill the storage and every per-series structure behind
// it). A host's first Max distinct series of the hour are stored; samples
// of further new series are refused with a Rejection until the hour ends,
// when every host's count starts again. Series the host already wrote this
// hour are always admitted, so a resend is never refused.
//
// Memory: a 64-bit hash per admitted series (about 10 bytes in a Go map),
// so at most hosts × Max of them, and only for the current hour; the
// previous hour's sets are dropped whole when the hour turns. A hash
// collision admits a new series as if it were known (an undercount of at
// most one in 2^64 per pair), never refuses a known one.
//
// SeriesCap is safe for concurrent use; hosts are spread over independently
// locked stripes.
type SeriesCap struct {
	max     int
	seed    maphash.Seed
	stripes [64]capStripe
	refused atomic.Uint64
}

type capStripe struct {
	mu    sync.Mutex
	hour  int64
	hosts map[string]map[uint64]struct{}
}

// NewSeriesCap returns a cap of max distinct series per host and hour;
// max < 1 returns nil, which admits everything.
func NewSeriesCap(max int) *SeriesCap {
	if max < 1 {
		return nil
	}
	return &SeriesCap{max: max, seed: maphash.MakeSeed()}
}

// Max is the cap.
func (c *SeriesCap) Max() int { return c.max }

// Refused counts samples refused because their host was over the cap.
func (c *SeriesCap) Refused() uint64 {
	if c == nil {
		return 0
	}
	return c.refused.Load()
}

// admit keeps the samples of host's snapshot that fit under the cap at
// now, in order, reusing samples' backing array, and calls refuse for each
// one it leaves out.
func (c *SeriesCap) admit(host string, now time.Time, samples []storage.Sample, refuse func(series, reason string)) []storage.Sample {
	if c == nil || len(samples) == 0 {
		return samples
	}
	hour := now.Unix() / 3600
	st := &c.stripes[maphash.String(c.seed, host)%uint64(len(c.stripes))]
	st.mu.Lock()
	if st.hour != hour || st.hosts == nil {
		// A new hour: every host of the stripe starts again, and hosts
		// that went away take no memory.
		st.hour, st.hosts = hour, map[string]map[uint64]struct{}{}
	}
	set := st.hosts[host]
	if set == nil {
		set = make(map[uint64]struct{}, min(len(samples), c.max))
		st.hosts[host] = set
	}
	kept := samples[:0]
	var refused []string
	for _, s := range samples {
		h := maphash.String(c.seed, s.Series)
		if _, ok := set[h]; !ok {
			if len(set) >= c.max {
				refused = append(refused, s.Series)
				continue
			}
			set[h] = struct{}{}
		}
		kept = append(kept, s)
	}
	st.mu.Unlock()
	if len(refused) > 0 {
		c.refused.Add(uint64(len(refused)))
		reason := fmt.Sprintf("host %q already wrote %d distinct series this hour, the limit (ingest.max_series_per_host); new series are refused until the hour ends", host, c.max)
		for _, series := range refused {
			refuse(series, reason)
		}
	}
	return kept
}
