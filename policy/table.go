package policy

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/vhqos/vhqos/cgroup"
	"github.com/vhqos/vhqos/vhost"
	"golang.org/x/sys/unix"
)

// Table is a validated QoS table. It is never changed after Parse; a new
// file makes a new Table.
type Table struct {
	Settings Settings
	// Defaults applies to connections that match no vhost.
	Defaults Class
	// VHosts are in file order; Matcher rules index into them.
	VHosts  []Class
	Matcher *vhost.Matcher
	// Source is the file the table came from.
	Source string
}

// Settings are table-wide options.
type Settings struct {
	// CgroupParent is the absolute cgroup path vhqos nests its cgroups
	// under; "" means vhqos's own cgroup.
	CgroupParent string
}

// Class is one vhost, or the defaults.
type Class struct {
	Name      string
	Match     []vhost.Pattern
	Resources cgroup.Resources
	// DSCP is 0..63, or -1 to leave sockets as the server made them.
	DSCP int
}

// DefaultsName is the name of the class of connections matching no vhost.
const DefaultsName = "default"

// ClassifyAddr returns the class of a connection by its local address.
func (t *Table) ClassifyAddr(local netip.AddrPort) *Class {
	if i := t.Matcher.MatchAddr(local); i >= 0 {
		return &t.VHosts[i]
	}
	return &t.Defaults
}

// Option changes how a table is read.
type Option func(*parser)

// WithDeviceLookup replaces how block device paths are resolved to
// major:minor numbers (tests use it for devices this machine lacks).
func WithDeviceLookup(lookup func(path string) (major, minor int64, err error)) Option {
	return func(p *parser) { p.lookupDevice = lookup }
}

// Load reads and parses the QoS table at path.
func Load(path string, opts ...Option) (*Table, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the QoS table: %w", err)
	}
	return Parse(path, data, opts...)
}

// Parse validates a QoS table completely. A table with any problem is
// refused whole; the error is Problems, listing every problem found.
func Parse(filename string, data []byte, opts ...Option) (*Table, error) {
	p := &parser{file: filename, data: data, lookupDevice: statDevice}
	for _, o := range opts {
		o(p)
	}
	var doc map[string]any
	if err := toml.Unmarshal(data, &doc); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			line, col := de.Position()
			return nil, Problems{{File: filename, Line: line, Column: col, Key: strings.Join(de.Key(), "."), Msg: "TOML syntax: " + de.Error()}}
		}
		return nil, Problems{{File: filename, Msg: "TOML syntax: " + err.Error()}}
	}
	p.pos = positions(data)
	t := p.table(doc)
	if len(p.problems) > 0 {
		return nil, p.problems.sorted()
	}
	t.Source = filename
	return t, nil
}

type parser struct {
	file         string
	data         []byte
	pos          map[string]position
	problems     Problems
	lookupDevice func(string) (int64, int64, error)
}

func (p *parser) add(key, where, format string, args ...any) {
	pos, ok := p.pos[key]
	if !ok {
		// A missing key: point at its table.
		if i := strings.LastIndexByte(key, '.'); i > 0 {
			pos, ok = p.pos[key[:i]]
		}
	}
	line, col := p.lineCol(pos, ok)
	p.problems = append(p.problems, Problem{File: p.file, Line: line, Column: col, Key: key, Where: where, Msg: fmt.Sprintf(format, args...)})
}

func (p *parser) lineCol(pos position, ok bool) (int, int) {
	if !ok || pos.offset < 0 || pos.offset > len(p.data) {
		return 0, 0
	}
	return lineCol(p.data, pos.offset)
}

var (
	topKeys      = []string{"settings", "defaults", "vhost"}
	settingsKeys = []string{"cgroup_parent"}
	limitKeys    = []string{"cpu_weight", "cpu_max", "io_weight", "io_read_bps", "io_write_bps", "io_read_iops", "io_write_iops", "dscp"}
	vhostKeys    = append([]string{"name", "match"}, limitKeys...)
	namePattern  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
	reserved     = map[string]bool{DefaultsName: true, "home": true, "supervisor": true}
)

func (p *parser) table(doc map[string]any) *Table {
	t := &Table{Defaults: Class{Name: DefaultsName, DSCP: -1}}
	for _, k := range sortedKeys(doc) {
		if !contains(topKeys, k) {
			p.add(k, "", "unknown section%s (known: [settings], [defaults], [[vhost]])", didYouMean(k, topKeys))
		}
	}
	if v, ok := doc["settings"]; ok {
		if m, ok := v.(map[string]any); ok {
			p.settings(m, &t.Settings)
		} else {
			p.add("settings", "", "must be a table: [settings]")
		}
	}
	if v, ok := doc["defaults"]; ok {
		if m, ok := v.(map[string]any); ok {
			p.class(m, "defaults", "[defaults]", limitKeys, &t.Defaults)
		} else {
			p.add("defaults", "", "must be a table: [defaults]")
		}
	}
	if v, ok := doc["vhost"]; ok {
		list, ok := v.([]any)
		if !ok {
			p.add("vhost", "", "each vhost is a [[vhost]] table")
		}
		for i, item := range list {
			key := "vhost[" + strconv.Itoa(i) + "]"
			m, ok := item.(map[string]any)
			if !ok {
				p.add(key, "", "each vhost is a [[vhost]] table")
				continue
			}
			c := Class{DSCP: -1}
			p.class(m, key, "", vhostKeys, &c)
			t.VHosts = append(t.VHosts, c)
		}
	}
	p.crossCheck(t)
	var rules []vhost.Rule
	for i, c := range t.VHosts {
		for _, pat := range c.Match {
			rules = append(rules, vhost.Rule{VHost: i, Pattern: pat})
		}
	}
	t.Matcher = vhost.NewMatcher(rules)
	return t
}

func (p *parser) settings(m map[string]any, s *Settings) {
	for _, k := range sortedKeys(m) {
		key := "settings." + k
		switch k {
		case "cgroup_parent":
			v, ok := m[k].(string)
			if !ok {
				p.add(key, "[settings]", "must be a string, e.g. \"/vhqos.slice\"")
				continue
			}
			if v != "" && (!strings.HasPrefix(v, "/") || path.Clean(v) != v || strings.Contains(v, "/../")) {
				p.add(key, "[settings]", "%q: write an absolute, clean cgroup path such as \"/vhqos.slice\", or \"\" for vhqos's own cgroup", v)
				continue
			}
			s.CgroupParent = v
		default:
			p.add(key, "[settings]", "unknown key%s (known: %s)", didYouMean(k, settingsKeys), strings.Join(settingsKeys, ", "))
		}
	}
}

// class reads the keys of a vhost or of the defaults.
func (p *parser) class(m map[string]any, prefix, where string, known []string, c *Class) {
	if where == "" {
		where = prefix
		if name, ok := m["name"].(string); ok && name != "" {
			where = fmt.Sprintf("vhost %q", name)
		}
	}
	key := func(k string) string { return prefix + "." + k }
	if contains(known, "name") {
		if _, ok := m["name"]; !ok {
			p.add(key("name"), where, "missing: every vhost needs a name")
		}
		if _, ok := m["match"]; !ok {
			p.add(key("match"), where, "missing: list the addresses this vhost serves, e.g. match = [\"192.0.2.10\"]")
		}
	}
	for _, k := range sortedKeys(m) {
		v := m[k]
		switch k {
		case "name":
			s, ok := v.(string)
			switch {
			case !ok:
				p.add(key(k), where, "must be a string")
			case !namePattern.MatchString(s):
				p.add(key(k), where, "%q: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit (it names a cgroup)", s)
			case reserved[s]:
				p.add(key(k), where, "%q is reserved for vhqos's own cgroups; pick another name", s)
			default:
				c.Name = s
			}
		case "match":
			p.match(v, key(k), where, c)
		case "cpu_weight":
			if n, ok := p.intIn(v, key(k), where, 1, 10000, "like systemd's CPUWeight="); ok {
				c.Resources.CPUWeight = uint64(n)
			}
		case "io_weight":
			if n, ok := p.intIn(v, key(k), where, 1, 10000, "like systemd's IOWeight="); ok {
				c.Resources.IOWeight = uint64(n)
			}
		case "cpu_max":
			if pct, ok := p.percent(v, key(k), where); ok {
				c.Resources.CPUQuotaPercent = pct
			}
		case "io_read_bps", "io_write_bps", "io_read_iops", "io_write_iops":
			p.deviceLimits(v, key(k), where, k, c)
		case "dscp":
			if d, ok := p.dscp(v, key(k), where); ok {
				c.DSCP = d
			}
		default:
			p.add(key(k), where, "unknown key%s (known: %s)", didYouMean(k, known), strings.Join(known, ", "))
		}
	}
	sort.Slice(c.Resources.Devices, func(i, j int) bool { return c.Resources.Devices[i].Path < c.Resources.Devices[j].Path })
}

func (p *parser) match(v any, key, where string, c *Class) {
	list, ok := v.([]any)
	if !ok {
		p.add(key, where, "must be a list of patterns, e.g. [\"192.0.2.10\", \"10.0.0.0/24\"]")
		return
	}
	if len(list) == 0 {
		p.add(key, where, "is empty: a vhost that matches nothing never applies")
		return
	}
	for _, item := range list {
		s, ok := item.(string)
		if !ok {
			p.add(key, where, "%v: each pattern is a string", item)
			continue
		}
		pat, err := vhost.ParsePattern(s)
		if err != nil {
			p.add(key, where, "%v", err)
			continue
		}
		if pat.IsName() {
			p.add(key, where, "%q: matching by host name (HTTP Host, TLS SNI) is not supported yet; match by address (IP, IP:port, CIDR, *:port)", s)
			continue
		}
		c.Match = append(c.Match, pat)
	}
}

func (p *parser) intIn(v any, key, where string, lo, hi int64, hint string) (int64, bool) {
	n, ok := v.(int64)
	if !ok {
		p.add(key, where, "must be a whole number from %d to %d (%s)", lo, hi, hint)
		return 0, false
	}
	if n < lo || n > hi {
		p.add(key, where, "%d is out of range: use %d..%d (%s)", n, lo, hi, hint)
		return 0, false
	}
	return n, true
}

func (p *parser) percent(v any, key, where string) (float64, bool) {
	s, ok := v.(string)
	if !ok || !strings.HasSuffix(s, "%") {
		p.add(key, where, "%v: write a percentage of one CPU as a string, e.g. \"50%%\" or \"150%%\" (like CPUQuota=)", v)
		return 0, false
	}
	f, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
	if err != nil || math.IsNaN(f) {
		p.add(key, where, "%q: not a number followed by %%, e.g. \"50%%\"", s)
		return 0, false
	}
	if f <= 0 || f > 100000 {
		p.add(key, where, "%q is out of range: use more than 0%% and at most 100000%%", s)
		return 0, false
	}
	return f, true
}

var dscpNames = func() map[string]int {
	m := map[string]int{"EF": 46, "VOICE-ADMIT": 44}
	for i := 0; i <= 7; i++ {
		m["CS"+strconv.Itoa(i)] = i << 3
	}
	for x := 1; x <= 4; x++ {
		for y := 1; y <= 3; y++ {
			m[fmt.Sprintf("AF%d%d", x, y)] = x<<3 | y<<1
		}
	}
	return m
}()

// DSCPName returns the usual name of a code point, or its number.
func DSCPName(d int) string {
	best := ""
	for name, v := range dscpNames {
		if v == d && (best == "" || name < best) {
			best = name
		}
	}
	if best == "" {
		return strconv.Itoa(d)
	}
	return best
}

func (p *parser) dscp(v any, key, where string) (int, bool) {
	switch d := v.(type) {
	case int64:
		if d < 0 || d > 63 {
			p.add(key, where, "%d is out of range: a DSCP is 0..63", d)
			return 0, false
		}
		return int(d), true
	case string:
		if n, ok := dscpNames[strings.ToUpper(d)]; ok {
			return n, true
		}
		p.add(key, where, "unknown DSCP name %q; use CS0-CS7, AF11-AF43, EF, VOICE-ADMIT or a number 0..63", d)
	default:
		p.add(key, where, "write a DSCP name such as \"AF41\" or a number 0..63")
	}
	return 0, false
}

func (p *parser) deviceLimits(v any, key, where, which string, c *Class) {
	m, ok := v.(map[string]any)
	if !ok {
		p.add(key, where, "must map devices to limits, e.g. { \"/dev/vda\" = \"50M\" }")
		return
	}
	iops := strings.HasSuffix(which, "_iops")
	for _, dev := range sortedKeys(m) {
		dkey := key + "." + dev
		n, err := parseSize(m[dev], iops)
		if err != nil {
			p.add(dkey, where, "%s %q: %v", which, dev, err)
			continue
		}
		major, minor, err := p.device(dev)
		if err != nil {
			p.add(dkey, where, "%v", err)
			continue
		}
		limit := findDevice(&c.Resources, dev, major, minor)
		switch which {
		case "io_read_bps":
			limit.ReadBPS = n
		case "io_write_bps":
			limit.WriteBPS = n
		case "io_read_iops":
			limit.ReadIOPS = n
		case "io_write_iops":
			limit.WriteIOPS = n
		}
	}
}

func findDevice(r *cgroup.Resources, path string, major, minor int64) *cgroup.DeviceLimit {
	for i := range r.Devices {
		if r.Devices[i].Major == major && r.Devices[i].Minor == minor {
			return &r.Devices[i]
		}
	}
	r.Devices = append(r.Devices, cgroup.DeviceLimit{Path: path, Major: major, Minor: minor})
	return &r.Devices[len(r.Devices)-1]
}

func (p *parser) device(dev string) (int64, int64, error) {
	if a, b, ok := strings.Cut(dev, ":"); ok {
		major, err1 := strconv.ParseInt(a, 10, 64)
		minor, err2 := strconv.ParseInt(b, 10, 64)
		if err1 != nil || err2 != nil || major < 0 || minor < 0 {
			return 0, 0, fmt.Errorf("device %q: write a block device path such as /dev/vda or MAJOR:MINOR such as 8:0", dev)
		}
		return major, minor, nil
	}
	major, minor, err := p.lookupDevice(dev)
	if err != nil {
		return 0, 0, fmt.Errorf("unknown device %q: %v (list block devices with lsblk)", dev, err)
	}
	return major, minor, nil
}

func statDevice(path string) (int64, int64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, 0, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return 0, 0, errors.New("not a block device")
	}
	return int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev)), nil
}

// parseSize reads a byte count (K, M, G, T suffixes, 1024-based like
// systemd) or, for IOPS, a plain count with the same suffixes.
func parseSize(v any, iops bool) (uint64, error) {
	unit := "bytes per second, e.g. \"50M\" or 1048576"
	if iops {
		unit = "operations per second, e.g. 1000 or \"2K\""
	}
	switch n := v.(type) {
	case int64:
		if n <= 0 {
			return 0, fmt.Errorf("%d: must be more than 0 (%s)", n, unit)
		}
		return uint64(n), nil
	case string:
		s := strings.TrimSpace(n)
		mult := uint64(1)
		if s != "" {
			switch strings.ToUpper(s[len(s)-1:]) {
			case "K":
				mult = 1 << 10
			case "M":
				mult = 1 << 20
			case "G":
				mult = 1 << 30
			case "T":
				mult = 1 << 40
			}
			if mult > 1 {
				s = s[:len(s)-1]
			}
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || f <= 0 || math.IsInf(f, 0) || f*float64(mult) > math.MaxInt64 {
			return 0, fmt.Errorf("%q is not a positive size (%s)", n, unit)
		}
		return uint64(f * float64(mult)), nil
	}
	return 0, fmt.Errorf("write %s", unit)
}

// crossCheck finds problems between vhosts: duplicate names, a pattern
// claimed twice.
func (p *parser) crossCheck(t *Table) {
	names := map[string]int{}
	owners := map[string]int{}
	for i, c := range t.VHosts {
		key := "vhost[" + strconv.Itoa(i) + "]"
		if c.Name != "" {
			if j, dup := names[c.Name]; dup {
				pos, ok := p.pos["vhost["+strconv.Itoa(j)+"].name"]
				line, _ := p.lineCol(pos, ok)
				p.add(key+".name", fmt.Sprintf("vhost %q", c.Name), "duplicate vhost name; the first is on line %d", line)
			} else {
				names[c.Name] = i
			}
		}
		for _, pat := range c.Match {
			canon := canonical(pat)
			if j, dup := owners[canon]; dup && j != i {
				p.add(key+".match", fmt.Sprintf("vhost %q", c.Name), "%q is already matched by vhost %q; a connection can belong to one vhost only", pat.Raw, t.VHosts[j].Name)
			} else {
				owners[canon] = i
			}
		}
	}
}

func canonical(p vhost.Pattern) string {
	return fmt.Sprintf("%d|%s|%d|%s", p.Kind, p.Prefix, p.Port, p.Name)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
