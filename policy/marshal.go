package policy

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/vhqos/vhqos/cgroup"
)

// Marshal writes the table back as canonical TOML: what `vhqos check`
// understood, in the form Parse reads back to the same Table.
func (t *Table) Marshal() []byte {
	var b strings.Builder
	if t.Settings.CgroupParent != "" {
		fmt.Fprintf(&b, "[settings]\ncgroup_parent = %s\n\n", strconv.Quote(t.Settings.CgroupParent))
	}
	b.WriteString("[defaults]\n")
	writeLimits(&b, &t.Defaults)
	for i := range t.VHosts {
		c := &t.VHosts[i]
		b.WriteString("\n[[vhost]]\n")
		fmt.Fprintf(&b, "name = %s\n", strconv.Quote(c.Name))
		raw := make([]string, len(c.Match))
		for j, p := range c.Match {
			raw[j] = strconv.Quote(p.Raw)
		}
		fmt.Fprintf(&b, "match = [%s]\n", strings.Join(raw, ", "))
		writeLimits(&b, c)
	}
	return []byte(b.String())
}

func writeLimits(b *strings.Builder, c *Class) {
	r := &c.Resources
	if r.CPUWeight != 0 {
		fmt.Fprintf(b, "cpu_weight = %d\n", r.CPUWeight)
	}
	if r.CPUQuotaPercent != 0 {
		fmt.Fprintf(b, "cpu_max = \"%s%%\"\n", strconv.FormatFloat(r.CPUQuotaPercent, 'f', -1, 64))
	}
	if r.IOWeight != 0 {
		fmt.Fprintf(b, "io_weight = %d\n", r.IOWeight)
	}
	for _, f := range []struct {
		key string
		get func(d cgroup.DeviceLimit) uint64
	}{
		{"io_read_bps", func(d cgroup.DeviceLimit) uint64 { return d.ReadBPS }},
		{"io_write_bps", func(d cgroup.DeviceLimit) uint64 { return d.WriteBPS }},
		{"io_read_iops", func(d cgroup.DeviceLimit) uint64 { return d.ReadIOPS }},
		{"io_write_iops", func(d cgroup.DeviceLimit) uint64 { return d.WriteIOPS }},
	} {
		var parts []string
		for _, d := range r.Devices {
			if v := f.get(d); v != 0 {
				parts = append(parts, fmt.Sprintf("%s = %d", strconv.Quote(d.Path), v))
			}
		}
		if len(parts) > 0 {
			fmt.Fprintf(b, "%s = { %s }\n", f.key, strings.Join(parts, ", "))
		}
	}
	if c.DSCP >= 0 {
		name := DSCPName(c.DSCP)
		if _, err := strconv.Atoi(name); err != nil {
			name = strconv.Quote(name)
		}
		fmt.Fprintf(b, "dscp = %s\n", name)
	}
}
