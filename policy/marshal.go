package policy

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/vhqos/vhqos/cgroup"
	"github.com/vhqos/vhqos/intercept"
	"github.com/vhqos/vhqos/vhost"
)

// Marshal writes the table back as canonical TOML: what `vhqos check`
// understood, in one fixed layout (sections and keys in the order of the
// reference, sizes in the largest whole unit, DSCPs by name), which Parse
// reads back to an equal Table. Patterns are written as the operator wrote
// them, so messages about the output point at familiar text.
func (t *Table) Marshal() []byte {
	var b strings.Builder
	// [settings] is written when it has a key: Settings holds a slice, so
	// it cannot be compared with its zero value.
	var st strings.Builder
	writeSettings(&st, &t.Settings)
	if st.Len() > 0 {
		b.WriteString("[settings]\n")
		b.WriteString(st.String())
		b.WriteString("\n")
	}
	b.WriteString("[defaults]\n")
	writeLimits(&b, &t.Defaults)
	for i := range t.Tenants {
		tn := &t.Tenants[i]
		b.WriteString("\n[[tenant]]\n")
		fmt.Fprintf(&b, "name = %s\n", tomlString(tn.Name))
		if tn.Parent != "" {
			fmt.Fprintf(&b, "tenant = %s\n", tomlString(tn.Parent))
		}
		// Only resources: Parse refuses the other keys in a tenant, and
		// each site was written with its tenant's defaults merged in.
		limits := newClass()
		limits.Resources = tn.Resources
		limits.Rates.Egress = tn.Egress
		limits.Admission = Admission{RefuseStatus: DefaultRefuseStatus, RetryAfter: DefaultRetryAfter}
		writeLimits(&b, &limits)
	}
	for i := range t.VHosts {
		c := &t.VHosts[i]
		b.WriteString("\n[[vhost]]\n")
		fmt.Fprintf(&b, "name = %s\n", tomlString(c.Name))
		pats := rawPatterns(c.Match)
		fmt.Fprintf(&b, "match = [%s]\n", strings.Join(pats, ", "))
		if len(c.Listen) > 0 {
			fmt.Fprintf(&b, "listen = [%s]\n", strings.Join(rawPatterns(c.Listen), ", "))
		}
		if c.Tenant != "" {
			fmt.Fprintf(&b, "tenant = %s\n", tomlString(c.Tenant))
		}
		writeLimits(&b, c)
	}
	return []byte(b.String())
}

// writeSettings writes the settings that differ from their defaults.
func writeSettings(b *strings.Builder, s *Settings) {
	if s.CgroupParent != "" {
		fmt.Fprintf(b, "cgroup_parent = %s\n", tomlString(s.CgroupParent))
	}
	if s.Track != intercept.TrackAccept {
		fmt.Fprintf(b, "track = %s\n", tomlString(s.Track.String()))
	}
	if s.Placement != intercept.PlaceProcess {
		fmt.Fprintf(b, "placement = %s\n", tomlString(s.Placement.String()))
	}
	if s.SniffTimeout != 0 {
		fmt.Fprintf(b, "sniff_timeout = %s\n", tomlString(s.SniffTimeout.String()))
	}
	if s.SniffBytes != 0 {
		fmt.Fprintf(b, "sniff_bytes = %d\n", s.SniffBytes)
	}
	if len(s.ProxyProtocol) > 0 {
		fmt.Fprintf(b, "proxy_protocol = [%s]\n", strings.Join(rawPatterns(s.ProxyProtocol), ", "))
	}
	writeShapeDevices(b, s.ShapeDevices)
}

// rawPatterns quotes patterns as the operator wrote them.
func rawPatterns(list []vhost.Pattern) []string {
	out := make([]string, len(list))
	for i, p := range list {
		raw := p.Raw
		if raw == "" {
			raw = p.Canonical()
		}
		out[i] = tomlString(raw)
	}
	return out
}

func writeLimits(b *strings.Builder, c *Class) {
	r := &c.Resources
	if r.CPUWeight != 0 {
		fmt.Fprintf(b, "cpu_weight = %d\n", r.CPUWeight)
	}
	if r.CPUQuotaPercent != 0 {
		// 'f' with the shortest precision reads back to the same float
		// and never uses an exponent, which "N%" does not allow.
		fmt.Fprintf(b, "cpu_max = \"%s%%\"\n", strconv.FormatFloat(r.CPUQuotaPercent, 'f', -1, 64))
	}
	if r.IOWeight != 0 {
		fmt.Fprintf(b, "io_weight = %d\n", r.IOWeight)
	}
	for _, f := range []struct {
		key    string
		get    func(d *cgroup.DeviceLimit) uint64
		format func(uint64) string
	}{
		{"io_read_bps", func(d *cgroup.DeviceLimit) uint64 { return d.ReadBPS }, formatSize},
		{"io_write_bps", func(d *cgroup.DeviceLimit) uint64 { return d.WriteBPS }, formatSize},
		{"io_read_iops", func(d *cgroup.DeviceLimit) uint64 { return d.ReadIOPS }, formatCount},
		{"io_write_iops", func(d *cgroup.DeviceLimit) uint64 { return d.WriteIOPS }, formatCount},
	} {
		var parts []string
		for i := range r.Devices {
			d := &r.Devices[i]
			if v := f.get(d); v != 0 {
				parts = append(parts, tomlString(devicePath(d))+" = "+f.format(v))
			}
		}
		if len(parts) > 0 {
			fmt.Fprintf(b, "%s = { %s }\n", f.key, strings.Join(parts, ", "))
		}
	}
	writeMemoryTasks(b, r)
	if c.DSCP >= 0 {
		name := DSCPName(c.DSCP)
		if _, err := strconv.Atoi(name); err != nil {
			name = tomlString(name)
		}
		fmt.Fprintf(b, "dscp = %s\n", name)
	}
	writeRates(b, c.Rates)
	a := &c.Admission
	if a.MaxConnections != 0 {
		fmt.Fprintf(b, "max_connections = %d\n", a.MaxConnections)
	}
	if a.MaxConnectionsPerIP != 0 {
		fmt.Fprintf(b, "max_connections_per_ip = %d\n", a.MaxConnectionsPerIP)
	}
	// Parse leaves the refusal keys at their defaults on a class that
	// never refuses, so only a capped class can need them.
	if a.Capped() && a.OverLimit != OverLimitRefuse {
		fmt.Fprintf(b, "over_limit = %s\n", tomlString(a.OverLimit))
	}
	if a.RefuseStatus != DefaultRefuseStatus {
		fmt.Fprintf(b, "refuse_status = %d\n", a.RefuseStatus)
	}
	if a.RetryAfter != DefaultRetryAfter {
		fmt.Fprintf(b, "retry_after = %d\n", a.RetryAfter)
	}
}

// devicePath is the device as the operator wrote it, or its numbers for a
// DeviceLimit built by hand.
func devicePath(d *cgroup.DeviceLimit) string {
	if d.Path != "" {
		return d.Path
	}
	return strconv.FormatInt(d.Major, 10) + ":" + strconv.FormatInt(d.Minor, 10)
}

// formatCount writes IOPS as plain numbers: "1K" operations reads oddly.
func formatCount(n uint64) string { return strconv.FormatUint(n, 10) }
