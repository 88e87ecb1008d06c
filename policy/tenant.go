package policy

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
	"github.com/vhqos/vhqos/cgroup"
)

// Tenants: a customer with several sites, or a reseller with several
// customers. A tenant's limits bound the sum of what its sites (and the
// tenants inside it) use: its cgroup is the parent of theirs, so the
// kernel enforces the nesting (cgroup v2 and v1 alike: a child's usage
// counts in its parent), and its egress_rate is an HTB class that holds
// its sites' classes (package shaper). [tenant.defaults] gives its sites
// the keys they do not set themselves.

// Tenant is one [[tenant]] section.
type Tenant struct {
	// Name names the tenant's cgroup (cgroup.TenantGroup) and its status
	// lines; the rules of vhost names apply.
	Name string
	// Parent is the tenant this one is inside (a reseller's customer), ""
	// for none.
	Parent string
	// Resources bound the tenant's sites and inner tenants together.
	Resources cgroup.Resources
	// Egress (egress_rate) bounds what the connections of all the
	// tenant's sites, and of the tenants inside it, send together on the
	// devices of Settings.ShapeDevices, in bits per second; 0 for none.
	Egress uint64
}

// tenantKeys are the keys of a [[tenant]] section besides the resource
// keys.
func tenantKeys() []string { return []string{"name", "tenant", "defaults"} }

// notForTenants says why a class key cannot bound a tenant, "" if it can:
// a tenant has no connections of its own, only its cgroup and, with an
// egress_rate, the HTB class that holds its sites'.
func notForTenants(k string) string {
	switch {
	case k == "dscp", k == "connection_rate":
		return "marks and paces connections, and a tenant has none of its own; set it in [tenant.defaults] for all of its sites, or on each site"
	case isAdmissionKey(k):
		return "caps a site's connections; set it in [tenant.defaults] for each of its sites, or on each site"
	case k == "match" || k == "listen":
		return "belongs in the tenant's sites: give each [[vhost]] tenant = \"NAME\""
	}
	return ""
}

// defaultsFirst says what is wrong with a [tenant.defaults] that comes
// before any [[tenant]].
const defaultsFirst = "[tenant.defaults] comes before any [[tenant]]: TOML gives a [tenant.defaults] to the [[tenant]] above it, so write it after its tenant's [[tenant]] section (its name = and limits), before the next [[tenant]] or [[vhost]]"

// tenantHeaderProblem finds a tenant section header that TOML reads
// otherwise than meant, for a document whose decoding failed on the key
// "tenant": a [tenant.defaults] (or [tenant.X]) before the first
// [[tenant]], or a [tenant] with single brackets beside [[tenant]]. TOML's
// own message ("key tenant already exists as a table, but should be an
// array table") points at the [[tenant]] that is right. Nil when there is
// no such header.
func tenantHeaderProblem(filename string, data []byte) *Problem {
	var parser unstable.Parser
	parser.Reset(data)
	arraySeen := false
	for parser.NextExpression() {
		e := parser.Expression()
		if e.Kind != unstable.Table && e.Kind != unstable.ArrayTable {
			continue
		}
		var parts []string
		var first *unstable.Node
		for it := e.Key(); it.Next(); {
			if first == nil {
				first = it.Node()
			}
			parts = append(parts, string(it.Node().Data))
		}
		if len(parts) == 0 || parts[0] != "tenant" {
			continue
		}
		if e.Kind == unstable.ArrayTable {
			arraySeen = arraySeen || len(parts) == 1
			continue
		}
		pr := Problem{File: filename, Key: joinPath("", parts...)}
		if first.Raw.Length > 0 {
			off := int(first.Raw.Offset)
			for off > 0 && (data[off-1] == '[' || data[off-1] == ' ' || data[off-1] == '\t') {
				off--
			}
			pr.Line, pr.Column = lineCol(data, off)
		}
		switch {
		case len(parts) == 1:
			pr.Msg = "write [[tenant]] with double brackets: every tenant is one entry in a list of tenants"
		case !arraySeen:
			pr.Where, pr.Msg = "", defaultsFirst
			if parts[1] != "defaults" {
				pr.Msg = fmt.Sprintf("[%s] comes before any [[tenant]]: a tenant's sections belong after its [[tenant]] (and a tenant takes only [tenant.defaults])", pr.Key)
			}
		default:
			continue
		}
		return &pr
	}
	return nil
}

// parsedTenant is a tenant as read, with what its sites inherit.
type parsedTenant struct {
	Tenant
	scope scope
	// defaults are the raw keys of [tenant.defaults], checked once in
	// their own section and merged into each site's keys.
	defaults map[string]any
}

// readTenants reads the [[tenant]] sections into t.Tenants and returns them by
// lower-case name, with their defaults, for the vhosts to refer to.
func (p *parser) readTenants(v any, t *Table) map[string]*parsedTenant {
	list, ok := v.([]any)
	if !ok {
		if m, isMap := v.(map[string]any); isMap && m["defaults"] != nil && m["name"] == nil {
			p.keyProblem(scope{vhost: -1}, "tenant.defaults", "%s", defaultsFirst)
			return nil
		}
		p.keyProblem(scope{vhost: -1}, "tenant", "write [[tenant]] with double brackets: every tenant is one entry in a list of tenants")
		return nil
	}
	byName := map[string]*parsedTenant{}
	var order []*parsedTenant
	for i, item := range list {
		s := scope{prefix: "tenant[" + strconv.Itoa(i) + "]", vhost: -1}
		s.where = s.prefix
		m, ok := item.(map[string]any)
		if !ok {
			p.keyProblem(scope{vhost: -1}, s.prefix, "each tenant is a [[tenant]] section with name = and its limits")
			continue
		}
		if name, ok := m["name"].(string); ok && name != "" {
			s.where = fmt.Sprintf("tenant %q (%s)", name, s.prefix)
		}
		pt := &parsedTenant{scope: s}
		own := map[string]any{}
		for _, k := range sortedKeys(m) {
			key := s.key(k)
			switch v := m[k]; {
			case k == "name":
				if name, ok := p.name(s, key, v); ok {
					pt.Name = name
				}
			case k == "tenant":
				switch parent, ok := v.(string); {
				case !ok:
					p.valueProblem(s, key, "is %s; name the tenant this one is inside as a string, e.g. tenant = \"reseller\"", typeName(v))
				case parent == "":
					p.valueProblem(s, key, "is empty: leave tenant out for a tenant inside no other, or name the one it is inside; %s", p.tenantList(list))
				default:
					pt.Parent = parent
				}
			case k == "defaults":
				d, ok := v.(map[string]any)
				if !ok {
					p.keyProblem(s, key, "must be a section: write [tenant.defaults] on a line of its own after the tenant's [[tenant]] section, then the keys its sites get")
					continue
				}
				p.tenantDefaults(d, s)
				pt.defaults = d
			case notForTenants(k) != "":
				p.keyProblem(s, key, "not allowed in a tenant: %s %s", k, notForTenants(k))
			case isLimitKey(k):
				own[k] = v
			default:
				known := tenantKeys()
				for _, k := range limitKeys() {
					if notForTenants(k) == "" {
						known = append(known, k)
					}
				}
				p.keyProblem(s, key, "unknown key%s Known keys here: %s", didYouMean(k, known), strings.Join(known, ", "))
			}
		}
		if _, ok := m["name"]; !ok {
			p.keyProblem(s, s.key("name"), "missing: every tenant needs a name, e.g. name = \"acme\" (it names the tenant's cgroup)")
		}
		c := newClass()
		p.class(own, s, &c)
		pt.Resources, pt.Egress = c.Resources, c.Rates.Egress
		if pt.Name == "" {
			continue
		}
		folded := strings.ToLower(pt.Name)
		if prev, dup := byName[folded]; dup {
			p.valueProblem(s, s.key("name"), "%q is already the name of %s (line %d); tenant names must differ in more than case (they name cgroups and status lines)", prev.Name, prev.scope.prefix, p.line(prev.scope.key("name")))
			continue
		}
		byName[folded] = pt
		order = append(order, pt)
	}
	p.tenantParents(byName, order)
	t.tenantIndex = make(map[string]int, len(order))
	for _, pt := range order {
		t.tenantIndex[strings.ToLower(pt.Name)] = len(t.Tenants)
		t.Tenants = append(t.Tenants, pt.Tenant)
	}
	return byName
}

// tenantDefaults checks the keys of a [tenant.defaults] section: any key a
// site may set besides name, match, listen and tenant.
func (p *parser) tenantDefaults(d map[string]any, s scope) {
	ds := scope{prefix: s.key("defaults"), where: s.where + " [tenant.defaults]", vhost: -1}
	rest := map[string]any{}
	for _, k := range sortedKeys(d) {
		switch k {
		case "name", "match", "listen", "tenant":
			p.keyProblem(ds, ds.key(k), "not allowed in [tenant.defaults]: it gives the tenant's sites the limits they do not set themselves; %s belongs in each [[vhost]]", k)
		default:
			rest[k] = d[k]
		}
	}
	c := newClass()
	p.class(rest, ds, &c)
}

// tenantParents checks that every tenant's parent exists and that no
// tenant is inside itself, however deep.
func (p *parser) tenantParents(byName map[string]*parsedTenant, order []*parsedTenant) {
	inLoop := map[*parsedTenant]bool{} // reported once, at its first member
	for _, pt := range order {
		if pt.Parent == "" || inLoop[pt] {
			continue
		}
		key := pt.scope.key("tenant")
		parent := byName[strings.ToLower(pt.Parent)]
		if parent == nil {
			p.valueProblem(pt.scope, key, "%s", p.noTenant(pt.Parent, tenantNames(order)))
			continue
		}
		pt.Parent = parent.Name
		chain := []string{pt.Name}
		seen := map[*parsedTenant]bool{pt: true}
		for at := parent; at != nil; at = byName[strings.ToLower(at.Parent)] {
			chain = append(chain, at.Name)
			if seen[at] {
				for m := range seen {
					inLoop[m] = true
				}
				p.valueProblem(pt.scope, key, "tenants inside each other in a loop: %s; one of them must be outermost", strings.Join(chain, " -> "))
				break
			}
			seen[at] = true
			if at.Parent == "" {
				break
			}
		}
	}
}

func tenantNames(order []*parsedTenant) []string {
	names := make([]string, len(order))
	for i, pt := range order {
		names[i] = pt.Name
	}
	return names
}

// inheritedKey says where a key a site did not set came from.
type inheritedKey struct {
	// from is the path of the [tenant.defaults] it was written in,
	// "tenant[0].defaults".
	from string
	// tenant is the name of that tenant.
	tenant string
}

// withTenantDefaults returns a site's keys m with those it does not set
// taken from its tenant's [tenant.defaults], then from the defaults of
// the tenants that tenant is inside, the nearest first (t.Enclosing), and
// where each key so taken was written. A tenant that is not known gives
// nothing (that is reported once, at the site's tenant key); nor does a
// key that is no limit (an unknown key, a setting: reported once, at the
// [tenant.defaults]).
func withTenantDefaults(m map[string]any, tenant string, t *Table, byName map[string]*parsedTenant) (map[string]any, map[string]inheritedKey) {
	around := t.Enclosing(tenant)
	if len(around) == 0 {
		return m, nil
	}
	merged := maps.Clone(m)
	origin := map[string]inheritedKey{}
	for _, tn := range around {
		at := byName[strings.ToLower(tn.Name)]
		for k, v := range at.defaults {
			// Only the limits: any other key is an error told once, at
			// the [tenant.defaults] (tenantDefaults), and would be told
			// again, in other words, for every site.
			if !isLimitKey(k) {
				continue
			}
			if _, set := merged[k]; !set {
				merged[k] = v
				origin[k] = inheritedKey{from: at.scope.key("defaults"), tenant: at.Name}
			}
		}
	}
	return merged, origin
}

// placeInherited points a problem of a site's key that the site took from
// a tenant's [tenant.defaults] at the line where that key is written,
// saying so, rather than at the site's section, where the key is not: an
// operator edits it there. It reports false for a problem that the
// [tenant.defaults] section has already been told about in the same
// words at the same place (a bad value is checked there once, and again
// in every site that takes it).
func (p *parser) placeInherited(i int, seen map[[3]string]bool) bool {
	pr := &p.problems[i]
	head, rest := headPath(pr.Key)
	if !strings.HasPrefix(head, "vhost[") || rest == "" {
		return true
	}
	n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(head, "vhost["), "]"))
	if err != nil || n >= len(p.inherited) {
		return true
	}
	k, _ := headPath(rest)
	origin, ok := p.inherited[n][k]
	if !ok {
		return true
	}
	pr.Line, pr.Column = p.locate(joinPath(origin.from, rest), p.atValue[i])
	if seen[[3]string{strconv.Itoa(pr.Line), strconv.Itoa(pr.Column), pr.Msg}] {
		return false
	}
	pr.Msg = fmt.Sprintf("from [tenant.defaults] of tenant %q: %s", origin.tenant, pr.Msg)
	return true
}

// siteTenant checks a vhost's tenant key: the tenant must exist. It
// returns the tenant's name as declared.
func (p *parser) siteTenant(s scope, v any, byName map[string]*parsedTenant) (string, bool) {
	key := s.key("tenant")
	name, ok := v.(string)
	if !ok {
		p.valueProblem(s, key, "is %s; name the site's tenant as a string, e.g. tenant = \"acme\"", typeName(v))
		return "", false
	}
	pt := byName[strings.ToLower(name)]
	if pt == nil {
		var known []string
		for _, t := range byName {
			known = append(known, t.Name)
		}
		switch {
		case name == "":
			p.valueProblem(s, key, "is empty: leave tenant out for a site of no tenant, or name its tenant; %s", tenantChoice(known))
		case len(known) == 0 && !p.isVHostName(name):
			p.valueProblem(s, key, "%q is no tenant: add a [[tenant]] section with name = %s", name, tomlString(name))
		default:
			p.valueProblem(s, key, "%s", p.noTenant(name, known))
		}
		return "", false
	}
	return pt.Name, true
}

// noTenant says that name, the value of a tenant key, names no tenant:
// what it names instead (a vhost: tenant names and vhost names are apart)
// and which tenants there are, or the one it likely misspells.
func (p *parser) noTenant(name string, known []string) string {
	if p.isVHostName(name) {
		return fmt.Sprintf("%q is a vhost, not a tenant; %s", name, tenantChoice(known))
	}
	if hint := didYouMean(name, known); hint != "." {
		return fmt.Sprintf("%q is no tenant%s", name, hint)
	}
	return fmt.Sprintf("%q is no tenant; %s", name, tenantChoice(known))
}

// tenantChoice lists the tenants of the table for a message, in
// alphabetical order, "the tenants are acme, beta", or says there is none.
func tenantChoice(known []string) string {
	if len(known) == 0 {
		return "this table has no [[tenant]] section"
	}
	return "the tenants are " + strings.Join(slices.Sorted(slices.Values(known)), ", ")
}

// tenantList is tenantChoice for the [[tenant]] sections as decoded.
func (p *parser) tenantList(list []any) string {
	var known []string
	for _, item := range list {
		if m, ok := item.(map[string]any); ok {
			if name, ok := m["name"].(string); ok && name != "" {
				known = append(known, name)
			}
		}
	}
	return tenantChoice(known)
}

// isVHostName reports whether a [[vhost]] of the table has name, in any
// case.
func (p *parser) isVHostName(name string) bool {
	for _, n := range p.vhostNames {
		if strings.EqualFold(n, name) {
			return true
		}
	}
	return false
}

// tenantBounds warns where a site's limit is above one of its tenants':
// allowed (the tenant's cgroup bounds it anyway), but the site's figure
// then promises what the tenant never gives. The warning points at the
// value, as an error does; a key that has an error already (a memory_high
// above the site's own memory_max) gets no warning besides: the error is
// what to fix.
func (p *parser) tenantBounds(t *Table) {
	check := func(s scope, name string, r cgroup.Resources, egress uint64, tenant string) {
		for _, at := range t.Enclosing(tenant) {
			for _, b := range exceededBounds(r, at.Resources) {
				if !p.hasError(s.key(b.key)) {
					p.valueWarning(s, s.key(b.key), "%s is above what %s's tenant %q allows (%s): %s", b.site, name, at.Name, b.tenant, b.why(name))
				}
			}
			if at.Egress != 0 && egress > at.Egress && !p.hasError(s.key("egress_rate")) {
				p.valueWarning(s, s.key("egress_rate"), "%s is above what %s's tenant %q allows (%s): the tenant's class bounds it, so %s never sends more", FormatBitRate(egress), name, at.Name, FormatBitRate(at.Egress), name)
			}
		}
	}
	for i := range t.Tenants {
		tn := &t.Tenants[i]
		if tn.Parent == "" {
			continue
		}
		s := scope{prefix: "tenant[" + strconv.Itoa(i) + "]", where: fmt.Sprintf("tenant %q (tenant[%d])", tn.Name, i), vhost: -1}
		check(s, "tenant "+strconv.Quote(tn.Name), tn.Resources, tn.Egress, tn.Parent)
	}
	for i := range t.VHosts {
		c := &t.VHosts[i]
		if c.Tenant == "" {
			continue
		}
		s := scope{prefix: "vhost[" + strconv.Itoa(i) + "]", where: fmt.Sprintf("vhost %q (vhost[%d])", c.Name, i), vhost: i}
		check(s, "vhost "+strconv.Quote(c.Name), c.Resources, c.Rates.Egress, c.Tenant)
	}
}

// bound is one limit of a site above its tenant's, as written; highOverMax
// says it is the site's memory_high above the tenant's memory_max.
type bound struct {
	key, site, tenant string
	highOverMax       bool
}

// why says what becomes of a limit above its tenant's, for the site (or
// inner tenant) called name.
func (b bound) why(name string) string {
	if b.highOverMax {
		return fmt.Sprintf("the tenant's cgroup reaches its memory_max first (its memory reclaimed, then the OOM killer) before %s's memory_high slows it down, so this memory_high never acts", name)
	}
	return fmt.Sprintf("the tenant's cgroup bounds it, so %s never gets more", name)
}

// exceededBounds lists the caps in r above the same cap in tenant. Only
// caps compare: weights are relative to siblings, not bounds.
func exceededBounds(r, tenant cgroup.Resources) []bound {
	var out []bound
	if tenant.CPUQuotaPercent > 0 && r.CPUQuotaPercent > tenant.CPUQuotaPercent {
		out = append(out, bound{key: "cpu_max", site: percentString(r.CPUQuotaPercent), tenant: percentString(tenant.CPUQuotaPercent)})
	}
	// A site with no memory_max of its own is bounded by memory_high or
	// nothing; compare what it sets. A memory_high above the tenant's
	// memory_max is told as that alone: it is above the tenant's
	// memory_high too (Parse refuses a tenant's memory_high above its
	// memory_max), and that matters less.
	size := func(n uint64) string { return strings.Trim(formatSize(n), `"`) }
	if tenant.MemoryMax > 0 && r.MemoryMax > tenant.MemoryMax {
		out = append(out, bound{key: "memory_max", site: size(r.MemoryMax), tenant: size(tenant.MemoryMax)})
	}
	switch {
	case tenant.MemoryMax > 0 && r.MemoryHigh > tenant.MemoryMax:
		out = append(out, bound{key: "memory_high", site: size(r.MemoryHigh), tenant: "memory_max " + size(tenant.MemoryMax), highOverMax: true})
	case tenant.MemoryHigh > 0 && r.MemoryHigh > tenant.MemoryHigh:
		out = append(out, bound{key: "memory_high", site: size(r.MemoryHigh), tenant: size(tenant.MemoryHigh)})
	}
	if tenant.TasksMax > 0 && r.TasksMax > tenant.TasksMax {
		out = append(out, bound{key: "tasks_max", site: strconv.FormatUint(r.TasksMax, 10), tenant: strconv.FormatUint(tenant.TasksMax, 10)})
	}
	return out
}

func percentString(p float64) string { return strconv.FormatFloat(p, 'f', -1, 64) + "%" }

// TenantOf returns the tenant named name (any case), nil if t has none.
func (t *Table) TenantOf(name string) *Tenant {
	if t.tenantIndex != nil {
		if i, ok := t.tenantIndex[strings.ToLower(name)]; ok {
			return &t.Tenants[i]
		}
		return nil
	}
	// A Table built by hand has no index.
	for i := range t.Tenants {
		if strings.EqualFold(t.Tenants[i].Name, name) {
			return &t.Tenants[i]
		}
	}
	return nil
}

// Enclosing returns the tenant named tenant (any case) and the tenants it
// is inside, the nearest first: the tenants whose limits bound a site of
// that tenant, and whose [tenant.defaults] it takes, in the order it takes
// them. It is nil for "" and for a name no tenant has. Every walk from a
// site or tenant outwards goes through here. Parse refuses tenants inside
// each other in a loop; should a Table built otherwise have one, the walk
// stops before the first tenant it meets again.
func (t *Table) Enclosing(tenant string) []*Tenant {
	var out []*Tenant
	for at := t.TenantOf(tenant); at != nil && !slices.Contains(out, at); at = t.TenantOf(at.Parent) {
		out = append(out, at)
	}
	return out
}

// ShapingTenant returns the tenant whose HTB class holds the egress class
// of a site of the tenant named tenant, or of a tenant inside it: the
// nearest tenant with an egress_rate among it and those it is inside
// (Enclosing). Nil for none: such a site has a class of its own, under the
// root, only with an egress_rate of its own.
func (t *Table) ShapingTenant(tenant string) *Tenant {
	for _, at := range t.Enclosing(tenant) {
		if at.Egress != 0 {
			return at
		}
	}
	return nil
}

// GroupOf returns the cgroup group of class c of t (the defaults or one of
// its vhosts) as the cgroup package names nested groups: each tenant the
// site is inside, outermost first, then the site, joined by "/", e.g.
// "tenant-reseller/tenant-acme/vhost-shop"; "vhost-shop" for a site of no
// tenant, cgroup.DefaultGroup for the defaults.
func (t *Table) GroupOf(c *Class) string {
	if c == &t.Defaults {
		return cgroup.DefaultGroup
	}
	return t.tenantPath(c.Tenant, cgroup.VHostGroup(c.Name))
}

// TenantGroup returns the cgroup group of tenant tn of t, nested as
// GroupOf nests sites.
func (t *Table) TenantGroup(tn *Tenant) string {
	return t.tenantPath(tn.Parent, cgroup.TenantGroup(tn.Name))
}

func (t *Table) tenantPath(tenant, leaf string) string {
	around := t.Enclosing(tenant)
	parts := make([]string, 0, len(around)+1)
	for i := len(around) - 1; i >= 0; i-- {
		parts = append(parts, cgroup.TenantGroup(around[i].Name))
	}
	return strings.Join(append(parts, leaf), "/")
}
