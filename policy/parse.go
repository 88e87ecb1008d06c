package policy

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vhqos/vhqos/cgroup"
	"github.com/vhqos/vhqos/intercept"
	"github.com/vhqos/vhqos/vhost"
)

// The keys of each section. Functions rather than package variables: the
// lists are handed to callers that could otherwise change them.
func topKeys() []string { return []string{"settings", "defaults", "tenant", "vhost"} }
func settingsKeys() []string {
	return []string{"cgroup_parent", "track", "placement", "sniff_timeout", "sniff_bytes", "proxy_protocol", "shape_devices"}
}
func limitKeys() []string {
	return []string{"cpu_weight", "cpu_max", "io_weight", "io_read_bps", "io_write_bps", "io_read_iops", "io_write_iops",
		"memory_max", "memory_high", "tasks_max", "dscp", "egress_rate", "connection_rate", "max_connections", "max_connections_per_ip", "over_limit", "refuse_status", "retry_after"}
}
func vhostKeys() []string {
	return append(append([]string{"name", "match", "listen"}, limitKeys()...), "tenant")
}

func isLimitKey(k string) bool {
	switch k {
	case "cpu_weight", "cpu_max", "io_weight", "io_read_bps", "io_write_bps", "io_read_iops", "io_write_iops", "dscp":
		return true
	}
	return isMemoryTaskKey(k) || isRateKey(k) || isAdmissionKey(k)
}

// parser turns the decoded document into a Table, collecting every problem
// instead of stopping at the first: an operator fixing a file wants the
// whole list in one go.
type parser struct {
	file     string
	data     []byte
	cfg      config
	problems Problems
	// atValue says, per problem, whether it points at the value or the key.
	atValue []bool
	// pos is built only when there is a problem to place: a good table,
	// the common case on every reload, never pays for it.
	pos map[string]position
	// matchIdx holds, per vhost, the file index of each pattern kept in
	// its Match (patterns with problems are dropped, so indices shift).
	matchIdx [][]int
	// tenants are the [[tenant]] sections by lower-case name, read before
	// the vhosts that name them.
	tenants map[string]*parsedTenant
	// inherited holds, per vhost, the keys it took from a tenant's
	// [tenant.defaults] and where they are written.
	inherited []map[string]inheritedKey
	// vhostNames are the names the [[vhost]] sections give, as written,
	// for a tenant key that names a vhost instead of a tenant.
	vhostNames []string
}

// scope is the section being read: its path prefix and how messages name it.
type scope struct {
	prefix string // "vhost[1]", "defaults", "settings" or "" (top level)
	where  string // `vhost "shop" (vhost[1])`, "[defaults]", ...
	vhost  int    // index of the vhost, -1 elsewhere
}

func (s scope) key(parts ...string) string { return joinPath(s.prefix, parts...) }

// valueProblem records a problem about the value at key and will point at
// the value (what to edit); keyProblem points at the key (what to remove or
// rename). A key not in the file (a missing one) points at its section.
func (p *parser) valueProblem(s scope, key, format string, args ...any) {
	p.addAt(s, key, true, format, args...)
}

func (p *parser) keyProblem(s scope, key, format string, args ...any) {
	p.addAt(s, key, false, format, args...)
}

// keyWarning is keyProblem for a problem that does not stop the table.
func (p *parser) keyWarning(s scope, key, format string, args ...any) {
	p.addAt(s, key, false, format, args...)
	p.problems[len(p.problems)-1].Warning = true
}

// valueWarning is valueProblem for a problem that does not stop the table.
func (p *parser) valueWarning(s scope, key, format string, args ...any) {
	p.addAt(s, key, true, format, args...)
	p.problems[len(p.problems)-1].Warning = true
}

// hasError reports whether an error (not a warning) was found at key.
func (p *parser) hasError(key string) bool {
	for _, pr := range p.problems {
		if !pr.Warning && pr.Key == key {
			return true
		}
	}
	return false
}

func (p *parser) addAt(s scope, key string, atValue bool, format string, args ...any) {
	p.problems = append(p.problems, Problem{
		File: p.file, Key: key, Where: s.where,
		Msg: fmt.Sprintf(format, args...),
	})
	p.atValue = append(p.atValue, atValue)
}

// errorCount counts the problems that are not warnings.
func (p *parser) errorCount() int {
	n := 0
	for _, pr := range p.problems {
		if !pr.Warning {
			n++
		}
	}
	return n
}

// placeProblems gives every problem its line and column; a site's key
// taken from a tenant's [tenant.defaults] is placed where it is written
// (placeInherited).
func (p *parser) placeProblems() {
	seen := map[[3]string]bool{}
	for i := range p.problems {
		pr := &p.problems[i]
		pr.Line, pr.Column = p.locate(pr.Key, p.atValue[i])
		seen[[3]string{strconv.Itoa(pr.Line), strconv.Itoa(pr.Column), pr.Msg}] = true
	}
	kept, atValue := p.problems[:0], p.atValue[:0]
	for i := range p.problems {
		if p.placeInherited(i, seen) {
			kept, atValue = append(kept, p.problems[i]), append(atValue, p.atValue[i])
		}
	}
	p.problems, p.atValue = kept, atValue
}

func (p *parser) locate(key string, atValue bool) (line, col int) {
	if p.pos == nil {
		p.pos = positions(p.data)
	}
	for k := key; k != ""; k = parentPath(k) {
		pos, ok := p.pos[k]
		if !ok {
			continue
		}
		off := pos.key
		if atValue && pos.val >= 0 {
			off = pos.val
		}
		if off >= 0 && off <= len(p.data) {
			return lineCol(p.data, off)
		}
	}
	return 0, 0
}

// line is the line a key is written on, for messages that refer to a
// second place ("the first is on line 4").
func (p *parser) line(key string) int {
	l, _ := p.locate(key, false)
	return l
}

func (p *parser) table(doc map[string]any) *Table {
	t := &Table{Defaults: newClass()}
	t.Defaults.Name = DefaultsName
	top := scope{vhost: -1}
	if list, ok := doc["vhost"].([]any); ok {
		for _, item := range list {
			if m, ok := item.(map[string]any); ok {
				if name, ok := m["name"].(string); ok && name != "" {
					p.vhostNames = append(p.vhostNames, name)
				}
			}
		}
	}
	for _, k := range sortedKeys(doc) {
		switch k {
		case "settings":
			if m, ok := doc[k].(map[string]any); ok {
				p.settings(m, &t.Settings)
			} else {
				p.keyProblem(top, k, "must be a section: write [settings] on a line of its own, then its keys")
			}
		case "defaults":
			if m, ok := doc[k].(map[string]any); ok {
				p.class(m, scope{prefix: "defaults", where: "[defaults]", vhost: -1}, &t.Defaults)
			} else {
				p.keyProblem(top, k, "must be a section: write [defaults] (single brackets) on a line of its own, then its keys")
			}
		case "tenant":
			p.tenants = p.readTenants(doc[k], t)
		case "vhost":
			p.vhosts(doc[k], t)
		default:
			p.keyProblem(top, joinPath("", k), "%s", unknownTopKey(k))
		}
	}
	p.crossCheck(t)
	p.rateChecks(t)
	p.tenantBounds(t)
	p.admissions(t)
	if p.errorCount() > 0 {
		return t
	}
	var rules []vhost.Rule
	for i, c := range t.VHosts {
		for _, pat := range c.Match {
			rules = append(rules, vhost.Rule{VHost: i, Pattern: pat, Listen: c.Listen})
		}
	}
	t.Matcher = vhost.NewMatcher(rules)
	t.proxy = newProxyMatcher(t.Settings.ProxyProtocol)
	return t
}

func unknownTopKey(k string) string {
	switch {
	case isLimitKey(k) || k == "name" || k == "match":
		return "a key above the first [section] belongs to no section; put it under [defaults] or a [[vhost]]"
	case slices.Contains(settingsKeys(), k):
		return "belongs in [settings]: write [settings] on the line above it"
	}
	return "unknown section" + didYouMean(k, topKeys()) + " Sections are [settings], [defaults], [[tenant]] and [[vhost]]"
}

func (p *parser) vhosts(v any, t *Table) {
	list, ok := v.([]any)
	if !ok {
		p.keyProblem(scope{vhost: -1}, "vhost", "write [[vhost]] with double brackets: every vhost is one entry in a list of vhosts")
		return
	}
	for i, item := range list {
		s := scope{prefix: "vhost[" + strconv.Itoa(i) + "]", vhost: i}
		s.where = s.prefix
		p.matchIdx = append(p.matchIdx, nil)
		p.inherited = append(p.inherited, nil)
		m, ok := item.(map[string]any)
		if !ok {
			p.keyProblem(scope{vhost: -1}, s.prefix, "each vhost is a [[vhost]] section with name = and match =")
			t.VHosts = append(t.VHosts, newClass())
			continue
		}
		if name, ok := m["name"].(string); ok && name != "" {
			s.where = fmt.Sprintf("vhost %q (%s)", name, s.prefix)
		}
		if tenant, ok := m["tenant"].(string); ok {
			m, p.inherited[i] = withTenantDefaults(m, tenant, t, p.tenants)
		}
		c := newClass()
		p.class(m, s, &c)
		t.VHosts = append(t.VHosts, c)
	}
}

func (p *parser) settings(m map[string]any, st *Settings) {
	s := scope{prefix: "settings", where: "[settings]", vhost: -1}
	for _, k := range sortedKeys(m) {
		key := s.key(k)
		switch {
		case k == "cgroup_parent":
			if v, ok := p.cgroupParent(s, key, m[k]); ok {
				st.CgroupParent = v
			}
		case k == "track":
			switch v := m[k].(type) {
			case string:
				if t, err := intercept.ParseTrack(v); err == nil {
					st.Track = t
				} else {
					p.valueProblem(s, key, "%q is not a tracking mode; use \"accept\" (prefork servers), \"fork\" (servers that fork a child per connection: inetd, socat fork) or \"full\" (also follows reads)", v)
				}
			default:
				p.valueProblem(s, key, "is %s; write \"accept\", \"fork\" or \"full\"", typeName(v))
			}
		case k == "placement":
			switch v := m[k].(type) {
			case string:
				if pl, err := intercept.ParsePlacement(v); err == nil {
					st.Placement = pl
				} else {
					p.valueProblem(s, key, "%q is not a placement; use \"process\" (move the process that serves a connection) or \"thread\" (multi-threaded servers: move the thread that reads it)", v)
				}
			default:
				p.valueProblem(s, key, "is %s; write \"process\" or \"thread\"", typeName(v))
			}
		case k == "sniff_timeout":
			if d, ok := p.duration(s, key, m[k], minSniffTimeout, maxSniffTimeout); ok {
				st.SniffTimeout = d
			}
		case k == "sniff_bytes":
			if n, ok := p.intIn(s, key, m[k], minSniffBytes, maxSniffBytes, "how much of a request head or TLS ClientHello is read for its host name"); ok {
				st.SniffBytes = int(n)
			}
		case k == "proxy_protocol":
			st.ProxyProtocol = p.proxyProtocol(s, key, m[k])
		case k == "shape_devices":
			st.ShapeDevices = p.shapeDevices(s, key, m[k])
		case isLimitKey(k):
			p.keyProblem(s, key, "is a limit, not a setting; put it under [defaults] or a [[vhost]]")
		default:
			p.keyProblem(s, key, "unknown key%s Known keys here: %s", didYouMean(k, settingsKeys()), strings.Join(settingsKeys(), ", "))
		}
	}
}

func (p *parser) cgroupParent(s scope, key string, v any) (string, bool) {
	str, ok := v.(string)
	if !ok {
		p.valueProblem(s, key, "is %s; write an absolute cgroup path as a string, e.g. \"/vhqos.slice\", or \"\" for vhqos's own cgroup", typeName(v))
		return "", false
	}
	if str == "" {
		return "", true
	}
	for _, c := range str {
		if c < 0x20 || c == 0x7f {
			p.valueProblem(s, key, "%q contains a control character; a cgroup path is a plain path such as \"/vhqos.slice\"", str)
			return "", false
		}
	}
	if !strings.HasPrefix(str, "/") {
		p.valueProblem(s, key, "%q is relative; write an absolute cgroup path such as %q, or \"\" for vhqos's own cgroup", str, path.Clean("/"+str))
		return "", false
	}
	if clean := path.Clean(str); clean != str {
		p.valueProblem(s, key, "%q is not a clean path; write %q", str, clean)
		return "", false
	}
	return str, true
}

// class reads the keys of a vhost or of the defaults.
func (p *parser) class(m map[string]any, s scope, c *Class) {
	isVHost := s.vhost >= 0
	known := limitKeys()
	if isVHost {
		known = vhostKeys()
		if _, ok := m["name"]; !ok {
			p.keyProblem(s, s.key("name"), "missing: every vhost needs a name, e.g. name = \"shop\" (it names the vhost's cgroup)")
		}
		if _, ok := m["match"]; !ok {
			p.keyProblem(s, s.key("match"), "missing: list what this vhost serves, e.g. match = [\"192.0.2.10\", \"198.51.100.0/24\"]")
		}
	}
	for _, k := range sortedKeys(m) {
		v, key := m[k], s.key(k)
		switch {
		case k == "name" && isVHost:
			if name, ok := p.name(s, key, v); ok {
				c.Name = name
			}
		case k == "match" && isVHost:
			p.match(s, key, v, c)
		case k == "listen" && isVHost:
			p.listen(s, key, v, c)
		case k == "tenant" && isVHost:
			if name, ok := p.siteTenant(s, v, p.tenants); ok {
				c.Tenant = name
			}
		case k == "cpu_weight":
			if n, ok := p.intIn(s, key, v, 1, 10000, "like systemd's CPUWeight=; 100 is the kernel's default"); ok {
				c.Resources.CPUWeight = uint64(n)
			}
		case k == "io_weight":
			if n, ok := p.intIn(s, key, v, 1, 10000, "like systemd's IOWeight=; 100 is the kernel's default"); ok {
				c.Resources.IOWeight = uint64(n)
			}
		case k == "cpu_max":
			if pct, err := parsePercent(v); err != nil {
				p.valueProblem(s, key, "%v", err)
			} else {
				c.Resources.CPUQuotaPercent = pct
			}
		case k == "io_read_bps", k == "io_write_bps", k == "io_read_iops", k == "io_write_iops":
			p.deviceLimits(s, key, k, v, c)
		case k == "dscp":
			if d, err := parseDSCP(v); err != nil {
				p.valueProblem(s, key, "%v", err)
			} else {
				c.DSCP = d
			}
		case isMemoryTaskKey(k):
			p.memoryTaskKey(s, key, k, v, &c.Resources)
		case isRateKey(k):
			p.rateKey(s, key, k, v, &c.Rates)
		case isAdmissionKey(k):
			p.admissionKey(s, key, k, v, &c.Admission)
		case k == "tenant" && !isVHost:
			p.keyProblem(s, key, "not allowed here: [defaults] belongs to no tenant; give each site its tenant in its [[vhost]] section")
		case (k == "name" || k == "match" || k == "listen") && !isVHost:
			p.keyProblem(s, key, "not allowed here: [defaults] is the class of every connection no vhost matches; to give some connections their own limits, add a [[vhost]] with name and match")
		case slices.Contains(settingsKeys(), k):
			p.keyProblem(s, key, "belongs in [settings], not in %s", s.where)
		default:
			p.keyProblem(s, key, "unknown key%s Known keys here: %s", didYouMean(k, known), strings.Join(known, ", "))
		}
	}
	// File order of devices is lost in the decoded map; sorting gives the
	// same Resources however the operator ordered them.
	sort.Slice(c.Resources.Devices, func(i, j int) bool { return c.Resources.Devices[i].Path < c.Resources.Devices[j].Path })
}

// validName is [A-Za-z0-9][A-Za-z0-9_.-]{0,63}: the name becomes a
// directory in the cgroup tree, so nothing that could climb out of it or
// clash with an interface file.
func validName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case i > 0 && (c == '_' || c == '.' || c == '-'):
		default:
			return false
		}
	}
	return true
}

func (p *parser) name(s scope, key string, v any) (string, bool) {
	name, ok := v.(string)
	switch {
	case !ok:
		p.valueProblem(s, key, "is %s; write the name as a string, e.g. name = \"shop\"", typeName(v))
	case !validName(name):
		p.valueProblem(s, key, "%q: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit (the name becomes a cgroup directory)", name)
	case cgroup.Reserved(name):
		p.valueProblem(s, key, "%q is reserved for vhqos's own cgroups (%s); pick another name", name, strings.Join(cgroup.ReservedNames(), ", "))
	default:
		return name, true
	}
	return "", false
}

// patternKey holds what the messages about one list-of-patterns key say.
type patternKey struct {
	name     string // "match", "listen"
	one      string // "pattern", "address"
	example  string // a whole list, as TOML
	whyEmpty string // "" when an empty list is fine (and means none)
}

// patterns reads a list of patterns, reporting each bad one; keep refuses
// a well-formed pattern the key does not take. It returns the good ones
// with their indices in the file's list.
func (p *parser) patterns(s scope, key string, v any, k patternKey, keep func(ikey, raw string, pat vhost.Pattern) bool) ([]vhost.Pattern, []int) {
	list, ok := v.([]any)
	if !ok {
		if str, isStr := v.(string); isStr {
			p.valueProblem(s, key, "must be a list, even of one %s: %s = [%s]", k.one, k.name, tomlString(str))
		} else {
			p.valueProblem(s, key, "is %s; write a list, e.g. %s = %s", typeName(v), k.name, k.example)
		}
		return nil, nil
	}
	if len(list) == 0 {
		if k.whyEmpty != "" {
			p.valueProblem(s, key, "is empty: %s", k.whyEmpty)
		}
		return nil, nil
	}
	pats := make([]vhost.Pattern, 0, len(list))
	var idx []int
	for i, item := range list {
		ikey := key + "[" + strconv.Itoa(i) + "]"
		str, ok := item.(string)
		if !ok {
			p.valueProblem(s, ikey, "is %s; each %s is a string, e.g. \"192.0.2.10\"", typeName(item), k.one)
			continue
		}
		pat, err := vhost.ParsePattern(str)
		if err != nil {
			p.valueProblem(s, ikey, "%v", err)
			continue
		}
		if !keep(ikey, str, pat) {
			continue
		}
		pats = append(pats, pat)
		idx = append(idx, i)
	}
	return pats, idx
}

func (p *parser) match(s scope, key string, v any, c *Class) {
	c.Match, p.matchIdx[s.vhost] = p.patterns(s, key, v, patternKey{
		name: "match", one: "pattern", example: `["192.0.2.10", "198.51.100.0/24"]`,
		whyEmpty: "a vhost that matches nothing never applies; list its addresses or names, or remove the vhost",
	}, func(string, string, vhost.Pattern) bool { return true })
}

// listen reads the local addresses a vhost's host names are restricted to.
func (p *parser) listen(s scope, key string, v any, c *Class) {
	c.Listen, _ = p.patterns(s, key, v, patternKey{
		name: "listen", one: "address", example: `["192.0.2.10", "*:443"]`,
		whyEmpty: "leave listen out to let this vhost's names count on every address",
	}, func(ikey, raw string, pat vhost.Pattern) bool {
		if pat.IsName() {
			p.valueProblem(s, ikey, "%q is a host name; listen lists local addresses (IP, IP:port, CIDR, *:PORT or unix:/path) the vhost's names apply to", raw)
			return false
		}
		return true
	})
}

// proxyProtocol reads the local addresses of the listeners behind a
// trusted proxy. An empty list trusts none, as an absent key does, so the
// table holds nil for both.
func (p *parser) proxyProtocol(s scope, key string, v any) []vhost.Pattern {
	if b, ok := v.(bool); ok {
		// Trust is per listener: a switch would let any client on any
		// listener forge its address.
		p.valueProblem(s, key, "is %v (true/false); list the local addresses of the listeners a proxy sends the PROXY protocol to, e.g. proxy_protocol = [\"127.0.0.1:8080\", \"*:8443\"]: a PROXY header is believed only there", b)
		return nil
	}
	pats, _ := p.patterns(s, key, v, patternKey{
		name: "proxy_protocol", one: "address", example: `["127.0.0.1:8080", "*:8443"]`,
	}, func(ikey, raw string, pat vhost.Pattern) bool {
		if pat.IsName() {
			p.valueProblem(s, ikey, "%q is a host name; proxy_protocol lists local addresses (IP, IP:port, CIDR or *:PORT) of the listeners behind a proxy", raw)
			return false
		}
		if pat.Kind == vhost.KindUnix {
			// A unix socket has no address for a header to stand in for,
			// and a PROXY header on one is only skipped.
			p.valueProblem(s, ikey, "%q is a unix socket; proxy_protocol lists TCP addresses (IP, IP:port, CIDR or *:PORT) of the listeners behind a proxy", raw)
			return false
		}
		return true
	})
	if len(pats) == 0 {
		return nil
	}
	return pats
}

// duration reads a Go-style duration ("2s", "500ms") within [lo, hi].
func (p *parser) duration(s scope, key string, v any, lo, hi time.Duration) (time.Duration, bool) {
	str, ok := v.(string)
	if !ok {
		p.valueProblem(s, key, "is %s; write a duration as a string, e.g. \"2s\" or \"500ms\"", typeName(v))
		return 0, false
	}
	d, err := time.ParseDuration(strings.TrimSpace(str))
	if err != nil {
		p.valueProblem(s, key, "%q is not a duration; write e.g. \"2s\" or \"500ms\"", str)
		return 0, false
	}
	if d < lo || d > hi {
		p.valueProblem(s, key, "%q is out of range: from %v to %v", str, lo, hi)
		return 0, false
	}
	return d, true
}

func (p *parser) intIn(s scope, key string, v any, lo, hi int64, hint string) (int64, bool) {
	n, ok := v.(int64)
	if !ok {
		if str, isStr := v.(string); isStr {
			if _, err := strconv.ParseInt(str, 10, 64); err == nil {
				p.valueProblem(s, key, "%q is a string; write the number without quotes, from %d to %d (%s)", str, lo, hi, hint)
				return 0, false
			}
		}
		p.valueProblem(s, key, "is %s; write a whole number from %d to %d (%s)", typeName(v), lo, hi, hint)
		return 0, false
	}
	if n < lo || n > hi {
		p.valueProblem(s, key, "%d is out of range: use %d..%d (%s)", n, lo, hi, hint)
		return 0, false
	}
	return n, true
}

// deviceLimits reads { DEVICE = SIZE, ... } for one of the io_* keys.
func (p *parser) deviceLimits(s scope, key, which string, v any, c *Class) {
	m, ok := v.(map[string]any)
	if !ok {
		p.valueProblem(s, key, "is %s; map block devices to limits, e.g. %s = { \"/dev/vda\" = \"50M\" }", typeName(v), which)
		return
	}
	iops := strings.HasSuffix(which, "_iops")
	for _, dev := range sortedKeys(m) {
		dkey := joinPath(key, dev)
		n, err := parseSize(m[dev], iops)
		if err != nil {
			p.valueProblem(s, dkey, "%v", err)
		}
		disk, derr := p.cfg.resolveDevice(dev)
		switch {
		case errors.Is(derr, cgroup.ErrNoDevice):
			// One table may serve machines with different disks.
			p.keyWarning(s, dkey, "%v; this %s is skipped here", derr, which)
		case derr != nil:
			p.keyProblem(s, dkey, "%v", derr)
		}
		if err != nil || derr != nil {
			continue
		}
		major, minor := disk.Major, disk.Minor
		limit, first := findDevice(&c.Resources, dev, major, minor)
		field := deviceField(limit, which)
		if *field != 0 {
			// Two spellings of one device ("/dev/sdb" and "8:16", or a
			// /dev/disk/by-id link) in the same map.
			p.keyProblem(s, dkey, "is the same device (%d:%d) as %q; give each device one %s", major, minor, first, which)
			continue
		}
		*field = n
	}
}

func deviceField(d *cgroup.DeviceLimit, which string) *uint64 {
	switch which {
	case "io_read_bps":
		return &d.ReadBPS
	case "io_write_bps":
		return &d.WriteBPS
	case "io_read_iops":
		return &d.ReadIOPS
	}
	return &d.WriteIOPS
}

// findDevice returns the limits of a device, merging spellings by number:
// the cgroup files key limits by major:minor.
func findDevice(r *cgroup.Resources, path string, major, minor int64) (*cgroup.DeviceLimit, string) {
	for i := range r.Devices {
		if r.Devices[i].Major == major && r.Devices[i].Minor == minor {
			return &r.Devices[i], r.Devices[i].Path
		}
	}
	r.Devices = append(r.Devices, cgroup.DeviceLimit{Path: path, Major: major, Minor: minor})
	return &r.Devices[len(r.Devices)-1], path
}

// crossCheck finds problems between vhosts: names used twice, a pattern
// claimed by two vhosts (which one would win is not for the matcher to
// guess).
func (p *parser) crossCheck(t *Table) {
	type owner struct {
		vhost, index int
		raw          string
	}
	names := map[string]int{}
	patterns := map[string]owner{}
	for i, c := range t.VHosts {
		s := scope{prefix: "vhost[" + strconv.Itoa(i) + "]", vhost: i}
		s.where = s.prefix
		if c.Name != "" {
			s.where = fmt.Sprintf("vhost %q (%s)", c.Name, s.prefix)
			folded := strings.ToLower(c.Name)
			if j, dup := names[folded]; dup {
				p.valueProblem(s, s.key("name"), "%q is already the name of vhost[%d] (line %d); names must differ in more than case (they name cgroups and status lines)", t.VHosts[j].Name, j, p.line("vhost["+strconv.Itoa(j)+"].name"))
			} else {
				names[folded] = i
			}
		}
		if len(c.Listen) > 0 && !slices.ContainsFunc(c.Match, vhost.Pattern.IsName) {
			p.valueProblem(s, s.key("listen"), "restricts this vhost's host names to some local addresses, but match lists no host name; put the addresses in match instead")
		}
		for j, pat := range c.Match {
			canon := pat.Kind.String() + " " + pat.Canonical()
			prev, dup := patterns[canon]
			if !dup {
				patterns[canon] = owner{i, p.matchIdx[i][j], pat.Raw}
				continue
			}
			if prev.vhost == i {
				continue // listed twice in one vhost: harmless
			}
			written := ""
			if prev.raw != pat.Raw {
				written = fmt.Sprintf(" (as %q)", prev.raw)
			}
			p.valueProblem(s, matchKey(i, p.matchIdx[i][j]), "%q is already matched by vhost %q%s on line %d; a connection can belong to one vhost only", pat.Raw, t.VHosts[prev.vhost].Name, written, p.line(matchKey(prev.vhost, prev.index)))
		}
	}
}

func matchKey(vhost, index int) string {
	return "vhost[" + strconv.Itoa(vhost) + "].match[" + strconv.Itoa(index) + "]"
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// typeName says what a decoded TOML value is, in an operator's words.
func typeName(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("a string (%s)", tomlString(v))
	case int64:
		return fmt.Sprintf("a number (%d)", v)
	case float64:
		// 5.0 is shown as written, not as Go prints it ("5"), which
		// would read like the whole number the key wants.
		return fmt.Sprintf("a decimal number (%s)", strconv.FormatFloat(v, 'f', max(1, decimals(v)), 64))
	case bool:
		return fmt.Sprintf("%v (true/false)", v)
	case []any:
		return "a list"
	case map[string]any:
		return "a table"
	}
	return "a date or time"
}

// decimals is how many digits after the point v needs, at most 15.
func decimals(v float64) int {
	s := strconv.FormatFloat(v, 'f', -1, 64)
	if i := strings.IndexByte(s, '.'); i >= 0 {
		return min(len(s)-i-1, 15)
	}
	return 0
}
