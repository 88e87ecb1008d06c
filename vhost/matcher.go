package vhost

import (
	"net/netip"
	"sort"
	"strings"
)

// Rule says that connections matching Pattern belong to vhost number VHost.
type Rule struct {
	VHost   int
	Pattern Pattern
}

type nameKey struct {
	name string
	port uint16
}

type prefixRule struct {
	prefix netip.Prefix
	vhost  int
}

// Matcher finds the vhost of a connection. It is immutable once built and
// safe for concurrent use; address lookups allocate nothing.
type Matcher struct {
	addrPort map[netip.AddrPort]int
	addr     map[netip.Addr]int
	prefixes []prefixRule // longest first
	ports    map[uint16]int
	names    map[nameKey]int // exact names
	wild     map[nameKey]int // "*.suffix" stored as suffix
}

// NewMatcher builds a Matcher. When two rules have the same pattern the
// first wins; the policy package reports such tables as errors.
func NewMatcher(rules []Rule) *Matcher {
	m := &Matcher{
		addrPort: map[netip.AddrPort]int{},
		addr:     map[netip.Addr]int{},
		ports:    map[uint16]int{},
		names:    map[nameKey]int{},
		wild:     map[nameKey]int{},
	}
	for _, r := range rules {
		p := r.Pattern
		switch p.Kind {
		case KindAddrPort:
			k := netip.AddrPortFrom(p.Prefix.Addr(), p.Port)
			setOnce(m.addrPort, k, r.VHost)
		case KindAddr:
			setOnce(m.addr, p.Prefix.Addr(), r.VHost)
		case KindPrefix:
			m.prefixes = append(m.prefixes, prefixRule{p.Prefix, r.VHost})
		case KindPort:
			setOnce(m.ports, p.Port, r.VHost)
		case KindName:
			if suffix, ok := strings.CutPrefix(p.Name, "*."); ok {
				setOnce(m.wild, nameKey{suffix, p.Port}, r.VHost)
			} else {
				setOnce(m.names, nameKey{p.Name, p.Port}, r.VHost)
			}
		}
	}
	sort.SliceStable(m.prefixes, func(i, j int) bool { return m.prefixes[i].prefix.Bits() > m.prefixes[j].prefix.Bits() })
	return m
}

func setOnce[K comparable](m map[K]int, k K, v int) {
	if _, ok := m[k]; !ok {
		m[k] = v
	}
}

// MatchAddr returns the vhost whose address rule matches the connection's
// local address most specifically, or -1: IP:port, then IP, then the
// longest CIDR, then *:port.
func (m *Matcher) MatchAddr(local netip.AddrPort) int {
	a := local.Addr().Unmap()
	if v, ok := m.addrPort[netip.AddrPortFrom(a, local.Port())]; ok {
		return v
	}
	if v, ok := m.addr[a]; ok {
		return v
	}
	for _, p := range m.prefixes {
		if p.prefix.Contains(a) {
			return p.vhost
		}
	}
	if v, ok := m.ports[local.Port()]; ok {
		return v
	}
	return -1
}

// HasNames reports whether any rule matches by host name.
func (m *Matcher) HasNames() bool { return len(m.names)+len(m.wild) > 0 }

// HasAddressRules reports whether any rule names an address or a prefix.
func (m *Matcher) HasAddressRules() bool {
	return len(m.addrPort)+len(m.addr)+len(m.prefixes) > 0
}

// ListenerDecides returns the vhost of every connection a listener bound to
// bound can produce, when the address rules alone decide it: a listener on
// a specific address only ever has that local address; a wildcard listener
// decides only if no rule names an address. ok is false when names are in
// play, since then the client's first bytes decide.
func (m *Matcher) ListenerDecides(bound netip.AddrPort) (vhost int, ok bool) {
	if m.HasNames() {
		return -1, false
	}
	if !bound.Addr().IsUnspecified() {
		return m.MatchAddr(bound), true
	}
	if m.HasAddressRules() {
		return -1, false
	}
	if v, ok := m.ports[bound.Port()]; ok {
		return v, true
	}
	return -1, true
}

// MatchName returns the vhost whose name rule matches host most
// specifically, or -1. host is what the client sent (a Host header may
// carry a port, which is ignored); rules with a port only match
// connections to that local port. An exact name beats any wildcard, a
// longer wildcard suffix beats a shorter one, a rule with a port beats one
// without.
func (m *Matcher) MatchName(host string, local netip.AddrPort) int {
	host = normalizeHost(host)
	if host == "" {
		return -1
	}
	port := local.Port()
	if v, ok := m.names[nameKey{host, port}]; ok && port != 0 {
		return v
	}
	if v, ok := m.names[nameKey{host, 0}]; ok {
		return v
	}
	for i := 0; i < len(host); i++ {
		if host[i] != '.' {
			continue
		}
		suffix := host[i+1:]
		if v, ok := m.wild[nameKey{suffix, port}]; ok && port != 0 {
			return v
		}
		if v, ok := m.wild[nameKey{suffix, 0}]; ok {
			return v
		}
	}
	return -1
}

// normalizeHost lower-cases a host name and drops a port and a trailing dot.
func normalizeHost(h string) string {
	if strings.HasPrefix(h, "[") {
		// An IPv6 literal in a Host header never matches a name rule.
		return ""
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		h = h[:i]
	}
	h = strings.TrimSuffix(h, ".")
	for i := 0; i < len(h); i++ {
		if c := h[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(h)
		}
	}
	return h
}
