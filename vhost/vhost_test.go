package vhost

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
)

func TestParsePattern(t *testing.T) {
	tests := []struct {
		in        string
		kind      Kind
		canonical string
		wantErr   string
	}{
		// Addresses.
		{in: "192.0.2.10", kind: KindAddr, canonical: "192.0.2.10"},
		{in: "2001:db8::1", kind: KindAddr, canonical: "2001:db8::1"},
		{in: "2001:DB8::1", kind: KindAddr, canonical: "2001:db8::1"},
		{in: "[2001:db8::1]", kind: KindAddr, canonical: "2001:db8::1"},
		{in: "::ffff:192.0.2.10", kind: KindAddr, canonical: "192.0.2.10"},
		{in: "192.0.2.10/32", kind: KindAddr, canonical: "192.0.2.10"},
		{in: "2001:db8::1/128", kind: KindAddr, canonical: "2001:db8::1"},
		{in: "::ffff:192.0.2.10/128", kind: KindAddr, canonical: "192.0.2.10"},
		{in: "0.0.0.0", wantErr: "unspecified address"},
		{in: "::", wantErr: "unspecified address"},
		{in: "fe80::1%eth0", wantErr: "zones"},
		{in: "192.0.2.300", wantErr: "not a valid IP address"},
		{in: "1.2.3", wantErr: "not a valid IP address"},
		{in: "[192.0.2.1]", wantErr: "not a valid IPv6 address in brackets"},
		// Address and port.
		{in: "192.0.2.10:443", kind: KindAddrPort, canonical: "192.0.2.10:443"},
		{in: "[2001:db8::1]:443", kind: KindAddrPort, canonical: "[2001:db8::1]:443"},
		{in: "[::ffff:192.0.2.10]:443", kind: KindAddrPort, canonical: "192.0.2.10:443"},
		{in: "192.0.2.1:0", wantErr: "port 0"},
		{in: "192.0.2.1:65536", wantErr: "not a valid IP address"},
		{in: "0.0.0.0:80", wantErr: "write *:80"},
		{in: "[::]:80", wantErr: "write *:80"},
		{in: "[fe80::1%eth0]:80", wantErr: "zones"},
		// CIDRs.
		{in: "10.0.0.0/8", kind: KindPrefix, canonical: "10.0.0.0/8"},
		{in: "10.1.2.3/8", kind: KindPrefix, canonical: "10.0.0.0/8"},
		{in: "0.0.0.0/0", kind: KindPrefix, canonical: "0.0.0.0/0"},
		{in: "2001:db8::/32", kind: KindPrefix, canonical: "2001:db8::/32"},
		{in: "::ffff:10.0.0.0/104", kind: KindPrefix, canonical: "10.0.0.0/8"},
		{in: "::ffff:0.0.0.0/96", kind: KindPrefix, canonical: "0.0.0.0/0"},
		{in: "::ffff:0.0.0.0/90", wantErr: "96..128"},
		{in: "10.0.0.0/33", wantErr: `"10.0.0.0/33": prefix length 33 out of range for IPv4`},
		{in: "2001:db8::/129", wantErr: "prefix length 129 out of range for IPv6"},
		{in: "10.0.0.0/", wantErr: "not a number"},
		{in: "10.0.0.0/x", wantErr: "not a number"},
		{in: "10.0.0.0/-1", wantErr: "not a number"},
		{in: "10.0.0.0/08", wantErr: "not a number"},
		{in: "10.0.0/8", wantErr: `"10.0.0" before the / is not a valid IP address`},
		{in: "fe80::%eth0/64", wantErr: "zones"},
		{in: "0.0.0.0/32", wantErr: "unspecified"},
		// Ports.
		{in: "*:8443", kind: KindPort, canonical: "*:8443"},
		{in: "*:0", wantErr: "*:PORT"},
		{in: "*:99999", wantErr: "*:PORT"},
		{in: "*:+80", wantErr: "*:PORT"},
		{in: "*:", wantErr: "*:PORT"},
		{in: "*", wantErr: "[defaults]"},
		// Names.
		{in: "shop.example.com", kind: KindName, canonical: "shop.example.com"},
		{in: "Shop.Example.COM.", kind: KindName, canonical: "shop.example.com"},
		{in: "*.shop.example.com", kind: KindName, canonical: "*.shop.example.com"},
		{in: "*.Shop.example.com.:8443", kind: KindName, canonical: "*.shop.example.com:8443"},
		{in: "shop.example.com:8080", kind: KindName, canonical: "shop.example.com:8080"},
		{in: "localhost", kind: KindName, canonical: "localhost"},
		{in: "_dmarc.example.com", kind: KindName, canonical: "_dmarc.example.com"},
		{in: "xn--bcher-kva.example", kind: KindName, canonical: "xn--bcher-kva.example"},
		{in: "1.example.com", kind: KindName, canonical: "1.example.com"},
		{in: "", wantErr: "empty pattern"},
		{in: " shop", wantErr: "spaces"},
		{in: "shop ", wantErr: "spaces"},
		{in: "shop..example.com", wantErr: "empty label"},
		{in: ".example.com", wantErr: "empty label"},
		{in: "*.", wantErr: "whole first label"},
		{in: "shop!.com", wantErr: "'!' cannot be in a host name"},
		{in: "shop example.com", wantErr: "' ' cannot be in a host name"},
		{in: "bücher.example", wantErr: "xn--"},
		{in: "a.*.example.com", wantErr: "whole first label"},
		{in: "*.*.example.com", wantErr: "whole first label"},
		{in: "*shop.example.com", wantErr: "whole first label"},
		{in: "-shop.com", wantErr: "starts or ends with '-'"},
		{in: "shop-.com", wantErr: "starts or ends with '-'"},
		{in: "shop.com:http", wantErr: `port "http" is not a number`},
		{in: "shop.com:0", wantErr: "1..65535"},
		{in: strings.Repeat("a", 64) + ".com", wantErr: "DNS allows 63"},
		{in: strings.Repeat("abcdefghi.", 25) + "abcde", wantErr: "DNS allows 253"},
		{in: strings.Repeat("a", 300), wantErr: "too long"},
		// Unix-domain listeners.
		{in: "unix:/run/php/shop.sock", kind: KindUnix, canonical: "unix:/run/php/shop.sock"},
		{in: "unix:/s", kind: KindUnix, canonical: "unix:/s"},
		{in: "unix:/" + strings.Repeat("a", 106), kind: KindUnix, canonical: "unix:/" + strings.Repeat("a", 106)},
		{in: "unix:@php-fpm.shop", kind: KindUnix, canonical: "unix:@php-fpm.shop"},
		{in: "unix:@/run/php/shop.sock", kind: KindUnix, canonical: "unix:@/run/php/shop.sock"},
		{in: "unix:@" + strings.Repeat("a", 106), kind: KindUnix, canonical: "unix:@" + strings.Repeat("a", 106)},
		{in: "unix:", wantErr: "empty socket path"},
		{in: "unix:run/php/shop.sock", wantErr: "must be absolute"},
		{in: "unix:./shop.sock", wantErr: "must be absolute"},
		{in: "unix:/", wantErr: "not a socket path"},
		{in: "unix:/run//php/shop.sock", wantErr: `"unix:/run/php/shop.sock"`},
		{in: "UNIX:/run/php/shop.sock", wantErr: `"unix:" in lower case`},
		{in: "Unix:@shop", wantErr: `"unix:" in lower case`},
		{in: "unix/run/php/shop.sock", wantErr: `"unix:" in lower case`},
		{in: "unix:/run/php/../php/shop.sock", wantErr: `"unix:/run/php/shop.sock"`},
		{in: "unix:/run/./shop.sock", wantErr: "no //, ., .."},
		{in: "unix:/run/php/", wantErr: `"unix:/run/php"`},
		{in: "unix:/run/\x00shop", wantErr: "NUL"},
		{in: "unix:/" + strings.Repeat("a", 107), wantErr: "108 bytes; sun_path holds at most 107"},
		{in: "unix:@", wantErr: "1..106 bytes"},
		{in: "unix:@" + strings.Repeat("a", 107), wantErr: "1..106 bytes"},
		{in: "unix:@shop\x00", wantErr: "byte 0x00"},
		{in: "unix:@shop\tfpm", wantErr: "byte 0x09"},
		{in: "unix:@caf\xc3\xa9", wantErr: "printable ASCII"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			p, err := ParsePattern(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tc.wantErr)
				}
				if !strings.HasPrefix(err.Error(), strconv.Quote(tc.in)+": ") {
					t.Errorf("err = %q, want it to start with the pattern", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Kind != tc.kind {
				t.Errorf("kind %v, want %v", p.Kind, tc.kind)
			}
			if got := p.Canonical(); got != tc.canonical {
				t.Errorf("Canonical() = %q, want %q", got, tc.canonical)
			}
			if p.String() != tc.in {
				t.Errorf("String() = %q, want the input back", p.String())
			}
			// The canonical form is itself a pattern with the same meaning.
			again, err := ParsePattern(p.Canonical())
			if err != nil {
				t.Fatalf("canonical form %q does not parse: %v", p.Canonical(), err)
			}
			again.Raw = p.Raw
			if again != p {
				t.Errorf("canonical form parses to %+v, want %+v", again, p)
			}
		})
	}
}

// matcherOf builds a matcher where patterns[i] are vhost i's patterns.
func matcherOf(tb testing.TB, patterns ...[]string) *Matcher {
	tb.Helper()
	var rules []Rule
	for i, list := range patterns {
		for _, s := range list {
			p, err := ParsePattern(s)
			if err != nil {
				tb.Fatal(err)
			}
			rules = append(rules, Rule{VHost: i, Pattern: p})
		}
	}
	return NewMatcher(rules)
}

func TestMatchAddr(t *testing.T) {
	m := matcherOf(t,
		[]string{"192.0.2.10:443"},                        // 0
		[]string{"192.0.2.10"},                            // 1
		[]string{"192.0.2.0/24"},                          // 2
		[]string{"192.0.0.0/16", "*:8443"},                // 3
		[]string{"2001:db8::/32"},                         // 4
		[]string{"[2001:db8::1]:80", "*:81"},              // 5
		[]string{"::ffff:198.51.100.0/120"},               // 6
		[]string{"2001:db8:1::/48", "192.0.2.128/25"},     // 7
		[]string{"fe80::1"},                               // 8
		[]string{"192.0.2.10:443", "192.0.2.0/24", "*:1"}, // 9: all taken, first rule wins
	)
	tests := []struct {
		local string
		want  int
	}{
		{"192.0.2.10:443", 0},   // IP:port beats IP
		{"192.0.2.10:80", 1},    // IP beats CIDRs
		{"192.0.2.11:443", 2},   // /24 beats /16
		{"192.0.2.200:443", 7},  // /25 beats /24
		{"192.0.9.1:80", 3},     // /16
		{"192.0.9.1:8443", 3},   // CIDR of the same vhost beats its port
		{"192.0.2.11:8443", 2},  // CIDR beats port-only
		{"203.0.113.1:8443", 3}, // port-only
		{"198.51.100.1:80", 6},  // mapped pattern matches plain IPv4
		{"198.51.101.1:80", -1}, // nothing
		{"[::ffff:192.0.2.10]:443", 0},
		{"[::ffff:192.0.2.10]:80", 1},
		{"[::ffff:192.0.2.11]:80", 2},
		{"[::ffff:198.51.100.9]:80", 6},
		{"[2001:db8::1]:80", 5},
		{"[2001:db8::2]:80", 4},
		{"[2001:db8:1::2]:80", 7}, // /48 beats /32
		{"[2001:db9::1]:81", 5},
		{"[2001:db9::1]:80", -1},
		{"[fe80::1%eth0]:80", 8}, // the zone does not matter
		{"0.0.0.0:1", 9},
	}
	for _, tc := range tests {
		if got := m.MatchAddr(netip.MustParseAddrPort(tc.local)); got != tc.want {
			t.Errorf("MatchAddr(%s) = %d, want %d", tc.local, got, tc.want)
		}
	}
	if got := m.MatchAddr(netip.AddrPort{}); got != -1 {
		t.Errorf("MatchAddr(zero) = %d, want -1", got)
	}
	var none *Matcher
	if got := none.MatchAddr(netip.MustParseAddrPort("192.0.2.10:443")); got != -1 {
		t.Errorf("nil matcher matched %d", got)
	}
	if got := NewMatcher([]Rule{{VHost: 3}}).MatchAddr(netip.MustParseAddrPort("0.0.0.0:0")); got != -1 {
		t.Errorf("an unparsed pattern matched %d", got)
	}
}

// IPv4 rules do not leak into IPv6 and back: ::/0 is not 0.0.0.0/0.
func TestMatchAddrFamilies(t *testing.T) {
	m := matcherOf(t, []string{"0.0.0.0/0"}, []string{"::/0"})
	for local, want := range map[string]int{
		"203.0.113.1:80":          0,
		"[::ffff:203.0.113.1]:80": 0,
		"[2001:db8::1]:80":        1,
		"[::1]:80":                1,
	} {
		if got := m.MatchAddr(netip.MustParseAddrPort(local)); got != want {
			t.Errorf("MatchAddr(%s) = %d, want %d", local, got, want)
		}
	}
}

func TestMatchName(t *testing.T) {
	m := matcherOf(t,
		[]string{"shop.example.com"},          // 0
		[]string{"*.shop.example.com"},        // 1
		[]string{"*.example.com"},             // 2
		[]string{"api.example.com:8443"},      // 3
		[]string{"api.example.com"},           // 4
		[]string{"*.static.example.com:8080"}, // 5
		[]string{"192.0.2.1"},                 // 6: addresses are not names
	)
	tests := []struct {
		host string
		port uint16
		want int
	}{
		{"shop.example.com", 80, 0},
		{"SHOP.Example.com.", 80, 0},
		{"shop.example.com:8080", 80, 0},
		{"shop.example.com.:8080", 80, 0},
		{"www.shop.example.com", 80, 1}, // longest wildcard
		{"a.b.shop.example.com", 80, 1}, // wildcards span several labels
		{"WWW.Shop.Example.Com", 80, 1},
		{"blog.example.com", 80, 2},
		{"example.com", 80, -1},      // *.example.com is not example.com
		{"api.example.com", 8443, 3}, // name with the port beats name alone
		{"api.example.com", 443, 4},
		{"api.example.com:443", 8443, 3}, // the local port decides, not the Host header's
		{"img.static.example.com", 8080, 5},
		{"img.static.example.com", 80, 2}, // port-bound wildcard skipped, shorter one applies
		{"other.org", 80, -1},
		{"", 80, -1},
		{".", 80, -1},
		{":80", 80, -1},
		{".example.com", 80, -1}, // empty first label is not a name
		{"a..example.com", 80, -1},
		{"shop.example.com:http", 80, -1},
		{"shop.example.com/x", 80, -1},
		{"[2001:db8::1]:80", 80, -1},
		{"192.0.2.1", 80, -1},
	}
	for _, tc := range tests {
		local := netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), tc.port)
		if got := m.MatchName(tc.host, local); got != tc.want {
			t.Errorf("MatchName(%q, port %d) = %d, want %d", tc.host, tc.port, got, tc.want)
		}
	}
	if got := (*Matcher)(nil).MatchName("shop.example.com", netip.AddrPort{}); got != -1 {
		t.Errorf("nil matcher matched %d", got)
	}
}

func TestListenerDecides(t *testing.T) {
	addrOnly := matcherOf(t, []string{"192.0.2.10"}, []string{"*:8443"})
	portsOnly := matcherOf(t, []string{"*:8443"})
	named := matcherOf(t, []string{"shop.example.com"})
	tests := []struct {
		name   string
		m      *Matcher
		bound  string
		want   int
		wantOK bool
	}{
		{"specific address decides", addrOnly, "192.0.2.10:80", 0, true},
		{"specific address, no rule", addrOnly, "192.0.2.11:80", -1, true},
		{"specific address, port rule", addrOnly, "192.0.2.11:8443", 1, true},
		{"wildcard with address rules", addrOnly, "0.0.0.0:80", -1, false},
		{"wildcard, port rules only", portsOnly, "[::]:8443", 0, true},
		{"wildcard, port rules only, other port", portsOnly, "[::]:80", -1, true},
		{"names need the client's bytes", named, "192.0.2.10:80", -1, false},
		{"no table", nil, "0.0.0.0:80", -1, true},
	}
	for _, tc := range tests {
		got, ok := tc.m.ListenerDecides(netip.MustParseAddrPort(tc.bound))
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("%s: got %d %v, want %d %v", tc.name, got, ok, tc.want, tc.wantOK)
		}
	}
}

// bigMatcher is a hoster's table: 1,000 vhosts on their own addresses,
// 1,000 on /24s, a few ports and names.
func bigMatcher(tb testing.TB) *Matcher {
	var lists [][]string
	for i := range 1000 {
		lists = append(lists, []string{netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}).String()})
	}
	for i := range 1000 {
		lists = append(lists, []string{fmt.Sprintf("172.%d.%d.0/24", 16+i>>8, i&0xff)})
	}
	lists = append(lists, []string{"192.0.2.0/24", "198.51.100.0/24", "*:8443"}, []string{"shop.example.com", "*.example.com"})
	return matcherOf(tb, lists...)
}

// The matcher is on the per-connection path: no lookup may allocate.
func TestMatchDoesNotAllocate(t *testing.T) {
	m := bigMatcher(t)
	for _, local := range []string{"10.0.3.7:80", "172.17.2.9:443", "192.0.2.7:443", "203.0.113.1:8443", "203.0.113.1:80", "[::ffff:192.0.2.7]:443", "[2001:db8::1]:443", "[fe80::1%eth0]:80"} {
		ap := netip.MustParseAddrPort(local)
		if n := testing.AllocsPerRun(100, func() { m.MatchAddr(ap) }); n != 0 {
			t.Errorf("MatchAddr(%s): %v allocations", local, n)
		}
	}
	ap := netip.MustParseAddrPort("192.0.2.1:443")
	for _, host := range []string{"shop.example.com", "a.b.example.com:443", "WWW.Example.COM.", "other.org", "garbage!"} {
		if n := testing.AllocsPerRun(100, func() { m.MatchName(host, ap) }); n != 0 {
			t.Errorf("MatchName(%q): %v allocations", host, n)
		}
	}
}

// Run with -race: one Matcher serves every notification goroutine.
func TestMatcherConcurrent(t *testing.T) {
	m := bigMatcher(t)
	want := m.MatchAddr(netip.MustParseAddrPort("172.17.2.9:443"))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				if got := m.MatchAddr(netip.MustParseAddrPort("172.17.2.9:443")); got != want {
					t.Errorf("got %d, want %d", got, want)
					return
				}
				m.MatchName("www.example.com", netip.MustParseAddrPort("192.0.2.1:443"))
			}
		})
	}
	wg.Wait()
}

func BenchmarkMatchAddr(b *testing.B) {
	m := bigMatcher(b)
	for _, bc := range []struct{ name, local string }{
		{"addr", "10.0.3.7:80"},
		{"prefix", "172.17.2.9:443"},
		{"port", "203.0.113.1:8443"},
		{"miss", "203.0.113.1:80"},
		{"mapped", "[::ffff:192.0.2.7]:443"},
		{"ipv6-miss", "[2001:db8::1]:443"},
	} {
		local := netip.MustParseAddrPort(bc.local)
		want := m.MatchAddr(local)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if m.MatchAddr(local) != want {
					b.Fatal("wrong match")
				}
			}
		})
	}
}

func BenchmarkMatchName(b *testing.B) {
	m := bigMatcher(b)
	local := netip.MustParseAddrPort("192.0.2.1:443")
	for _, host := range []string{"shop.example.com", "a.b.c.example.com:443", "Shop.Example.Com", "other.org"} {
		b.Run(host, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				m.MatchName(host, local)
			}
		})
	}
}

func FuzzParsePattern(f *testing.F) {
	for _, s := range []string{"192.0.2.1", "[::1]:80", "[::1]", "10.0.0.0/8", "*:80", "*.a.b", "a.b:1", "::ffff:1.2.3.4/120", "fe80::1%lo", "Shop.Example.COM.", "*", "unix:/run/php/a.sock", "unix:@fpm", "unix:/a/../b"} {
		f.Add(s, "a.b:80")
	}
	f.Fuzz(func(t *testing.T, s, host string) {
		p, err := ParsePattern(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), strconv.Quote(s)+": ") {
				t.Errorf("error %q does not start with the pattern", err)
			}
			return
		}
		if p.Raw != s || p.Kind == KindInvalid {
			t.Fatalf("parsed %q to %+v", s, p)
		}
		again, err := ParsePattern(p.Canonical())
		if err != nil {
			t.Fatalf("canonical form %q of %q does not parse: %v", p.Canonical(), s, err)
		}
		if again.Canonical() != p.Canonical() {
			t.Fatalf("canonical form not stable: %q -> %q", p.Canonical(), again.Canonical())
		}
		m := NewMatcher([]Rule{{VHost: 0, Pattern: p}})
		local := netip.MustParseAddrPort("192.0.2.1:80")
		m.MatchName(host, local)
		switch p.Kind {
		case KindName:
			if m.MatchAddr(local) != -1 {
				t.Errorf("name pattern %q matched an address", s)
			}
			name, wild := strings.CutPrefix(p.Name, "*.")
			if wild {
				name = "x." + name
			}
			if m.MatchName(name, netip.AddrPortFrom(local.Addr(), max(p.Port, 1))) != 0 {
				t.Errorf("name pattern %q does not match %q", s, name)
			}
		case KindAddr, KindAddrPort:
			port := max(p.Port, 1)
			if m.MatchAddr(netip.AddrPortFrom(p.Prefix.Addr(), port)) != 0 {
				t.Errorf("address pattern %q does not match its own address", s)
			}
		case KindPrefix:
			if m.MatchAddr(netip.AddrPortFrom(p.Prefix.Addr(), 1)) != 0 {
				t.Errorf("prefix pattern %q does not match its own network", s)
			}
		case KindPort:
			if m.MatchAddr(netip.AddrPortFrom(local.Addr(), p.Port)) != 0 {
				t.Errorf("port pattern %q does not match its port", s)
			}
		case KindUnix:
			if m.MatchPath(p.Path) != 0 {
				t.Errorf("unix pattern %q does not match its path", s)
			}
			if m.MatchAddr(local) != -1 || m.MatchNameOnPath(host, p.Path) != -1 {
				t.Errorf("unix pattern %q matched an address or a name", s)
			}
		}
	})
}

// A name vhost restricted to some listening addresses ("listen") only
// claims connections to those; elsewhere the name falls through to a less
// specific rule or to the address rules, and listeners whose connections
// no name can claim still decide alone.
func TestListenRestriction(t *testing.T) {
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
	var rules []Rule
	add := func(vhost int, match []string, listen []string) {
		for _, p := range parse(match...) {
			rules = append(rules, Rule{VHost: vhost, Pattern: p, Listen: parse(listen...)})
		}
	}
	add(0, []string{"shop.example.com"}, []string{"192.0.2.10", "*:8443"})
	add(1, []string{"*.example.com"}, []string{"192.0.2.0/24"})
	add(2, []string{"198.51.100.7"}, nil)
	m := NewMatcher(rules)

	names := []struct {
		host, local string
		want        int
	}{
		{"shop.example.com", "192.0.2.10:80", 0},
		{"shop.example.com", "203.0.113.5:8443", 0},  // listen *:8443
		{"shop.example.com", "192.0.2.11:80", 1},     // not 0's address: the wildcard's
		{"shop.example.com", "198.51.100.7:80", -1},  // neither listens there
		{"blog.example.com", "192.0.2.99:443", 1},    // wildcard inside its /24
		{"blog.example.com", "203.0.113.5:8443", -1}, // wildcard outside
	}
	for _, tc := range names {
		if got := m.MatchName(tc.host, netip.MustParseAddrPort(tc.local)); got != tc.want {
			t.Errorf("MatchName(%s at %s) = %d, want %d", tc.host, tc.local, got, tc.want)
		}
	}
	applies := []struct {
		local string
		want  bool
	}{
		{"192.0.2.10:80", true},
		{"192.0.2.77:80", true},
		{"203.0.113.5:8443", true},
		{"203.0.113.5:80", false},
		{"198.51.100.7:80", false},
	}
	for _, tc := range applies {
		if got := m.NamesApply(netip.MustParseAddrPort(tc.local)); got != tc.want {
			t.Errorf("NamesApply(%s) = %v, want %v", tc.local, got, tc.want)
		}
	}
	decides := []struct {
		bound  string
		want   int
		wantOK bool
	}{
		{"198.51.100.7:80", 2, true}, // no name listens there: the address decides
		{"203.0.113.5:80", -1, true},
		{"192.0.2.10:80", -1, false},
		{"0.0.0.0:80", -1, false}, // a wildcard listener may see 192.0.2.x
	}
	for _, tc := range decides {
		got, ok := m.ListenerDecides(netip.MustParseAddrPort(tc.bound))
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("ListenerDecides(%s) = %d %v, want %d %v", tc.bound, got, ok, tc.want, tc.wantOK)
		}
	}
	if !matcherOf(t, []string{"shop.example.com"}).NamesApply(netip.MustParseAddrPort("203.0.113.5:80")) {
		t.Error("an unrestricted name must apply on every address")
	}
}
