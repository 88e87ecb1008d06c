package policy

import (
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
)

// Bandwidth: egress_rate (a class's connections together, shaped by the
// kernel's traffic control on [settings] shape_devices) and
// connection_rate (each connection, paced by its socket), in bits per
// second with tc(8)'s units.

// Rates are a class's bandwidth limits in bits per second; 0 is none.
type Rates struct {
	// Egress (egress_rate) bounds what all the class's connections send
	// together, on the devices of Settings.ShapeDevices.
	Egress uint64
	// Connection (connection_rate) bounds what each of its connections
	// sends: the socket's SO_MAX_PACING_RATE, in bytes (Connection/8).
	Connection uint64
}

// rateKeys are the limit keys read here, in the order of the reference.
func rateKeys() []string { return []string{"egress_rate", "connection_rate"} }

func isRateKey(k string) bool { return k == "egress_rate" || k == "connection_rate" }

// Bounds of a rate. Less than 8 kbit/s (1000 bytes a second) makes a
// page take minutes and is far more likely a missing prefix ("10bit" for
// "10Mbit") than a plan; more than 10 Tbit/s is faster than any link.
const (
	minRate = 8_000
	maxRate = 10_000_000_000_000
	// maxShapeDevices bounds shape_devices: each is a qdisc to keep.
	maxShapeDevices = 64
)

// rateUnits are tc(8)'s (RATES), by lower-case spelling: bits with SI
// (1000) or IEC (1024) prefixes, and bytes per second, whose "B" must be
// written upper-case (rateUnit).
var rateUnits = map[string]uint64{
	"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12,
	"kibit": 1 << 10, "mibit": 1 << 20, "gibit": 1 << 30, "tibit": 1 << 40,
	"bps": 8, "kbps": 8e3, "mbps": 8e6, "gbps": 8e9, "tbps": 8e12,
	"kibps": 8 << 10, "mibps": 8 << 20, "gibps": 8 << 30, "tibps": 8 << 40,
}

const rateHint = `bits per second with a unit, as tc writes them: "500kbit", "40Mbit", "1Gbit" (bit, kbit, mbit, gbit, tbit; 1000-based, any case) or bytes per second with a capital B: "5MBps"`

// parseBitRate reads egress_rate or connection_rate: a string, a number
// and one of tc's units (rateUnits) with no space, case-insensitive except
// for the B of bytes: tc itself reads "mbps" as megabytes per second, and
// operators who write it mostly mean megabits, so a lower-case "bps" is
// refused as ambiguous. Fractions are allowed ("1.5Gbit") and rounded
// down to whole bits.
func parseBitRate(key string, v any) (uint64, error) {
	str, ok := v.(string)
	if !ok {
		if n, isInt := v.(int64); isInt {
			return 0, fmt.Errorf("%d has no unit; write the rate as a string with its unit, e.g. %s = %q (%s)", n, key, FormatBitRate(uint64(max(n, 0))), rateHint)
		}
		return 0, fmt.Errorf("is %s; write %s", typeName(v), rateHint)
	}
	if msg := commaProblem(str); msg != "" {
		return 0, errors.New(msg)
	}
	i := 0
	for i < len(str) && (str[i] >= '0' && str[i] <= '9' || str[i] == '.') {
		i++
	}
	num, unit := str[:i], str[i:]
	if !isDecimal(num) || len(num) > 30 {
		return 0, fmt.Errorf("%q is not a rate; write %s", str, rateHint)
	}
	mult, err := rateUnit(num, unit)
	if err != nil {
		return 0, err
	}
	r, _ := new(big.Rat).SetString(num)
	r.Mul(r, new(big.Rat).SetInt(new(big.Int).SetUint64(mult)))
	n := new(big.Int).Quo(r.Num(), r.Denom())
	switch {
	case n.Sign() == 0:
		return 0, fmt.Errorf("%q is no rate; to leave the class unlimited, leave %s out", str, key)
	case n.Cmp(big.NewInt(minRate)) < 0:
		return 0, fmt.Errorf("%q is %s bit/s, less than the least, 8kbit (1000 bytes a second); did you mean %q?", str, n, num+"Mbit")
	case n.Cmp(new(big.Int).SetUint64(maxRate)) > 0:
		return 0, fmt.Errorf("%q is more than the most, 10Tbit", str)
	}
	return n.Uint64(), nil
}

// ratePrefixes are the prefixes of rateUnits, by lower-case spelling:
// how a rate with each is best written in bits and in bytes, and the
// prefix's name.
var ratePrefixes = map[string]struct{ bits, bytes, name string }{
	"":   {"bit", "Bps", ""},
	"k":  {"kbit", "KBps", "kilo"},
	"m":  {"Mbit", "MBps", "mega"},
	"g":  {"Gbit", "GBps", "giga"},
	"t":  {"Tbit", "TBps", "tera"},
	"ki": {"Kibit", "KiBps", "kibi"},
	"mi": {"Mibit", "MiBps", "mebi"},
	"gi": {"Gibit", "GiBps", "gibi"},
	"ti": {"Tibit", "TiBps", "tebi"},
}

// rateUnit returns the bits per second of the unit written after num, or
// says what is wrong with it and how to write what was likely meant.
func rateUnit(num, unit string) (uint64, error) {
	written := num + unit
	lower := strings.ToLower(unit)
	// either says how to write num with prefix p in bits and in bytes.
	either := func(p string) string {
		pr := ratePrefixes[p]
		return fmt.Sprintf("write %q for %s %sbits per second or %q for %s %sbytes per second", num+pr.bits, num, pr.name, num+pr.bytes, num, pr.name)
	}
	if mult, ok := rateUnits[lower]; ok {
		if !strings.HasSuffix(lower, "bps") || unit[len(unit)-3] == 'B' {
			return mult, nil
		}
		return 0, fmt.Errorf("%q is ambiguous: tc reads %q as bytes per second, and it is often meant as bits; %s", written, unit, either(strings.TrimSuffix(lower, "bps")))
	}
	if before, ok := strings.CutSuffix(lower, "/s"); ok && rateUnits[before] != 0 {
		return 0, fmt.Errorf("%q: write the unit without /s, as tc does: %q", written, strings.TrimSuffix(written, "/s"))
	}
	switch {
	case unit == "":
		return 0, fmt.Errorf("%q has no unit; write %s", written, rateHint)
	case strings.TrimSpace(unit) != unit:
		return 0, fmt.Errorf("%q: write the number and its unit without a space: %q", written, num+strings.TrimSpace(unit))
	case unit == "%":
		return 0, fmt.Errorf("%q: a share of the link's speed is not supported; write a rate such as \"40Mbit\"", written)
	}
	if p, isByte := strings.CutSuffix(lower, "b"); ratePrefixes[p].name != "" {
		if isByte && strings.HasSuffix(unit, "B") {
			// "10MB", "10MiB": a size, not a rate.
			return 0, fmt.Errorf("%q is a size, not a rate; %s", written, either(p))
		}
		// "10M", "10Mb", "10mb": bits or bytes?
		return 0, fmt.Errorf("%q is ambiguous; %s", written, either(p))
	}
	return 0, fmt.Errorf("unknown unit %q in %q; write %s", unit, written, rateHint)
}

// FormatBitRate writes a rate of n bits per second in the largest SI unit
// that keeps it whole, as Marshal writes it back and the table takes it:
// "40Mbit", "1500kbit", "999bit".
func FormatBitRate(n uint64) string {
	for _, u := range []struct {
		suffix string
		mult   uint64
	}{{"Tbit", 1e12}, {"Gbit", 1e9}, {"Mbit", 1e6}, {"kbit", 1e3}} {
		if n >= u.mult && n%u.mult == 0 {
			return strconv.FormatUint(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatUint(n, 10) + "bit"
}

// maxEgressClasses is how many classes can have an egress_rate: each is
// an HTB class, numbered in 16 bits (package shaper, MaxClasses).
const maxEgressClasses = 0xfffe

// rateKey reads egress_rate or connection_rate into r.
func (p *parser) rateKey(s scope, key, k string, v any, r *Rates) {
	n, err := parseBitRate(k, v)
	if err != nil {
		p.valueProblem(s, key, "%v", err)
		return
	}
	if k == "egress_rate" {
		r.Egress = n
	} else {
		r.Connection = n
	}
}

// shapeDevices reads [settings] shape_devices: network interface names,
// as the kernel takes them (dev_valid_name: 1 to 15 bytes, not "." or
// "..", no "/", ":" or white space). Whether the device exists is asked
// of the config's NetDeviceCheck, when it has one (vhqos check); else it
// is for vhqos run to find out. A name listed twice is harmless and kept
// once; an empty list is none.
func (p *parser) shapeDevices(s scope, key string, v any) []string {
	const example = `shape_devices = ["eth0"]`
	list, ok := v.([]any)
	if !ok {
		if str, isStr := v.(string); isStr {
			p.valueProblem(s, key, "must be a list, even of one device: shape_devices = [%s]", tomlString(str))
		} else {
			p.valueProblem(s, key, "is %s; write a list of network devices, e.g. %s", typeName(v), example)
		}
		return nil
	}
	if len(list) > maxShapeDevices {
		p.valueProblem(s, key, "lists %d devices; at most %d", len(list), maxShapeDevices)
		return nil
	}
	var out []string
	for i, item := range list {
		ikey := key + "[" + strconv.Itoa(i) + "]"
		name, ok := item.(string)
		switch {
		case !ok:
			p.valueProblem(s, ikey, "is %s; each device is its interface name as a string, e.g. %s", typeName(item), example)
		case name == "" || len(name) > 15 || name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n\r\v\f"):
			p.valueProblem(s, ikey, "%q is not a network interface name (1 to 15 bytes, no '/', ':' or spaces; ip link lists the devices), e.g. %s", name, example)
		case !slices.Contains(out, name):
			if p.cfg.netDevice != nil {
				if err := p.cfg.netDevice(name); err != nil {
					p.valueProblem(s, ikey, "%v", err)
				}
			}
			out = append(out, name)
		}
	}
	return out
}

// maxEgressDepth is how many HTB classes nest, from one under the root to
// a site's (package shaper, MaxDepth): a site's class may be inside at
// most maxEgressDepth-1 tenants with an egress_rate.
const maxEgressDepth = 8

// rateChecks finds problems of the rates across the table: an egress_rate
// with no device to shape on, more HTB classes than can be numbered, and
// tenants with an egress_rate nested deeper than HTB nests classes. The
// classes are those package shaper is given (cmd/vhqos): one for each
// class and tenant with an egress_rate, and one for each site inside a
// tenant with one, whether the site has its own or not.
func (p *parser) rateChecks(t *Table) {
	n := 0
	count := func(s scope, key string) {
		n++
		if n == maxEgressClasses+1 {
			p.valueProblem(s, key, "makes %d classes with an egress_rate (each site inside a tenant with one counts); at most %d", n, maxEgressClasses)
		}
	}
	// rated lists the tenants with an egress_rate among the tenant named
	// tenant and those it is inside, outermost first.
	rated := func(tenant string) []string {
		var names []string
		for _, at := range t.Enclosing(tenant) {
			if at.Egress != 0 {
				names = append([]string{at.Name}, names...)
			}
		}
		return names
	}
	noDevices := len(t.Settings.ShapeDevices) == 0
	const needDevices = "needs the devices its traffic leaves by: add shape_devices to [settings], e.g. shape_devices = [\"eth0\"] (see \"Bandwidth\" in the reference)"
	for i := range t.Tenants {
		tn := &t.Tenants[i]
		if tn.Egress == 0 {
			continue
		}
		s := scope{prefix: "tenant[" + strconv.Itoa(i) + "]", where: fmt.Sprintf("tenant %q (tenant[%d])", tn.Name, i), vhost: -1}
		key := s.key("egress_rate")
		if noDevices {
			p.valueProblem(s, key, "%s", needDevices)
		}
		count(s, key)
		if names := rated(tn.Name); len(names) == maxEgressDepth {
			p.valueProblem(s, key, "tenants with an egress_rate are nested %d deep here (%s); HTB nests at most %d such classes above a site's class: leave egress_rate out of one of them", len(names), strings.Join(names, " -> "), maxEgressDepth-1)
		}
	}
	for i, c := range append([]Class{t.Defaults}, t.VHosts...) {
		s := scope{prefix: "defaults", where: "[defaults]", vhost: -1}
		if i > 0 {
			s = scope{prefix: "vhost[" + strconv.Itoa(i-1) + "]", vhost: i - 1}
			s.where = fmt.Sprintf("vhost %q (%s)", c.Name, s.prefix)
		}
		switch {
		case c.Rates.Egress != 0:
			if noDevices {
				p.valueProblem(s, s.key("egress_rate"), "%s", needDevices)
			}
			count(s, s.key("egress_rate"))
		case t.ShapingTenant(c.Tenant) != nil:
			count(s, s.key("tenant"))
		}
	}
}

// writeRates writes a class's rates for Marshal.
func writeRates(b *strings.Builder, r Rates) {
	if r.Egress != 0 {
		fmt.Fprintf(b, "egress_rate = %q\n", FormatBitRate(r.Egress))
	}
	if r.Connection != 0 {
		fmt.Fprintf(b, "connection_rate = %q\n", FormatBitRate(r.Connection))
	}
}

// writeShapeDevices writes [settings] shape_devices for Marshal.
func writeShapeDevices(b *strings.Builder, devices []string) {
	if len(devices) == 0 {
		return
	}
	quoted := make([]string, len(devices))
	for i, d := range devices {
		quoted[i] = tomlString(d)
	}
	fmt.Fprintf(b, "shape_devices = [%s]\n", strings.Join(quoted, ", "))
}
