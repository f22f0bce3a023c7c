package collector

import (
	"bytes"
	"context"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	monitorpb "github.com/monitorhq/monitor/proto"
)

// Sensors reports temperatures from the kernel's hwmon drivers
// (/sys/class/hwmon/hwmon*/temp*_input, millidegrees Celsius), or, when
// there are none, from thermal zones (/sys/class/thermal/thermal_zone*/temp,
// as on many ARM boards). A host without sensors (most VMs) simply has no
// temperature metrics: that is not an error. A sensor that cannot be read
// (drivers answer EIO or ENODATA for disconnected probes) is left out.
type Sensors struct {
	paths Paths
	fr    fileReader
}

// NewSensors returns the sensors collector.
func NewSensors(paths Paths) *Sensors { return &Sensors{paths: paths} }

// Name implements Collector.
func (*Sensors) Name() string { return "sensors" }

// Collect implements Collector.
func (c *Sensors) Collect(ctx context.Context) ([]*monitorpb.Metric, error) {
	out := c.hwmon()
	if len(out) == 0 {
		out = c.thermal()
	}
	return out, nil
}

// readInt reads a sysfs file holding one integer.
func (c *Sensors) readInt(path string) (int64, bool) {
	b, err := c.fr.read(path)
	if err != nil {
		return 0, false
	}
	v, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
	return v, err == nil
}

func (c *Sensors) readString(path string) string {
	b, err := c.fr.read(path)
	if err != nil {
		return ""
	}
	return string(bytes.TrimSpace(b))
}

// hwmon reads every temperature input. The chip label is the driver's name
// (coretemp, nvme, k10temp, …), suffixed with the hwmon index when two
// chips share a name; the sensor label is the input's label file, or
// "tempN" without one.
func (c *Sensors) hwmon() []*monitorpb.Metric {
	chips, _ := filepath.Glob(c.paths.sys("class", "hwmon", "hwmon*"))
	sort.Strings(chips)
	names := map[string]int{}
	chipName := make([]string, len(chips))
	for i, dir := range chips {
		name := c.readString(filepath.Join(dir, "name"))
		if name == "" {
			name = filepath.Base(dir)
		}
		chipName[i] = name
		names[name]++
	}
	var out []*monitorpb.Metric
	for i, dir := range chips {
		chip := chipName[i]
		if names[chip] > 1 {
			chip += "_" + strings.TrimPrefix(filepath.Base(dir), "hwmon")
		}
		inputs, _ := filepath.Glob(filepath.Join(dir, "temp*_input"))
		sort.Slice(inputs, func(a, b int) bool { return tempIndex(inputs[a]) < tempIndex(inputs[b]) })
		for _, in := range inputs {
			milli, ok := c.readInt(in)
			if !ok {
				continue
			}
			base := strings.TrimSuffix(filepath.Base(in), "_input")
			sensor := c.readString(filepath.Join(dir, base+"_label"))
			if sensor == "" {
				sensor = base
			}
			out = add(out, "sensor.temperature_celsius", "celsius", monitorpb.Priority_PRIORITY_NORMAL,
				float64(milli)/1000, "chip", chip, "sensor", sensor)
		}
	}
	return out
}

func tempIndex(path string) int {
	s := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(path), "temp"), "_input")
	n, _ := strconv.Atoi(s)
	return n
}

// thermal reads thermal zones: chip "thermal_zoneN", sensor its type.
func (c *Sensors) thermal() []*monitorpb.Metric {
	zones, _ := filepath.Glob(c.paths.sys("class", "thermal", "thermal_zone*"))
	sort.Strings(zones)
	var out []*monitorpb.Metric
	for _, z := range zones {
		milli, ok := c.readInt(filepath.Join(z, "temp"))
		if !ok {
			continue
		}
		typ := c.readString(filepath.Join(z, "type"))
		if typ == "" {
			typ = "unknown"
		}
		out = add(out, "sensor.temperature_celsius", "celsius", monitorpb.Priority_PRIORITY_NORMAL,
			float64(milli)/1000, "chip", filepath.Base(z), "sensor", typ)
	}
	return out
}
