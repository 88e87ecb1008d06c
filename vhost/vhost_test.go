package vhost

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParsePattern(t *testing.T) {
	tests := []struct {
		in      string
		kind    Kind
		want    string // Prefix, Port or Name, as fits the kind
		wantErr string
	}{
		{in: "192.0.2.10", kind: KindAddr, want: "192.0.2.10/32"},
		{in: "2001:db8::1", kind: KindAddr, want: "2001:db8::1/128"},
		{in: "::ffff:192.0.2.10", kind: KindAddr, want: "192.0.2.10/32"},
		{in: "192.0.2.10:443", kind: KindAddrPort, want: "192.0.2.10/32 443"},
		{in: "[2001:db8::1]:443", kind: KindAddrPort, want: "2001:db8::1/128 443"},
		{in: "10.1.2.3/8", kind: KindPrefix, want: "10.0.0.0/8"},
		{in: "2001:db8::/32", kind: KindPrefix, want: "2001:db8::/32"},
		{in: "::ffff:10.0.0.0/104", kind: KindPrefix, want: "10.0.0.0/8"},
		{in: "*:8443", kind: KindPort, want: "8443"},
		{in: "Shop.Example.COM.", kind: KindName, want: "shop.example.com"},
		{in: "*.shop.example.com", kind: KindName, want: "*.shop.example.com"},
		{in: "shop.example.com:8080", kind: KindName, want: "shop.example.com 8080"},
		{in: "10.0.0.0/33", wantErr: "prefix length 33 out of range for IPv4"},
		{in: "2001:db8::/129", wantErr: "out of range for IPv6"},
		{in: "192.0.2.300", wantErr: "not a valid IP address"},
		{in: "192.0.2.1:0", wantErr: "port 0"},
		{in: "*:99999", wantErr: "*:PORT"},
		{in: "", wantErr: "empty"},
		{in: " shop", wantErr: "spaces"},
		{in: "shop..example.com", wantErr: "empty label"},
		{in: "shop!.com", wantErr: "cannot be in a host name"},
		{in: "a.*.example.com", wantErr: "whole first label"},
		{in: "-shop.com", wantErr: "starts or ends with '-'"},
		{in: "shop.com:http", wantErr: "port must be"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			p, err := ParsePattern(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Kind != tc.kind {
				t.Fatalf("kind %v, want %v", p.Kind, tc.kind)
			}
			var got string
			switch p.Kind {
			case KindAddr, KindPrefix:
				got = p.Prefix.String()
			case KindAddrPort:
				got = p.Prefix.String() + " " + itoa(p.Port)
			case KindPort:
				got = itoa(p.Port)
			case KindName:
				got = p.Name
				if p.Port != 0 {
					got += " " + itoa(p.Port)
				}
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			if p.String() != tc.in {
				t.Errorf("Raw %q, want the input back", p.String())
			}
		})
	}
}

func itoa(n uint16) string {
	return netip.AddrPortFrom(netip.IPv4Unspecified(), n).String()[len("0.0.0.0:"):]
}

func matcherOf(t *testing.T, patterns ...[]string) *Matcher {
	t.Helper()
	var rules []Rule
	for i, list := range patterns {
		for _, s := range list {
			p, err := ParsePattern(s)
			if err != nil {
				t.Fatal(err)
			}
			rules = append(rules, Rule{VHost: i, Pattern: p})
		}
	}
	return NewMatcher(rules)
}

func TestMatchAddr(t *testing.T) {
	m := matcherOf(t,
		[]string{"192.0.2.10:443"},           // 0
		[]string{"192.0.2.10"},               // 1
		[]string{"192.0.2.0/24"},             // 2
		[]string{"192.0.0.0/16", "*:8443"},   // 3
		[]string{"2001:db8::/32"},            // 4
		[]string{"[2001:db8::1]:80", "*:81"}, // 5
	)
	tests := []struct {
		local string
		want  int
	}{
		{"192.0.2.10:443", 0},
		{"192.0.2.10:80", 1},
		{"192.0.2.11:443", 2},
		{"192.0.9.1:80", 3},
		{"198.51.100.1:8443", 3},
		{"198.51.100.1:80", -1},
		{"[::ffff:192.0.2.10]:443", 0},
		{"[::ffff:192.0.2.11]:80", 2},
		{"[2001:db8::1]:80", 5},
		{"[2001:db8::2]:80", 4},
		{"[2001:db9::1]:81", 5},
		{"[2001:db9::1]:80", -1},
	}
	for _, tc := range tests {
		if got := m.MatchAddr(netip.MustParseAddrPort(tc.local)); got != tc.want {
			t.Errorf("MatchAddr(%s) = %d, want %d", tc.local, got, tc.want)
		}
	}
}

func TestMatchName(t *testing.T) {
	m := matcherOf(t,
		[]string{"shop.example.com"},     // 0
		[]string{"*.shop.example.com"},   // 1
		[]string{"*.example.com"},        // 2
		[]string{"api.example.com:8443"}, // 3
		[]string{"api.example.com"},      // 4
	)
	tests := []struct {
		host string
		port uint16
		want int
	}{
		{"shop.example.com", 80, 0},
		{"SHOP.Example.com.", 80, 0},
		{"shop.example.com:8080", 80, 0},
		{"www.shop.example.com", 80, 1},
		{"a.b.shop.example.com", 80, 1},
		{"blog.example.com", 80, 2},
		{"example.com", 80, -1},
		{"api.example.com", 8443, 3},
		{"api.example.com", 443, 4},
		{"other.org", 80, -1},
		{"", 80, -1},
		{"[2001:db8::1]:80", 80, -1},
	}
	for _, tc := range tests {
		local := netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), tc.port)
		if got := m.MatchName(tc.host, local); got != tc.want {
			t.Errorf("MatchName(%q, port %d) = %d, want %d", tc.host, tc.port, got, tc.want)
		}
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
		{"wildcard with address rules", addrOnly, "0.0.0.0:80", -1, false},
		{"wildcard, port rules only", portsOnly, "[::]:8443", 0, true},
		{"names need the client's bytes", named, "192.0.2.10:80", -1, false},
	}
	for _, tc := range tests {
		got, ok := tc.m.ListenerDecides(netip.MustParseAddrPort(tc.bound))
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("%s: got %d %v, want %d %v", tc.name, got, ok, tc.want, tc.wantOK)
		}
	}
}

func BenchmarkMatchAddr(b *testing.B) {
	var list []string
	for i := 0; i < 200; i++ {
		list = append(list, netip.AddrFrom4([4]byte{10, 0, byte(i), 1}).String())
	}
	m := matcherOf(&testing.T{}, list, []string{"192.0.2.0/24", "198.51.100.0/24"})
	local := netip.MustParseAddrPort("192.0.2.77:443")
	b.ReportAllocs()
	for b.Loop() {
		if m.MatchAddr(local) != 1 {
			b.Fatal("wrong match")
		}
	}
}

func FuzzParsePattern(f *testing.F) {
	for _, s := range []string{"192.0.2.1", "[::1]:80", "10.0.0.0/8", "*:80", "*.a.b", "a.b:1", "::ffff:1.2.3.4/120"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePattern(s)
		if err != nil {
			return
		}
		m := NewMatcher([]Rule{{VHost: 0, Pattern: p}})
		m.MatchAddr(netip.MustParseAddrPort("192.0.2.1:80"))
		m.MatchName(s, netip.MustParseAddrPort("192.0.2.1:80"))
		if p.Kind == KindName && m.MatchName(strings.TrimPrefix(p.Name, "*."), netip.AddrPortFrom(netip.IPv4Unspecified(), p.Port)) != 0 && !strings.HasPrefix(p.Name, "*.") {
			t.Errorf("name pattern %q does not match its own name", s)
		}
	})
}
