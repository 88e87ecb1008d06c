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
