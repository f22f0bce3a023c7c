package collector

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	monitorpb "github.com/monitorhq/monitor/proto"
)

// tree writes files (path → content) under a new temporary root and
// returns Paths pointing at its proc and sys.
func tree(t *testing.T, files map[string]string) Paths {
	t.Helper()
	root := t.TempDir()
	write(t, root, files)
	return Paths{Proc: filepath.Join(root, "proc"), Sys: filepath.Join(root, "sys")}
}

func write(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// clock is an injectable time.Now.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// values maps series keys to values.
func values(t *testing.T, ms []*monitorpb.Metric) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, m := range ms {
		k := m.Name
		if len(m.Labels) > 0 {
			var parts []string
			for _, l := range []string{"chip", "comm", "cpu", "device", "interface", "mount", "pid", "sensor", "state"} {
				if v, ok := m.Labels[l]; ok {
					parts = append(parts, l+"="+v)
				}
			}
			k += "{" + strings.Join(parts, ",") + "}"
		}
		if _, dup := out[k]; dup {
			t.Errorf("series %s twice", k)
		}
		out[k] = m.Value
	}
	return out
}

func expect(t *testing.T, got map[string]float64, want map[string]float64) {
	t.Helper()
	for k, w := range want {
		g, ok := got[k]
		switch {
		case math.IsNaN(w) && ok:
			t.Errorf("%s = %v, want absent", k, g)
		case !math.IsNaN(w) && !ok:
			t.Errorf("%s absent, want %v", k, w)
		case !math.IsNaN(w) && math.Abs(g-w) > 1e-6:
			t.Errorf("%s = %v, want %v", k, g, w)
		}
	}
}

var absent = math.NaN()

func TestCPUFromProcStat(t *testing.T) {
	p := tree(t, map[string]string{
		"proc/stat": "cpu  100 10 50 800 20 5 5 10 0 0\ncpu0 50 5 25 400 10 3 2 5 0 0\ncpu1 50 5 25 400 10 2 3 5 0 0\n" +
			"intr 1000 1 2 3\nctxt 5000\nbtime 1\nprocesses 10\nprocs_running 2\nprocs_blocked 0\n",
		"proc/loadavg": "0.50 0.25 0.10 3/200 999\n",
	})
	clk := &clock{time.Unix(1000, 0)}
	c := NewCPU(p, 0)
	c.now = clk.now
	ms, err := c.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	expect(t, values(t, ms), map[string]float64{"load.1": 0.5, "load.5": 0.25, "load.15": 0.1, "cpu.usage_percent": absent})

	// 2 s later: all CPUs: user +30 (+nice 0), system +10, idle +50, iowait
	// −5 (went backwards: 0), steal +10 → 100 ticks. cpu1 did nothing.
	write(t, filepath.Dir(p.Proc), map[string]string{"proc/stat": "cpu  130 10 60 850 15 5 5 20 0 0\ncpu0 80 5 35 450 5 3 2 15 0 0\ncpu1 50 5 25 400 10 2 3 5 0 0\n" +
		"intr 3000 1 2 3\nctxt 6000\n"})
	clk.t = clk.t.Add(2 * time.Second)
	ms, err = c.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	expect(t, values(t, ms), map[string]float64{
		"cpu.usage_percent": 50, "cpu.user_percent": 30, "cpu.system_percent": 10, "cpu.iowait_percent": 0,
		"cpu.steal_percent": 10, "cpu.idle_percent": 50,
		"cpu.core_usage_percent{cpu=cpu0}": 50, "cpu.core_steal_percent{cpu=cpu0}": 10, "cpu.core_idle_percent{cpu=cpu0}": 50,
		"cpu.core_usage_percent{cpu=cpu1}": absent, // no ticks passed: no share
		"cpu.context_switches_per_sec":     500, "cpu.interrupts_per_sec": 1000,
	})

	write(t, filepath.Dir(p.Proc), map[string]string{"proc/stat": "cpu  garbage\n"})
	if _, err := c.Collect(context.Background()); err == nil {
		t.Fatal("unparsable /proc/stat accepted")
	}
}

func TestMemoryFromMeminfo(t *testing.T) {
	page := float64(os.Getpagesize())
	p := tree(t, map[string]string{
		"proc/meminfo": "MemTotal:        1000 kB\nMemFree:          100 kB\nMemAvailable:     600 kB\nBuffers:           50 kB\n" +
			"Cached:           300 kB\nSwapCached:         0 kB\nSwapTotal:        200 kB\nSwapFree:         150 kB\nHugePages_Total:       0\n",
		"proc/vmstat": "nr_free_pages 25\npswpin 10\npswpout 20\n",
	})
	clk := &clock{time.Unix(1000, 0)}
	c := NewMemory(p, 0)
	c.now = clk.now
	ms, err := c.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	expect(t, values(t, ms), map[string]float64{
		"mem.total_bytes": 1000 * 1024, "mem.used_bytes": 400 * 1024, "mem.available_bytes": 600 * 1024, "mem.used_percent": 40,
		"mem.free_bytes": 100 * 1024, "mem.cached_bytes": 300 * 1024, "mem.buffers_bytes": 50 * 1024,
		"swap.total_bytes": 200 * 1024, "swap.used_bytes": 50 * 1024, "swap.free_bytes": 150 * 1024, "swap.used_percent": 25,
		"swap.in_bytes_per_sec": absent,
	})
	write(t, filepath.Dir(p.Proc), map[string]string{"proc/vmstat": "pswpin 30\npswpout 20\n"})
	clk.t = clk.t.Add(2 * time.Second)
	ms, _ = c.Collect(context.Background())
	// 20 pages in 2 s, 10 pages/s, rounded to a power of ten at most a
	// fifteenth of one page over 2 s: 4 KiB pages to 100 B/s (40960 →
	// 41000), 64 KiB pages to 1000 B/s.
	want := map[float64]float64{4096: 41000, 16384: 163800, 65536: 655000}[page]
	if want == 0 {
		t.Fatalf("no expectation for %v-byte pages", page)
	}
	expect(t, values(t, ms), map[string]float64{"swap.in_bytes_per_sec": want, "swap.out_bytes_per_sec": 0})

	// Kernels before 3.14 have no MemAvailable; no swap means 0 %.
	write(t, filepath.Dir(p.Proc), map[string]string{"proc/meminfo": "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n"})
	ms, _ = c.Collect(context.Background())
	expect(t, values(t, ms), map[string]float64{"mem.available_bytes": 400 * 1024, "swap.used_percent": 0})
}

func TestDiskstats(t *testing.T) {
	line := func(name string, reads, sectR, writes, sectW, ticks int) string {
		return strings.Join([]string{"8", "0", name, itoa(reads), "0", itoa(sectR), "0", itoa(writes), "0", itoa(sectW), "0", "0", itoa(ticks), "0"}, " ") + "\n"
	}
	p := tree(t, map[string]string{"proc/diskstats": line("sda", 10, 100, 5, 50, 1000) + line("sda1", 10, 100, 5, 50, 1000) +
		line("loop0", 1, 1, 0, 0, 1) + line("sdb", 0, 0, 0, 0, 0) + line("nvme0n1", 1, 8, 1, 8, 10)})
	clk := &clock{time.Unix(1000, 0)}
	d := NewDisk(p, 0)
	d.now = clk.now
	if ms, err := d.Collect(context.Background()); err != nil || len(ms) != 0 {
		t.Fatalf("first reading: %v, %v", ms, err)
	}
	write(t, filepath.Dir(p.Proc), map[string]string{"proc/diskstats": line("sda", 30, 300, 25, 450, 1500) + line("sda1", 30, 300, 25, 450, 1500) +
		line("loop0", 9, 9, 0, 0, 9) + line("sdb", 0, 0, 0, 0, 0) + line("nvme0n1", 1, 8, 1, 8, 3000)})
	clk.t = clk.t.Add(2 * time.Second)
	ms, err := d.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := values(t, ms)
	expect(t, got, map[string]float64{
		"disk.reads_per_sec{device=sda}": 10, "disk.writes_per_sec{device=sda}": 10,
		"disk.read_bytes_per_sec{device=sda}": 100 * 512, "disk.write_bytes_per_sec{device=sda}": 200 * 512,
		"disk.io_busy_percent{device=sda}": 25, "disk.io_busy_percent{device=nvme0n1}": 100, // clamped
		"disk.reads_per_sec{device=sda1}": absent, "disk.reads_per_sec{device=loop0}": absent, "disk.reads_per_sec{device=sdb}": absent,
	})
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestNetDev(t *testing.T) {
	head := "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n"
	p := tree(t, map[string]string{"proc/net/dev": head +
		"    lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n  eth0: 1000 10 1 2 0 0 0 0 2000 20 3 4 0 0 0 0\n"})
	clk := &clock{time.Unix(1000, 0)}
	c := NewNetwork(p, 0)
	c.now = clk.now
	if ms, _ := c.Collect(context.Background()); len(ms) != 0 {
		t.Fatalf("rates on the first reading: %v", ms)
	}
	write(t, filepath.Dir(p.Proc), map[string]string{"proc/net/dev": head +
		"    lo: 900 9 0 0 0 0 0 0 900 9 0 0 0 0 0 0\n  eth0:3000 30 1 4 0 0 0 0 6000 60 5 4 0 0 0 0\n"})
	clk.t = clk.t.Add(2 * time.Second)
	ms, err := c.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	expect(t, values(t, ms), map[string]float64{
		"net.rx_bytes_per_sec{interface=eth0}": 1000, "net.tx_bytes_per_sec{interface=eth0}": 2000,
		"net.rx_packets_per_sec{interface=eth0}": 10, "net.tx_packets_per_sec{interface=eth0}": 20,
		"net.rx_errors_per_sec{interface=eth0}": 0, "net.tx_errors_per_sec{interface=eth0}": 1,
		"net.rx_drops_per_sec{interface=eth0}": 1, "net.tx_drops_per_sec{interface=eth0}": 0,
		"net.rx_bytes_per_sec{interface=lo}": absent,
	})
}

func TestTCPStates(t *testing.T) {
	head := "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	sock := func(st string) string {
		return "   0: 0100007F:1F90 00000000:0000 " + st + " 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0\n"
	}
	p := tree(t, map[string]string{"proc/net/tcp": head + sock("0A") + sock("0A") + sock("01") + sock("06") + sock("0C")})
	c := NewTCPStates(p)
	ms, err := c.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	expect(t, values(t, ms), map[string]float64{
		"net.tcp_connections{state=listen}": 2, "net.tcp_connections{state=established}": 1,
		"net.tcp_connections{state=time_wait}": 1, "net.tcp_connections{state=syn_recv}": 1, "net.tcp_connections{state=close_wait}": 0,
	})
	if len(ms) != 11 {
		t.Fatalf("%d states reported, want all 11", len(ms))
	}
	write(t, filepath.Dir(p.Proc), map[string]string{"proc/net/tcp6": head + sock("01") + sock("01")})
	ms, _ = c.Collect(context.Background())
	expect(t, values(t, ms), map[string]float64{"net.tcp_connections{state=established}": 3})

	if _, err := NewTCPStates(Paths{Proc: t.TempDir()}).Collect(context.Background()); err == nil {
		t.Fatal("no /proc/net/tcp is an error")
	}
}

func TestTCPCounters(t *testing.T) {
	snmp := func(active, passive, retrans int) string {
		return "Ip: Forwarding DefaultTTL\nIp: 1 64\n" +
			"Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors\n" +
			"Tcp: 1 200 120000 -1 " + itoa(active) + " " + itoa(passive) + " 0 0 36 1000 1000 " + itoa(retrans) + " 0 0 0\n" +
			"Udp: InDatagrams\nUdp: 5\n"
	}
	p := tree(t, map[string]string{
		"proc/net/snmp":      snmp(100, 50, 10),
		"proc/net/sockstat":  "sockets: used 74\nTCP: inuse 52 orphan 2 tw 599 alloc 57 mem 44\nUDP: inuse 0 mem 0\n",
		"proc/net/sockstat6": "TCP6: inuse 3\nUDP6: inuse 0\n",
	})
	clk := &clock{time.Unix(1000, 0)}
	c := NewTCP(p, 0)
	c.now = clk.now
	ms, err := c.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	expect(t, values(t, ms), map[string]float64{
		"net.tcp_established": 36, "net.tcp_time_wait": 599, "net.tcp_inuse": 55, "net.tcp_orphan": 2,
		"net.tcp_active_opens_per_sec": absent,
	})
	write(t, filepath.Dir(p.Proc), map[string]string{"proc/net/snmp": snmp(120, 60, 10)})
	clk.t = clk.t.Add(2 * time.Second)
	ms, _ = c.Collect(context.Background())
	expect(t, values(t, ms), map[string]float64{"net.tcp_active_opens_per_sec": 10, "net.tcp_passive_opens_per_sec": 5, "net.tcp_retransmits_per_sec": 0})
}

func TestProcesses(t *testing.T) {
	page := float64(os.Getpagesize())
	stat := func(pid, comm, state string, utime, stime, start, rss int) string {
		// pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime prio nice threads itreal starttime vsize rss
		return pid + " (" + comm + ") " + state + " 1 1 1 0 -1 0 0 0 0 0 " + itoa(utime) + " " + itoa(stime) +
			" 0 0 20 0 1 0 " + itoa(start) + " 1000 " + itoa(rss) + " 0 0 0\n"
	}
	files := map[string]string{
		"proc/stat":       "cpu  1 1 1 1 1 1 1 1 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\ncpu1 1 1 1 1 1 1 1 1 0 0\nprocesses 100\nprocs_running 3\nprocs_blocked 1\n",
		"proc/loadavg":    "0.1 0.1 0.1 3/57 100\n",
		"proc/1/stat":     stat("1", "init", "S", 10, 10, 1, 100),
		"proc/20/stat":    stat("20", "my (weird) name", "R", 100, 0, 50, 5000),
		"proc/30/stat":    stat("30", "db", "S", 50, 50, 60, 9000),
		"proc/40/stat":    stat("40", "zombie", "Z", 0, 0, 70, 0),
		"proc/self/stat":  "ignored",
		"proc/notapid/xx": "",
	}
	p := tree(t, files)
	clk := &clock{time.Unix(1000, 0)}
	c := NewProcesses(p, 2, 0)
	c.now = clk.now
	ms, err := c.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	expect(t, values(t, ms), map[string]float64{
		"proc.running": 3, "proc.blocked": 1, "proc.total": 4, "proc.zombie": 1, "proc.threads": 57, "proc.forks_per_sec": absent,
		"process.rss_bytes{comm=db,pid=30}": 9000 * page, "process.rss_bytes{comm=my (weird) name,pid=20}": 5000 * page,
		"process.rss_bytes{comm=init,pid=1}":  absent, // only the top 2
		"process.cpu_percent{comm=db,pid=30}": absent, // no previous reading
	})

	// 2 s later, 2 CPUs = 400 ticks available: pid 20 used 200 (50 %), pid
	// 30 used 20 (5 %); pid 1 was replaced by a new process with the same
	// pid (another start time): no rate for it.
	write(t, filepath.Dir(p.Proc), map[string]string{
		"proc/stat":    "cpu  1 1 1 1 1 1 1 1 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\ncpu1 1 1 1 1 1 1 1 1 0 0\nprocesses 110\nprocs_running 1\nprocs_blocked 0\n",
		"proc/1/stat":  stat("1", "init", "S", 900, 900, 99, 100),
		"proc/20/stat": stat("20", "my (weird) name", "R", 300, 0, 50, 5000),
		"proc/30/stat": stat("30", "db", "S", 60, 60, 60, 9000),
	})
	clk.t = clk.t.Add(2 * time.Second)
	ms, err = c.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := values(t, ms)
	expect(t, got, map[string]float64{
		"proc.forks_per_sec": 5,
		"process.cpu_percent{comm=my (weird) name,pid=20}": 50, // 200 ticks in 2 s = 100/s of 2 CPUs' 200/s
		"process.cpu_percent{comm=db,pid=30}":              5,
		"process.cpu_percent{comm=init,pid=1}":             absent,
	})
	n := 0
	for k := range got {
		if strings.HasPrefix(k, "process.") {
			n++
		}
	}
	if n != 4 {
		t.Fatalf("%d per-process series, want 2 by CPU + 2 by memory: %v", n, got)
	}
	if c.rates.Len() != 4 {
		t.Fatalf("tracking %d processes, want 4 (the exited one forgotten)", c.rates.Len())
	}

	c0 := NewProcesses(p, 0, 0)
	ms, _ = c0.Collect(context.Background())
	for _, m := range ms {
		if strings.HasPrefix(m.Name, "process.") {
			t.Fatalf("top_processes 0 still reports %s", m.Name)
		}
	}
}

func TestSystem(t *testing.T) {
	p := tree(t, map[string]string{"proc/sys/fs/file-nr": "1500\t0\t10000\n", "proc/uptime": "12345.67 2000.00\n"})
	ms, err := NewSystem(p).Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	expect(t, values(t, ms), map[string]float64{"system.open_fds": 1500, "system.max_fds": 10000, "system.fds_used_percent": 15, "system.uptime_seconds": 12345.67})
	if _, err := NewSystem(Paths{Proc: t.TempDir()}).Collect(context.Background()); err == nil {
		t.Fatal("missing files are an error")
	}
}

func TestSensors(t *testing.T) {
	p := tree(t, map[string]string{
		"sys/class/hwmon/hwmon0/name":          "coretemp\n",
		"sys/class/hwmon/hwmon0/temp1_input":   "45000\n",
		"sys/class/hwmon/hwmon0/temp1_label":   "Package id 0\n",
		"sys/class/hwmon/hwmon0/temp2_input":   "41500\n",
		"sys/class/hwmon/hwmon0/temp3_input":   "garbage\n", // a probe answering nonsense is left out
		"sys/class/hwmon/hwmon1/name":          "nvme\n",
		"sys/class/hwmon/hwmon1/temp1_input":   "38850\n",
		"sys/class/hwmon/hwmon1/temp1_label":   "Composite\n",
		"sys/class/hwmon/hwmon2/name":          "nvme\n",
		"sys/class/hwmon/hwmon2/temp1_input":   "40000\n",
		"sys/class/hwmon/hwmon3/name":          "acpi_fan\n", // no temperatures
		"sys/class/thermal/thermal_zone0/temp": "99000\n",
	})
	ms, err := NewSensors(p).Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	expect(t, values(t, ms), map[string]float64{
		"sensor.temperature_celsius{chip=coretemp,sensor=Package id 0}": 45,
		"sensor.temperature_celsius{chip=coretemp,sensor=temp2}":        41.5,
		"sensor.temperature_celsius{chip=nvme_1,sensor=Composite}":      38.85,
		"sensor.temperature_celsius{chip=nvme_2,sensor=temp1}":          40,
	})
	if len(ms) != 4 {
		t.Fatalf("%d sensors, want 4 (thermal zones only without hwmon)", len(ms))
	}
	thermal := tree(t, map[string]string{"sys/class/thermal/thermal_zone0/temp": "52000\n", "sys/class/thermal/thermal_zone0/type": "cpu-thermal\n"})
	ms, _ = NewSensors(thermal).Collect(context.Background())
	expect(t, values(t, ms), map[string]float64{"sensor.temperature_celsius{chip=thermal_zone0,sensor=cpu-thermal}": 52})
	// No sensors at all (most VMs): no metrics and no error.
	if ms, err := NewSensors(Paths{Sys: t.TempDir()}).Collect(context.Background()); err != nil || len(ms) != 0 {
		t.Fatalf("no sensors: %v, %v", ms, err)
	}
}

func TestParseMountinfo(t *testing.T) {
	b := []byte("22 27 0:21 / /proc rw,relatime - proc proc rw\n" +
		"30 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n" +
		"31 30 0:40 / /mnt/my\\040disk rw master:2 - nfs4 nas:/export rw\n" +
		"garbage\n")
	got := parseMountinfo(b)
	want := []mount{{"proc", "/proc", "proc"}, {"/dev/vda", "/", "ext4"}, {"nas:/export", "/mnt/my disk", "nfs4"}}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("mount %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestUsageMounts(t *testing.T) {
	parts := []mount{
		{Device: "/dev/vda", Point: "/", FSType: "ext4"},
		{Device: "/dev/vda", Point: "/etc/hosts", FSType: "ext4"}, // bind mount of the same fs
		{Device: "/dev/sdb1", Point: "/data", FSType: "xfs"},
		{Device: "proc", Point: "/proc", FSType: "proc"},
		{Device: "tmpfs", Point: "/run", FSType: "tmpfs"},
		{Device: "overlay", Point: "/var/lib/docker/overlay2/x/merged", FSType: "overlay"},
		{Device: "cgroup", Point: "/sys/fs/cgroup/cpu", FSType: "cgroup"},
		{Device: "/dev/sdc", Point: "/dev/something", FSType: "ext4"},
		{Device: "nas:/export", Point: "/mnt/nas", FSType: "nfs4"},
		{Device: "/dev/loop3", Point: "/snap/core/1", FSType: "squashfs"},
	}
	var got []string
	for _, p := range usageMounts(parts) {
		got = append(got, p.Point)
	}
	if strings.Join(got, " ") != "/ /data /mnt/nas" {
		t.Fatalf("usage mounts = %q", got)
	}
}

// TestHungMountCostsOnlyItsOwnMetrics: a statfs that never returns (a
// stale NFS server) loses that mount's metrics, keeps the others, and is
// not called again while it hangs.
func TestHungMountCostsOnlyItsOwnMetrics(t *testing.T) {
	p := tree(t, map[string]string{"proc/self/mountinfo": "30 1 254:0 / / rw - ext4 /dev/vda rw\n" +
		"31 30 0:40 / /mnt/nas rw - nfs4 nas:/export rw\n32 30 254:16 / /data rw - xfs /dev/vdb rw\n"})
	release := make(chan struct{})
	var nasCalls atomic.Int32
	c := NewFilesystem(p)
	c.statfs = func(path string) (fsUsage, error) {
		switch path {
		case "/mnt/nas":
			nasCalls.Add(1)
			<-release
		case "/data":
			return fsUsage{}, errors.New("permission denied")
		}
		return fsUsage{total: 1000, free: 400, avail: 300, inodes: 100, inodesFree: 75, hasInodes: true}, nil
	}
	for round := 1; round <= 2; round++ {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		began := time.Now()
		ms, err := c.Collect(ctx)
		cancel()
		if time.Since(began) > 2*time.Second {
			t.Fatalf("round %d took %s with a 50ms deadline", round, time.Since(began))
		}
		got := values(t, ms)
		expect(t, got, map[string]float64{
			"disk.used_bytes{mount=/}": 600, "disk.free_bytes{mount=/}": 300, "disk.used_percent{mount=/}": 66.67, // 600/900, to 0.01
			"disk.inodes_used_percent{mount=/}": 25, "disk.inodes_free{mount=/}": 75,
			"disk.used_bytes{mount=/mnt/nas}": absent, "disk.used_bytes{mount=/data}": absent,
		})
		if err == nil || !strings.Contains(err.Error(), "/data") {
			t.Fatalf("round %d: error %v does not name /data", round, err)
		}
		if round == 2 && !strings.Contains(err.Error(), "/mnt/nas: the previous statfs has not returned") {
			t.Fatalf("round 2: error %v does not name the hung mount", err)
		}
	}
	if n := nasCalls.Load(); n != 1 {
		t.Fatalf("hung statfs called %d times, want 1", n)
	}
	close(release)
	waitUntil(t, func() bool { return !c.busyFlag("/mnt/nas").Load() })
	ms, _ := c.Collect(context.Background())
	if _, ok := values(t, ms)["disk.used_bytes{mount=/mnt/nas}"]; !ok {
		t.Fatal("the mount did not come back after its statfs returned")
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		<-time.After(2 * time.Millisecond)
	}
}
