package vhost

import (
	"net/netip"
	"testing"
)

// MayMatchListener: a specific bound address is the local address of every
// connection; a wildcard one may be any address of its family, on its port.
func TestMayMatchListener(t *testing.T) {
	v4Addr := matcherOf(t, []string{"192.0.2.10"})
	v4AddrPort := matcherOf(t, []string{"192.0.2.10:8080"})
	v4Prefix := matcherOf(t, []string{"10.0.0.0/8"})
	v6Addr := matcherOf(t, []string{"2001:db8::1"})
	v6AddrPort := matcherOf(t, []string{"[2001:db8::1]:8080"})
	v6Prefix := matcherOf(t, []string{"2001:db8::/32"})
	port := matcherOf(t, []string{"*:8443"})
	names := matcherOf(t, []string{"shop.example.com", "*.example.com:8080"})
	tests := []struct {
		name  string
		m     *Matcher
		bound string
		want  bool
	}{
		{"specific, same address", v4Addr, "192.0.2.10:80", true},
		{"specific, other address", v4Addr, "192.0.2.11:80", false},
		{"specific, address and port", v4AddrPort, "192.0.2.10:8080", true},
		{"specific, address, other port", v4AddrPort, "192.0.2.10:8081", false},
		{"specific, in the CIDR", v4Prefix, "10.1.2.3:80", true},
		{"specific, outside the CIDR", v4Prefix, "11.1.2.3:80", false},
		{"specific, port", port, "192.0.2.10:8443", true},
		{"specific, other port", port, "192.0.2.10:443", false},
		{"specific, v4-mapped", v4AddrPort, "[::ffff:192.0.2.10]:8080", true},
		{"specific, v4-mapped in the CIDR", v4Prefix, "[::ffff:10.9.9.9]:80", true},
		{"specific v6", v6Addr, "[2001:db8::1]:80", true},
		{"specific v6, zone ignored", v6Addr, "[2001:db8::1%eth0]:80", true},
		{"specific v6 in the CIDR", v6Prefix, "[2001:db8:5::1]:80", true},
		{"specific v6 outside the CIDR", v6Prefix, "[2001:db9::1]:80", false},

		{"0.0.0.0, IPv4 address, any port", v4Addr, "0.0.0.0:80", true},
		{"0.0.0.0, IPv4 address:port, that port", v4AddrPort, "0.0.0.0:8080", true},
		{"0.0.0.0, IPv4 address:port, other port", v4AddrPort, "0.0.0.0:80", false},
		{"0.0.0.0, IPv4 CIDR", v4Prefix, "0.0.0.0:80", true},
		{"0.0.0.0, *:port, that port", port, "0.0.0.0:8443", true},
		{"0.0.0.0, *:port, other port", port, "0.0.0.0:443", false},
		{"0.0.0.0 takes no IPv6: address", v6Addr, "0.0.0.0:80", false},
		{"0.0.0.0 takes no IPv6: address:port", v6AddrPort, "0.0.0.0:8080", false},
		{"0.0.0.0 takes no IPv6: CIDR", v6Prefix, "0.0.0.0:80", false},
		{"::ffff:0.0.0.0 is 0.0.0.0", v6Prefix, "[::ffff:0.0.0.0]:80", false},
		{"::ffff:0.0.0.0, IPv4 CIDR", v4Prefix, "[::ffff:0.0.0.0]:80", true},

		{":: takes IPv4 too: address", v4Addr, "[::]:80", true},
		{":: takes IPv4 too: address:port", v4AddrPort, "[::]:8080", true},
		{":: address:port, other port", v4AddrPort, "[::]:80", false},
		{":: IPv4 CIDR", v4Prefix, "[::]:80", true},
		{":: IPv6 address", v6Addr, "[::]:80", true},
		{":: IPv6 address:port, that port", v6AddrPort, "[::]:8080", true},
		{":: IPv6 address:port, other port", v6AddrPort, "[::]:80", false},
		{":: IPv6 CIDR", v6Prefix, "[::]:80", true},
		{":: *:port, that port", port, "[::]:8443", true},
		{":: *:port, other port", port, "[::]:443", false},

		{"names are not address rules, specific", names, "192.0.2.10:8080", false},
		{"names are not address rules, wildcard", names, "[::]:8080", false},
		{"nil matcher", nil, "[::]:80", false},
		{"empty matcher", NewMatcher(nil), "0.0.0.0:80", false},
	}
	for _, tc := range tests {
		bound := netip.MustParseAddrPort(tc.bound)
		if got := tc.m.MayMatchListener(bound); got != tc.want {
			t.Errorf("%s: MayMatchListener(%s) = %v, want %v", tc.name, tc.bound, got, tc.want)
		}
		if n := testing.AllocsPerRun(100, func() { tc.m.MayMatchListener(bound) }); n != 0 {
			t.Errorf("%s: MayMatchListener(%s): %v allocations", tc.name, tc.bound, n)
		}
	}
}

// Unix-domain listeners are matched by the path they are bound to; host
// names apply to their connections only where the vhost's listen list lets
// them (or it has none), and never with a port.
func TestUnixListeners(t *testing.T) {
	parse := func(list ...string) []Pattern {
		var out []Pattern
		for _, s := range list {
			p, err := ParsePattern(s)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, p)
		}
		return out
	}
	build := func(vhosts ...[2][]string) *Matcher {
		var rules []Rule
		for i, v := range vhosts {
			for _, p := range parse(v[0]...) {
				rules = append(rules, Rule{VHost: i, Pattern: p, Listen: parse(v[1]...)})
			}
		}
		return NewMatcher(rules)
	}
	type vh = [2][]string
	// Paths only: each listener decides alone.
	paths := build(
		vh{{"unix:/run/php/shop.sock", "192.0.2.10"}, nil},
		vh{{"unix:@blog-fpm"}, nil},
	)
	// Names restricted to one socket, beside a socket of their own.
	restricted := build(
		vh{{"shop.example.com", "shop.example.com:8443"}, {"unix:/run/php/pool.sock"}},
		vh{{"*.example.com"}, {"unix:/run/php/pool.sock", "192.0.2.0/24"}},
		vh{{"unix:/run/php/other.sock"}, nil},
		vh{{"blog.example.com"}, {"*:80"}},
	)
	// A name on every address includes every socket.
	open := build(
		vh{{"shop.example.com"}, nil},
		vh{{"unix:/run/php/pool.sock"}, nil},
		vh{{"blog.example.com:8443"}, nil},
	)
	tests := []struct {
		name      string
		m         *Matcher
		path      string
		match     int  // MatchPath
		apply     bool // NamesApplyPath
		decides   int  // ListenerDecidesPath, when decided
		decidesOK bool
		host      string
		byName    int // MatchNameOnPath(host, path)
	}{
		{"path rule", paths, "/run/php/shop.sock", 0, false, 0, true, "shop.example.com", -1},
		{"abstract rule", paths, "@blog-fpm", 1, false, 1, true, "", -1},
		{"abstract is not the path", paths, "/blog-fpm", -1, false, -1, true, "", -1},
		{"path is not the abstract name", paths, "@/run/php/shop.sock", -1, false, -1, true, "", -1},
		{"other socket", paths, "/run/php/x.sock", -1, false, -1, true, "", -1},
		{"unnamed socket", paths, "", -1, false, -1, true, "", -1},
		{"no path rule is an address rule", paths, "192.0.2.10", -1, false, -1, true, "", -1},

		{"listen names the socket: exact name", restricted, "/run/php/pool.sock", -1, true, -1, false, "Shop.Example.com.", 0},
		{"listen names the socket: Host with a port", restricted, "/run/php/pool.sock", -1, true, -1, false, "shop.example.com:8443", 0},
		{"listen names the socket: wildcard", restricted, "/run/php/pool.sock", -1, true, -1, false, "a.example.com", 1},
		{"listen names the socket: unknown name", restricted, "/run/php/pool.sock", -1, true, -1, false, "example.org", -1},
		{"listen names the socket: *:80 vhost passed over", restricted, "/run/php/pool.sock", -1, true, -1, false, "blog.example.com", 1},
		{"socket of its own, names restricted elsewhere", restricted, "/run/php/other.sock", 2, false, 2, true, "shop.example.com", -1},
		{"unlisted socket", restricted, "/run/php/x.sock", -1, false, -1, true, "a.example.com", -1},

		{"open names apply on every socket", open, "/run/php/pool.sock", 1, true, -1, false, "shop.example.com", 0},
		{"open names: a port-bound name never matches a socket", open, "/run/php/pool.sock", 1, true, -1, false, "blog.example.com:8443", -1},
		{"open names on an unlisted socket", open, "/run/x.sock", -1, true, -1, false, "shop.example.com", 0},

		{"nil matcher", nil, "/run/php/pool.sock", -1, false, -1, true, "shop.example.com", -1},
	}
	for _, tc := range tests {
		if got := tc.m.MatchPath(tc.path); got != tc.match {
			t.Errorf("%s: MatchPath(%q) = %d, want %d", tc.name, tc.path, got, tc.match)
		}
		if got := tc.m.NamesApplyPath(tc.path); got != tc.apply {
			t.Errorf("%s: NamesApplyPath(%q) = %v, want %v", tc.name, tc.path, got, tc.apply)
		}
		if got, ok := tc.m.ListenerDecidesPath(tc.path); got != tc.decides || ok != tc.decidesOK {
			t.Errorf("%s: ListenerDecidesPath(%q) = %d %v, want %d %v", tc.name, tc.path, got, ok, tc.decides, tc.decidesOK)
		}
		if got := tc.m.MatchNameOnPath(tc.host, tc.path); got != tc.byName {
			t.Errorf("%s: MatchNameOnPath(%q, %q) = %d, want %d", tc.name, tc.host, tc.path, got, tc.byName)
		}
		allocs := testing.AllocsPerRun(100, func() {
			tc.m.MatchPath(tc.path)
			tc.m.NamesApplyPath(tc.path)
			tc.m.ListenerDecidesPath(tc.path)
			tc.m.MatchNameOnPath(tc.host, tc.path)
		})
		if allocs != 0 {
			t.Errorf("%s: path lookups allocate %v times", tc.name, allocs)
		}
	}

	// Unix patterns in listen lists and match lists do not touch TCP:
	// names listening on a socket only do not apply to a TCP address, not
	// even on a wildcard listener, and a path rule is not an address rule.
	onlyUnix := build(vh{{"shop.example.com"}, {"unix:/run/php/pool.sock"}})
	if onlyUnix.NamesApply(netip.MustParseAddrPort("198.51.100.1:9000")) {
		t.Error("a listen list of unix sockets made names apply to a TCP address")
	}
	if onlyUnix.MatchName("shop.example.com", netip.MustParseAddrPort("198.51.100.1:9000")) != -1 {
		t.Error("a name listening on a unix socket matched on TCP")
	}
	if v, ok := onlyUnix.ListenerDecides(netip.MustParseAddrPort("0.0.0.0:9000")); !ok || v != -1 {
		t.Errorf("ListenerDecides(0.0.0.0:9000) = %d %v, want -1 true", v, ok)
	}
	if paths.MatchAddr(netip.MustParseAddrPort("192.0.2.10:80")) != 0 || build(vh{{"unix:/a"}, nil}).HasAddressRules() {
		t.Error("unix rules mixed up with address rules")
	}
	if open.MatchName("shop.example.com", netip.MustParseAddrPort("192.0.2.1:80")) != 0 {
		t.Error("MatchName on TCP broke")
	}
}
