package vhost

import (
	"net/netip"
	"slices"
	"strings"
)

// Rule says that connections matching Pattern belong to vhost number VHost.
type Rule struct {
	VHost   int
	Pattern Pattern
	// Listen, for a name pattern, restricts it to connections whose local
	// address (or Unix-domain listener's path) matches one of these
	// address or unix: patterns (the vhost's listen list); empty means any
	// address. Address patterns ignore it.
	Listen []Pattern
}

// nameRules are the rules for one name (or wildcard suffix): the vhost for
// any port, and those bound to a port.
type nameRules struct {
	anyPort int // -1: none
	byPort  map[uint16]int
}

// where is the local end of a connection a name is matched for: a TCP
// address, or (onPath) the path of a Unix-domain listener.
type where struct {
	local  netip.AddrPort
	path   string
	onPath bool
}

// match prefers the rule bound to the connection's port; a rule whose
// vhost does not listen there is passed over. A connection to a Unix
// socket has no port, so rules bound to one never match it.
func (r *nameRules) match(m *Matcher, at where) (int, bool) {
	if r == nil {
		return -1, false
	}
	if at.onPath {
		if r.anyPort >= 0 && m.listensOnPath(r.anyPort, at.path) {
			return r.anyPort, true
		}
		return -1, false
	}
	port := at.local.Port()
	if v, ok := r.byPort[port]; ok && port != 0 && m.listensOn(v, at.local) {
		return v, true
	}
	if r.anyPort >= 0 && m.listensOn(r.anyPort, at.local) {
		return r.anyPort, true
	}
	return -1, false
}

// addName records a name rule; the first rule for a name and port wins.
func addName(m map[string]*nameRules, name string, port uint16, vhost int) {
	r := m[name]
	if r == nil {
		r = &nameRules{anyPort: -1}
		m[name] = r
	}
	if port == 0 {
		if r.anyPort < 0 {
			r.anyPort = vhost
		}
		return
	}
	if r.byPort == nil {
		r.byPort = map[uint16]int{}
	}
	setOnce(r.byPort, port, vhost)
}

// Matcher finds the vhost of a connection. It is immutable once built and
// safe for concurrent use; lookups allocate nothing, since MatchAddr runs
// for every accepted connection.
type Matcher struct {
	addrPort map[netip.AddrPort]int
	addr     map[netip.Addr]int
	// prefixes holds every CIDR, keyed by its masked prefix; v4Bits and
	// v6Bits list the lengths in use, longest first, so the longest match
	// costs one map lookup per distinct length rather than a scan of all
	// CIDRs (tables with thousands of /24s are normal for hosters).
	prefixes       map[netip.Prefix]int
	v4Bits, v6Bits []int
	ports          map[uint16]int
	// paths holds the Unix-domain listeners' rules by socket path
	// ("/run/php/shop.sock", "@abstract").
	paths map[string]int
	names map[string]*nameRules // exact names
	wild  map[string]*nameRules // "*.suffix" stored as suffix
	// listen holds, per vhost with a listen list, the addresses its names
	// apply to; openNames says some name rule applies on every address.
	listen    map[int]*Matcher
	openNames bool
}

// NewMatcher builds a Matcher. When two rules have the same pattern the
// first wins; the policy package reports such tables as errors. Patterns of
// KindInvalid are ignored.
func NewMatcher(rules []Rule) *Matcher {
	m := &Matcher{
		addrPort: map[netip.AddrPort]int{},
		addr:     map[netip.Addr]int{},
		prefixes: map[netip.Prefix]int{},
		ports:    map[uint16]int{},
		paths:    map[string]int{},
		names:    map[string]*nameRules{},
		wild:     map[string]*nameRules{},
		listen:   map[int]*Matcher{},
	}
	for _, r := range rules {
		if r.Pattern.Kind != KindName {
			continue
		}
		if len(r.Listen) == 0 {
			m.openNames = true
			continue
		}
		if _, done := m.listen[r.VHost]; !done {
			addrRules := make([]Rule, 0, len(r.Listen))
			for _, lp := range r.Listen {
				if lp.Kind != KindName {
					addrRules = append(addrRules, Rule{VHost: r.VHost, Pattern: lp})
				}
			}
			m.listen[r.VHost] = NewMatcher(addrRules)
		}
	}
	for _, r := range rules {
		p := r.Pattern
		switch p.Kind {
		case KindAddrPort:
			setOnce(m.addrPort, netip.AddrPortFrom(p.Prefix.Addr(), p.Port), r.VHost)
		case KindAddr:
			setOnce(m.addr, p.Prefix.Addr(), r.VHost)
		case KindPrefix:
			pfx := p.Prefix.Masked()
			setOnce(m.prefixes, pfx, r.VHost)
			if pfx.Addr().Is4() {
				m.v4Bits = appendBits(m.v4Bits, pfx.Bits())
			} else {
				m.v6Bits = appendBits(m.v6Bits, pfx.Bits())
			}
		case KindPort:
			setOnce(m.ports, p.Port, r.VHost)
		case KindUnix:
			setOnce(m.paths, p.Path, r.VHost)
		case KindName:
			if suffix, ok := strings.CutPrefix(p.Name, "*."); ok {
				addName(m.wild, suffix, p.Port, r.VHost)
			} else {
				addName(m.names, p.Name, p.Port, r.VHost)
			}
		}
	}
	return m
}

func setOnce[K comparable](m map[K]int, k K, v int) {
	if _, ok := m[k]; !ok {
		m[k] = v
	}
}

// appendBits adds a prefix length to a list kept longest first.
func appendBits(list []int, bits int) []int {
	if slices.Contains(list, bits) {
		return list
	}
	list = append(list, bits)
	slices.SortFunc(list, func(a, b int) int { return b - a })
	return list
}

// MatchAddr returns the vhost whose address rule matches the connection's
// local address most specifically, or -1: IP:port, then IP, then the
// longest CIDR, then *:port. IPv4-mapped IPv6 addresses are matched as
// IPv4, and an IPv6 zone is ignored. A nil Matcher matches nothing.
func (m *Matcher) MatchAddr(local netip.AddrPort) int {
	if m == nil {
		return -1
	}
	a := local.Addr().Unmap().WithZone("")
	if a.IsValid() {
		if v, ok := m.addrPort[netip.AddrPortFrom(a, local.Port())]; ok {
			return v
		}
		if v, ok := m.addr[a]; ok {
			return v
		}
		bits := m.v4Bits
		if a.Is6() {
			bits = m.v6Bits
		}
		for _, b := range bits {
			pfx, err := a.Prefix(b)
			if err != nil {
				continue
			}
			if v, ok := m.prefixes[pfx]; ok {
				return v
			}
		}
	}
	if v, ok := m.ports[local.Port()]; ok {
		return v
	}
	return -1
}

// HasNames reports whether any rule matches by host name.
func (m *Matcher) HasNames() bool { return m != nil && len(m.names)+len(m.wild) > 0 }

// HasAddressRules reports whether any rule names an address or a prefix.
func (m *Matcher) HasAddressRules() bool {
	return m != nil && len(m.addrPort)+len(m.addr)+len(m.prefixes) > 0
}

// ListenerDecides returns the vhost of every connection a listener bound to
// bound can produce, when the address rules alone decide it: a listener on
// a specific address only ever has that local address; a wildcard listener
// decides only if no rule names an address. ok is false when names are in
// play, since then the client's first bytes decide.
func (m *Matcher) ListenerDecides(bound netip.AddrPort) (vhost int, ok bool) {
	if !bound.Addr().IsUnspecified() {
		if m.NamesApply(bound) {
			return -1, false
		}
		return m.MatchAddr(bound), true
	}
	if m.HasNames() && (m.openNames || m.listenMayMatchPort(bound.Port())) {
		return -1, false
	}
	if m.HasAddressRules() {
		return -1, false
	}
	if m == nil {
		return -1, true
	}
	if v, ok := m.ports[bound.Port()]; ok {
		return v, true
	}
	return -1, true
}

// NamesApply reports whether a name rule can decide a connection whose
// local address is local: only then is it worth waiting for the client's
// first bytes.
func (m *Matcher) NamesApply(local netip.AddrPort) bool {
	if !m.HasNames() {
		return false
	}
	if m.openNames {
		return true
	}
	for _, lm := range m.listen {
		if lm.MatchAddr(local) >= 0 {
			return true
		}
	}
	return false
}

// MatchPath returns the vhost whose unix: rule names path, the path of
// the Unix-domain listener a connection came to ("/run/php/shop.sock", or
// "@name" for an abstract socket), or -1. A nil Matcher matches nothing.
func (m *Matcher) MatchPath(path string) int {
	if m == nil || path == "" {
		return -1
	}
	if v, ok := m.paths[path]; ok {
		return v
	}
	return -1
}

// NamesApplyPath is NamesApply for the connections of the Unix-domain
// listener bound to path: a name rule applies there when its vhost has no
// listen list, or a listen list that names path.
func (m *Matcher) NamesApplyPath(path string) bool {
	if !m.HasNames() {
		return false
	}
	if m.openNames {
		return true
	}
	for _, lm := range m.listen {
		if lm.MatchPath(path) >= 0 {
			return true
		}
	}
	return false
}

// ListenerDecidesPath is ListenerDecides for the Unix-domain listener
// bound to path: every connection of it has that path, so its unix: rule
// decides them all (-1: none, the defaults), unless a name rule applies
// there (NamesApplyPath), when ok is false.
func (m *Matcher) ListenerDecidesPath(path string) (vhost int, ok bool) {
	if m.NamesApplyPath(path) {
		return -1, false
	}
	return m.MatchPath(path), true
}

// listensOnPath reports whether vhost's names apply to connections to
// the Unix-domain listener bound to path.
func (m *Matcher) listensOnPath(vhost int, path string) bool {
	lm, restricted := m.listen[vhost]
	return !restricted || lm.MatchPath(path) >= 0
}

// listensOn reports whether vhost's names apply to connections to local.
func (m *Matcher) listensOn(vhost int, local netip.AddrPort) bool {
	lm, restricted := m.listen[vhost]
	return !restricted || lm.MatchAddr(local) >= 0
}

// listenMayMatchPort reports whether some listen list could match an
// address on port, as seen from a wildcard listener that does not know
// which of its addresses a client will connect to.
func (m *Matcher) listenMayMatchPort(port uint16) bool {
	wildcard := netip.AddrPortFrom(netip.IPv6Unspecified(), port)
	for _, lm := range m.listen {
		if lm.MayMatchListener(wildcard) {
			return true
		}
	}
	return false
}

// MayMatchListener reports whether an address rule (names are ignored) can
// match some connection accepted on a socket bound to bound. For a specific
// address, every connection has bound as its local address, so it is
// MatchAddr(bound) >= 0. For the wildcard address the local address is one
// of the machine's, unknown until a client connects: any IP or CIDR rule
// may match, and an IP:port or *:port rule with bound's port. A socket
// bound to 0.0.0.0 (or ::ffff:0.0.0.0) accepts IPv4 only, so IPv6 rules
// are passed over there; one bound to :: may accept both families. It
// allocates nothing; a nil Matcher matches nothing.
func (m *Matcher) MayMatchListener(bound netip.AddrPort) bool {
	if m == nil {
		return false
	}
	a := bound.Addr().Unmap().WithZone("")
	if !a.IsUnspecified() {
		return m.MatchAddr(bound) >= 0
	}
	port := bound.Port()
	if _, ok := m.ports[port]; ok {
		return true
	}
	v4only := a.Is4()
	if len(m.v4Bits) > 0 || (!v4only && len(m.v6Bits) > 0) {
		return true
	}
	for ad := range m.addr {
		if ad.Is4() || !v4only {
			return true
		}
	}
	for ap := range m.addrPort {
		if ap.Port() == port && (ap.Addr().Is4() || !v4only) {
			return true
		}
	}
	return false
}

// MatchName returns the vhost whose name rule matches host most
// specifically, or -1. host is what the client sent: a Host header may
// carry a port, which is ignored; case and a trailing dot do not matter.
// Rules with a port only match connections to that local port. An exact
// name beats any wildcard, a longer wildcard suffix beats a shorter one,
// and for the same name a rule with the port beats one without.
func (m *Matcher) MatchName(host string, local netip.AddrPort) int {
	return m.matchName(host, where{local: local})
}

// MatchNameOnPath is MatchName for a connection to the Unix-domain
// listener bound to path ("/run/php/shop.sock", "@abstract"): a name rule
// of a vhost with a listen list applies only if that list names path, and
// a rule bound to a port ("shop.example.com:8443") never matches, since
// such a connection has no port.
func (m *Matcher) MatchNameOnPath(host, path string) int {
	return m.matchName(host, where{path: path, onPath: true})
}

func (m *Matcher) matchName(host string, at where) int {
	if m == nil || len(m.names)+len(m.wild) == 0 {
		return -1
	}
	// The name is lower-cased into a buffer on the stack: map lookups
	// keyed by string(buf[...]) do not allocate, whatever the client sent.
	var buf [253]byte
	n, ok := normalizeHost(host, &buf)
	if !ok {
		return -1
	}
	if v, ok := m.names[string(buf[:n])].match(m, at); ok {
		return v
	}
	// Cutting at each dot from the left tries the longest suffix first. A
	// wildcard never matches the bare suffix: *.example.com is not
	// example.com.
	for i := 0; i < n; i++ {
		if buf[i] == '.' {
			if v, ok := m.wild[string(buf[i+1:n])].match(m, at); ok {
				return v
			}
		}
	}
	return -1
}

// normalizeHost writes host lower-cased, without ":port" and trailing dot,
// into buf and returns its length. It refuses what cannot be a DNS name (an
// IPv6 literal, empty labels, stray characters), so client bytes never
// reach a wildcard by a detour such as ".example.com".
func normalizeHost(h string, buf *[253]byte) (int, bool) {
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		for j := i + 1; j < len(h); j++ {
			if h[j] < '0' || h[j] > '9' {
				return 0, false
			}
		}
		h = h[:i]
	}
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > len(buf) {
		return 0, false
	}
	prevDot := true
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c == '.':
			if prevDot {
				return 0, false
			}
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return 0, false
		}
		prevDot = c == '.'
		buf[i] = c
	}
	return len(h), true
}
