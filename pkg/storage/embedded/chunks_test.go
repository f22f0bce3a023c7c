package embedded

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/pkg/storage/chunk"
	"github.com/monitorhq/monitor/pkg/storage/storagetest"
)

// model is what a store must return: per timestamp the last snapshot
// written, samples sorted by series with a repeated series' last value.
type model map[int64]storage.Snapshot

func (m model) put(s storage.Snapshot) {
	c := s
	c.Samples = slices.Clone(storage.LastSamples(s.Samples))
	slices.SortStableFunc(c.Samples, func(a, b storage.Sample) int { return strings.Compare(a.Series, b.Series) })
	if len(c.Samples) == 0 {
		c.Samples = nil
	}
	if len(c.Tags) == 0 {
		c.Tags = nil
	}
	m[s.Timestamp] = c
}

func (m model) want(from, to int64, match *storage.Matcher) []storage.Snapshot {
	var out []storage.Snapshot
	for ts, s := range m {
		if ts < from || ts > to {
			continue
		}
		if match != nil {
			s.Samples = slices.DeleteFunc(slices.Clone(s.Samples), func(x storage.Sample) bool { return !match.Match(x.Series) })
			if len(s.Samples) == 0 {
				continue
			}
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b storage.Snapshot) int { return int(a.Timestamp - b.Timestamp) })
	return out
}

func sameSnapshots(t *testing.T, what string, got, want []storage.Snapshot) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d snapshots, want %d", what, len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if len(g.Tags) == 0 {
			g.Tags = nil
		}
		if g.HostID != w.HostID || g.Timestamp != w.Timestamp || fmt.Sprint(g.Tags) != fmt.Sprint(w.Tags) || len(g.Samples) != len(w.Samples) {
			t.Fatalf("%s: snapshot %d = %+v, want %+v", what, i, g, w)
		}
		for j := range w.Samples {
			a, b := g.Samples[j], w.Samples[j]
			if a.Series != b.Series || a.Unit != b.Unit || math.Float64bits(a.Value) != math.Float64bits(b.Value) {
				t.Fatalf("%s: snapshot %d sample %d = %+v, want %+v", what, w.Timestamp, j, a, b)
			}
		}
	}
}

// forms counts the host's records and chunks.
func forms(t *testing.T, s *Store, host string) (records, chunks int) {
	t.Helper()
	err := s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketSnapshots).Bucket([]byte(host)); b != nil {
			records = b.Stats().KeyN
		}
		if b := tx.Bucket(bucketChunks).Bucket([]byte(host)); b != nil {
			chunks = b.Stats().KeyN
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return records, chunks
}

func randomSnapshot(r *rand.Rand, host string, ts int64) storage.Snapshot {
	s := storage.Snapshot{HostID: host, Timestamp: ts, Tags: map[string]string{"env": "prod"}}
	if r.IntN(10) == 0 {
		s.Tags = nil
	}
	for k := 0; k < 6; k++ {
		if r.IntN(12) == 0 {
			continue // a series missing from this snapshot
		}
		v := math.Round(r.Float64()*10000) / 100
		switch k {
		case 1:
			v = float64(r.Int64N(1 << 40))
		case 2:
			v = r.NormFloat64()
		}
		s.Samples = append(s.Samples, storage.Sample{Series: fmt.Sprintf("m.%d{k=%d}", (k*5)%6, k), Value: v, Unit: "u" + strconv.Itoa(k%2)})
	}
	return s
}

// TestSealing writes three hours of one host, with rewrites and late data
// for hours sealed already, and checks that every read (ranges, a matcher,
// Latest, Hosts) gives the model's answer before and after the hours are
// sealed, and that sealing leaves records only for open hours.
func TestSealing(t *testing.T) {
	s := openT(t, t.TempDir(), Options{SweepInterval: time.Hour})
	defer s.Close()
	ctx := ctxT(t)
	r := rand.New(rand.NewPCG(1, 2))
	now := time.Now().Unix()
	m := model{}
	var batch []storage.Snapshot
	write := func() {
		t.Helper()
		if err := s.WriteSnapshots(ctx, batch); err != nil {
			t.Fatal(err)
		}
		for _, sn := range batch {
			m.put(sn)
		}
		batch = batch[:0]
	}
	for ts := now - 3*3600; ts <= now; ts += 1 + r.Int64N(9) {
		if batch = append(batch, randomSnapshot(r, "h", ts)); len(batch) == 40 {
			write()
		}
	}
	write()
	check := func(what string) {
		t.Helper()
		got, err := s.Range(ctx, storage.RangeQuery{HostID: "h", From: 0, To: now})
		if err != nil {
			t.Fatal(err)
		}
		sameSnapshots(t, what+": whole range", got, m.want(0, now, nil))
		match := storage.NewMatcher([]string{"m.1", "m.4"})
		from, to := now-7000, now-1000
		got, err = s.Range(ctx, storage.RangeQuery{HostID: "h", From: from, To: to, Match: match})
		if err != nil {
			t.Fatal(err)
		}
		sameSnapshots(t, what+": matched range", got, m.want(from, to, match))
		last, ok, err := s.Latest(ctx, "h")
		want := m.want(0, now+1e6, nil)
		if err != nil || !ok {
			t.Fatalf("%s: Latest = %v, %v", what, ok, err)
		}
		sameSnapshots(t, what+": Latest", []storage.Snapshot{last}, want[len(want)-1:])
		hs, err := s.Hosts(ctx)
		if err != nil || len(hs) != 1 || hs[0].LastData != want[len(want)-1].Timestamp {
			t.Fatalf("%s: Hosts = %+v, %v", what, hs, err)
		}
	}
	check("as written")
	if _, chunks := forms(t, s, "h"); chunks == 0 {
		t.Fatal("writes sealed no window")
	}
	if err := s.sweep(); err != nil {
		t.Fatal(err)
	}
	check("swept")
	recs, chunks := forms(t, s, "h")
	if oldest := lastClosed(now); chunks < 2 {
		t.Fatalf("%d chunks after the sweep (windows up to %d are closed)", chunks, oldest)
	}
	_ = s.db.View(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bucketSnapshots).Bucket([]byte("h")).Cursor().First()
		if k != nil && windowOf(keyTS(k)) <= lastClosed(now) {
			t.Errorf("a record at %d of a closed window is left after the sweep (%d records)", keyTS(k), recs)
		}
		return nil
	})

	// Late data and rewrites for sealed hours: records until the next seal,
	// the record winning over the chunk's copy.
	old := m.want(now-3*3600, now-2*3600, nil)
	for i, sn := range []storage.Snapshot{old[0], old[len(old)/2], old[len(old)-1]} {
		re := randomSnapshot(r, "h", sn.Timestamp)
		re.Samples = append(re.Samples, storage.Sample{Series: "rewritten", Value: float64(i)})
		batch = append(batch, re)
	}
	batch = append(batch, randomSnapshot(r, "h", old[0].Timestamp+1), randomSnapshot(r, "h", now-2*3600-2))
	write()
	check("late data")
	if err := s.sweep(); err != nil {
		t.Fatal(err)
	}
	check("late data swept")
}

// TestUpgradeFromRecords opens a file of layout version 1 (a record per
// snapshot, no chunks): it reads as it was, is upgraded to version 2, and
// its past hours are sealed by the sweeper without losing anything.
func TestUpgradeFromRecords(t *testing.T) {
	dir := t.TempDir()
	now := time.Now().Unix()
	r := rand.New(rand.NewPCG(3, 4))
	m := model{}
	rawUpdate(t, dir, func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		if err := meta.Put(keyFormat, []byte{formatNoChunks}); err != nil {
			return err
		}
		root, err := tx.CreateBucket(bucketSnapshots)
		if err != nil {
			return err
		}
		b, err := root.CreateBucket([]byte("old-host"))
		if err != nil {
			return err
		}
		for ts := now - 5*3600; ts <= now; ts += 5 {
			sn := randomSnapshot(r, "old-host", ts)
			m.put(sn)
			if err := b.Put(tsKey(nil, ts), chunk.AppendRecord(nil, &sn)); err != nil {
				return err
			}
		}
		return nil
	})
	ctx := ctxT(t)
	s := openT(t, dir, Options{SweepInterval: time.Hour})
	defer s.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, chunks := forms(t, s, "old-host"); chunks >= 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sweeper did not seal the old file's hours")
		}
		time.Sleep(10 * time.Millisecond)
	}
	got, err := s.Range(ctx, storage.RangeQuery{HostID: "old-host", From: 0, To: now})
	if err != nil {
		t.Fatal(err)
	}
	sameSnapshots(t, "upgraded file", got, m.want(0, now, nil))
	err = s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyFormat); len(v) != 1 || v[0] != formatVersion {
			return fmt.Errorf("format after upgrade = %v", v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestKilledWriterLosesNothing runs a writer in a child process, which
// prints each acknowledged timestamp, kills it with SIGKILL mid-stream
// (sealing runs as it writes: its data starts two hours back), and checks
// that the reopened file holds every acknowledged snapshot exactly.
func TestKilledWriterLosesNothing(t *testing.T) {
	if os.Getenv("EMBEDDED_KILL_CHILD") != "" {
		return // only the parent test runs as a test
	}
	dir := t.TempDir()
	start := time.Now().Unix() - 2*3600
	cmd := exec.Command(os.Args[0], "-test.run=^TestKillChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "EMBEDDED_KILL_CHILD="+dir, "EMBEDDED_KILL_START="+strconv.FormatInt(start, 10))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var acked []int64
	sc := bufio.NewScanner(out)
	for sc.Scan() && len(acked) < 1200 {
		if ts, ok := strings.CutPrefix(sc.Text(), "ack "); ok {
			n, err := strconv.ParseInt(ts, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			acked = append(acked, n)
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if len(acked) < 1200 {
		t.Fatalf("the writer stopped after %d acknowledgements", len(acked))
	}
	s := openT(t, dir, Options{SweepInterval: time.Hour})
	defer s.Close()
	_, chunks := forms(t, s, "k")
	t.Logf("FIGURE killed after %d acknowledged snapshots; %d windows sealed by then", len(acked), chunks)
	if chunks == 0 {
		t.Fatal("the writer sealed nothing before it was killed: the test proves less than it should")
	}
	got, err := s.Range(ctxT(t), storage.RangeQuery{HostID: "k", From: 0, To: start + 1e6})
	if err != nil {
		t.Fatal(err)
	}
	m := model{}
	for _, ts := range acked {
		m.put(killSnapshot(ts))
	}
	want := m.want(0, start+1e6, nil)
	if len(got) < len(want) {
		t.Fatalf("%d snapshots after the kill, %d acknowledged", len(got), len(want))
	}
	// The child may have stored one call it had no time to acknowledge.
	sameSnapshots(t, "after the kill", got[:len(want)], want)
}

func killSnapshot(ts int64) storage.Snapshot {
	return storage.Snapshot{HostID: "k", Timestamp: ts, Samples: []storage.Sample{
		{Series: "a", Value: float64(ts%1000) / 100, Unit: "%"}, {Series: "b", Value: float64(ts * 3)},
	}}
}

// TestKillChild is the writer of TestKilledWriterLosesNothing (it does
// nothing unless that test started it).
func TestKillChild(t *testing.T) {
	dir := os.Getenv("EMBEDDED_KILL_CHILD")
	if dir == "" {
		t.Skip("the child of TestKilledWriterLosesNothing")
	}
	start, err := strconv.ParseInt(os.Getenv("EMBEDDED_KILL_START"), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	s := openT(t, dir, Options{SweepInterval: 50 * time.Millisecond})
	ctx := ctxT(t)
	w := bufio.NewWriter(os.Stdout)
	for ts := start; ; ts += 10 {
		batch := []storage.Snapshot{killSnapshot(ts), killSnapshot(ts + 5)}
		if err := s.WriteSnapshots(ctx, batch); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(w, "ack %d\nack %d\n", ts, ts+5)
		if err := w.Flush(); err != nil {
			return // the parent has gone
		}
	}
}

// TestCorruptRecordDoesNotStopSealing: a record that does not decode keeps
// its host's hour unsealed (and reads of it failing, naming it), while the
// sweep goes on sealing the other hosts.
func TestCorruptRecordDoesNotStopSealing(t *testing.T) {
	dir := t.TempDir()
	ctx := ctxT(t)
	old := time.Now().Unix() - 3*3600
	// The clock stands in the hour while writing: nothing seals yet.
	clock := &storagetest.Clock{}
	clock.Advance(time.Until(time.Unix(old, 0)))
	s := openT(t, dir, Options{SweepInterval: time.Hour, Now: clock.Now})
	r := rand.New(rand.NewPCG(5, 6))
	var batch []storage.Snapshot
	for _, h := range []string{"bad", "good"} {
		batch = append(batch, randomSnapshot(r, h, old), randomSnapshot(r, h, old+5))
	}
	if err := s.WriteSnapshots(ctx, batch); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Since(clock.Now()))
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSnapshots).Bucket([]byte("bad")).Put(tsKey(nil, old), []byte{chunk.RecordVersion, 0xff})
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.sweep(); err != nil {
		t.Fatalf("sweep: %v", err)
	}
	if _, chunks := forms(t, s, "good"); chunks != 1 {
		t.Fatalf("good host: %d chunks after the sweep, want 1", chunks)
	}
	if recs, chunks := forms(t, s, "bad"); recs != 2 || chunks != 0 {
		t.Fatalf("bad host: %d records, %d chunks; want its 2 records unsealed", recs, chunks)
	}
	if _, err := s.Range(ctx, storage.RangeQuery{HostID: "bad", From: 0, To: old + 10}); !errors.Is(err, chunk.ErrCorrupt) || !strings.Contains(err.Error(), fmt.Sprint(old)) {
		t.Fatalf("Range over the corrupt record = %v", err)
	}
	s.Close()
}
