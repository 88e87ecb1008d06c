package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vhqos/vhqos/cgroup"
	"github.com/vhqos/vhqos/intercept"
	"github.com/vhqos/vhqos/vhost"
)

// Every key of REFERENCE.md (and README.md's summary of it), at the edges
// of what the text allows: the smallest and the largest value, the default
// (the key left out), and one step past each end. One table per key; what
// the values do once applied is tested where it shows: cgroup
// (documented_test.go: the files written), vhost (host names and sniff
// limits), supervisor (sniff limits on real connections).

// keyCase is one value written for one key.
type keyCase struct {
	value string // TOML text after "key = "; "" leaves the key out
	want  any    // what the table holds when the value is accepted
	err   string // part of the one problem reported; "" when accepted
}

// checkKey writes "key = value" as the line after header (value placed in
// tmpl at %s) and checks that the table then holds want, or that exactly
// one problem is reported, at that line and at the value's byte column,
// saying err. An accepted value also reads back the same from the
// canonical form `vhqos check` understood (Marshal).
func checkKey(t *testing.T, header, key, tmpl string, get func(*Table) any, cases []keyCase) {
	t.Helper()
	line := strings.Count(header, "\n") + 1
	col := len(key+" = ") + strings.Index(tmpl, "%s") + 1
	for _, tc := range cases {
		label := tc.value
		if label == "" {
			label = "absent"
		} else if len(label) > 24 {
			label = fmt.Sprintf("%s...(%d)", label[:12], len(label))
		}
		t.Run(label, func(t *testing.T) {
			src := header
			if tc.value != "" {
				src += key + " = " + fmt.Sprintf(tmpl, tc.value) + "\n"
			}
			tab, err := parse(t, src)
			if tc.err == "" {
				if err != nil {
					t.Fatalf("%s = %s refused:\n%v", key, tc.value, err)
				}
				if got := get(tab); !reflect.DeepEqual(got, tc.want) {
					t.Errorf("%s = %s gives %#v, want %#v", key, tc.value, got, tc.want)
				}
				again, err := parse(t, string(tab.Marshal()))
				if err != nil {
					t.Fatalf("canonical form refused: %v\n%s", err, tab.Marshal())
				}
				if got := get(again); !reflect.DeepEqual(got, tc.want) {
					t.Errorf("canonical form\n%s gives %#v, want %#v", tab.Marshal(), got, tc.want)
				}
				return
			}
			var ps Problems
			if !errors.As(err, &ps) || len(ps) != 1 {
				t.Fatalf("%s = %s: err = %v; want one problem saying %q", key, tc.value, err, tc.err)
			}
			if p := ps[0]; !strings.Contains(p.Msg, tc.err) || p.Line != line || p.Column != col {
				t.Errorf("%s = %s: got %s\nwant line %d, column %d, saying %q", key, tc.value, p, line, col, tc.err)
			}
		})
	}
}

const oneVHost = "[[vhost]]\nname = \"v\"\nmatch = [\"192.0.2.1\"]\n"

// limitSections are the two places a limit key may be written.
var limitSections = []struct {
	name, header string
	class        func(*Table) Class
}{
	{"defaults", "[defaults]\n", func(t *Table) Class { return t.Defaults }},
	{"vhost", oneVHost, func(t *Table) Class { return t.VHosts[0] }},
}

func checkLimit(t *testing.T, key, tmpl string, get func(Class) any, cases []keyCase) {
	for _, s := range limitSections {
		t.Run(s.name, func(t *testing.T) {
			checkKey(t, s.header, key, tmpl, func(tab *Table) any { return get(s.class(tab)) }, cases)
		})
	}
}

// cgroup_parent: `""` (default), or an absolute, clean cgroup path.
func TestKeyCgroupParent(t *testing.T) {
	checkKey(t, "[settings]\n", "cgroup_parent", "%s", func(t *Table) any { return t.Settings.CgroupParent }, []keyCase{
		{value: "", want: ""},
		{value: `""`, want: ""},
		{value: `"/"`, want: "/"},
		{value: `"/vhqos.slice"`, want: "/vhqos.slice"},
		{value: `"/a.slice/b.slice"`, want: "/a.slice/b.slice"},
		{value: `"vhqos.slice"`, err: `"vhqos.slice" is relative; write an absolute cgroup path such as "/vhqos.slice"`},
		{value: `"/vhqos.slice/"`, err: `is not a clean path; write "/vhqos.slice"`},
		{value: `"/a/../b"`, err: `is not a clean path; write "/b"`},
		{value: `"/a\u0001"`, err: "control character"},
		{value: `1`, err: "write an absolute cgroup path as a string"},
	})
}

// track: "accept" (default), "fork" or "full".
func TestKeyTrack(t *testing.T) {
	checkKey(t, "[settings]\n", "track", "%s", func(t *Table) any { return t.Settings.Track }, []keyCase{
		{value: "", want: intercept.TrackAccept},
		{value: `"accept"`, want: intercept.TrackAccept},
		{value: `"fork"`, want: intercept.TrackFork},
		{value: `"full"`, want: intercept.TrackFull},
		{value: `"forks"`, err: `"forks" is not a tracking mode`},
		{value: `"FULL"`, err: `"FULL" is not a tracking mode`},
		{value: `1`, err: `write "accept", "fork" or "full"`},
	})
}

// sniff_timeout: a duration string, "10ms" to "60s" (Go syntax); default "2s".
func TestKeySniffTimeout(t *testing.T) {
	get := func(t *Table) any { d, _ := t.Settings.SniffLimits(); return d }
	const rangeErr = "out of range: from 10ms to 1m0s"
	checkKey(t, "[settings]\n", "sniff_timeout", "%s", get, []keyCase{
		{value: "", want: 2 * time.Second},
		{value: `"2s"`, want: 2 * time.Second},
		{value: `"1500ms"`, want: 1500 * time.Millisecond},
		{value: `"10ms"`, want: 10 * time.Millisecond},
		{value: `"0.01s"`, want: 10 * time.Millisecond},
		{value: `"9.999999ms"`, err: rangeErr},
		{value: `"9ms"`, err: rangeErr},
		{value: `"0s"`, err: rangeErr},
		{value: `"-2s"`, err: rangeErr},
		{value: `"60s"`, want: 60 * time.Second},
		{value: `"1m"`, want: 60 * time.Second},
		{value: `"60.000000001s"`, err: rangeErr},
		{value: `"61s"`, err: rangeErr},
		{value: `"2"`, err: `"2" is not a duration`},
		{value: `"2 s"`, err: `"2 s" is not a duration`},
		{value: `2`, err: "write a duration as a string"},
	})
}

// sniff_bytes: whole number 512..65536; default 16384.
func TestKeySniffBytes(t *testing.T) {
	get := func(t *Table) any { _, n := t.Settings.SniffLimits(); return n }
	const rangeErr = "out of range: use 512..65536"
	checkKey(t, "[settings]\n", "sniff_bytes", "%s", get, []keyCase{
		{value: "", want: 16384},
		{value: "16384", want: 16384},
		{value: "512", want: 512},
		{value: "511", err: "511 is " + rangeErr},
		{value: "0", err: rangeErr},
		{value: "65536", want: 65536},
		{value: "65537", err: "65537 is " + rangeErr},
		{value: `"16384"`, err: "write the number without quotes"},
		{value: "16384.0", err: "write a whole number"},
	})
}

// proxy_protocol: a list of address patterns (IP, IP:port, [v6]:port,
// CIDR, *:port; no host names); absent or [] trusts no listener.
func TestKeyProxyProtocol(t *testing.T) {
	canon := func(t *Table) any {
		var out []string
		for _, p := range t.Settings.ProxyProtocol {
			out = append(out, p.Canonical())
		}
		return out
	}
	checkKey(t, "[settings]\n", "proxy_protocol", "%s", canon, []keyCase{
		{value: "", want: []string(nil)},
		{value: `[]`, want: []string(nil)},
		{value: `["127.0.0.1:8080"]`, want: []string{"127.0.0.1:8080"}},
		{value: `["127.0.0.1:8080", "*:8443", "10.0.0.0/8", "[2001:db8::1]:443", "2001:db8::/32", "192.0.2.1", "::ffff:192.0.2.2"]`,
			want: []string{"127.0.0.1:8080", "*:8443", "10.0.0.0/8", "[2001:db8::1]:443", "2001:db8::/32", "192.0.2.1", "192.0.2.2"}},
		{value: `["*:8443", "*:8443"]`, want: []string{"*:8443", "*:8443"}}, // twice is harmless
		{value: `"127.0.0.1:8080"`, err: `must be a list, even of one address: proxy_protocol = ["127.0.0.1:8080"]`},
		{value: `true`, err: "list the local addresses of the listeners a proxy sends the PROXY protocol to"},
		{value: `8080`, err: `write a list, e.g. proxy_protocol = ["127.0.0.1:8080", "*:8443"]`},
	})
	// A bad entry is reported at its place in the list.
	checkKey(t, "[settings]\n", "proxy_protocol", `["*:80", %s]`, func(*Table) any { return nil }, []keyCase{
		{value: `"lb.example.com"`, err: `"lb.example.com" is a host name; proxy_protocol lists local addresses`},
		{value: `"lb.example.com:8080"`, err: "is a host name"},
		{value: `"10.0.0.0/33"`, err: "prefix length 33 out of range for IPv4"},
		{value: `"192.0.2.300"`, err: "not a valid IP address"},
		{value: `"0.0.0.0:8080"`, err: "write *:8080 for that port on every address"},
		{value: `"*:0"`, err: "PORT 1..65535"},
		{value: `"*"`, err: "a bare * would match every connection"},
		{value: `"unix:/run/nginx.sock"`, err: `"unix:/run/nginx.sock" is a unix socket; proxy_protocol lists TCP addresses`},
		{value: `""`, err: "empty pattern"},
		{value: `8080`, err: "each address is a string"},
	})
	// Misplaced, it says where it belongs, pointing at the key.
	for _, tc := range []struct{ src, err string }{
		{"[defaults]\nproxy_protocol = [\"*:8443\"]\n", "belongs in [settings], not in [defaults]"},
		{oneVHost + "proxy_protocol = [\"*:8443\"]\n", `belongs in [settings], not in vhost "v" (vhost[0])`},
		{"proxy_protocol = [\"*:8443\"]\n", "belongs in [settings]: write [settings] on the line above it"},
	} {
		_, err := parse(t, tc.src)
		line := strings.Count(tc.src, "\n")
		var ps Problems
		if !errors.As(err, &ps) || len(ps) != 1 || ps[0].Line != line || ps[0].Column != 1 || !strings.Contains(ps[0].Msg, tc.err) {
			t.Errorf("%q: err = %v; want one problem at %d:1 saying %q", tc.src, err, line, tc.err)
		}
	}
}

// sniff_bytes is what the name sniffer reads: at every bound, a request
// head of exactly sniff_bytes gives its vhost, and one byte more, seen
// as the supervisor peeks it (sniff_bytes of it), gives none, so the
// address decides ("a request head ... longer than that falls back").
func TestSniffBytesIsWhatIsRead(t *testing.T) {
	for _, setting := range []string{"sniff_bytes = 512\n", "", "sniff_bytes = " + strconv.Itoa(maxSniffBytes) + "\n"} {
		tab, err := parse(t, "[settings]\n"+setting+"[[vhost]]\nname = \"shop\"\nmatch = [\"shop.example.com\"]\n")
		if err != nil {
			t.Fatal(err)
		}
		_, limit := tab.Settings.SniffLimits()
		local := netip.MustParseAddrPort("192.0.2.1:80")
		for _, n := range []int{limit, limit + 1} {
			head := "GET / HTTP/1.1\r\nHost: shop.example.com\r\nX-Pad: "
			head += strings.Repeat("p", n-len(head)-4) + "\r\n\r\n"
			peeked := []byte(head)[:min(n, limit)]
			name, res := vhost.SniffName(peeked)
			got := tab.ClassifyAddr(local).Name
			if res == vhost.Found {
				got = tab.ClassifyName(name, local).Name
			}
			want := "shop"
			if n > limit {
				want = DefaultsName
			}
			if got != want {
				t.Errorf("sniff_bytes %d, request head of %d bytes: class %s (sniffed %q, %v), want %s", limit, n, got, name, res, want)
			}
		}
	}
}

// name: 1-64 of A-Z a-z 0-9 _ . -, starting with a letter or digit; not
// default, home or supervisor (any case).
func TestKeyName(t *testing.T) {
	const charsErr = "use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
	const reserved = "reserved for vhqos's own cgroups"
	long := strings.Repeat("a", 64)
	checkKey(t, "[[vhost]]\nmatch = [\"192.0.2.1\"]\n", "name", "%s", func(t *Table) any { return t.VHosts[0].Name }, []keyCase{
		{value: `"a"`, want: "a"},
		{value: `"7"`, want: "7"},
		{value: `"Shop_2.example-com"`, want: "Shop_2.example-com"},
		{value: strconv.Quote(long), want: long},
		{value: strconv.Quote(long + "a"), err: charsErr},
		{value: `""`, err: charsErr},
		{value: `"_a"`, err: charsErr},
		{value: `".a"`, err: charsErr},
		{value: `"-a"`, err: charsErr},
		{value: `"a b"`, err: charsErr},
		{value: `"a/b"`, err: charsErr},
		{value: `"café"`, err: charsErr},
		{value: `"default"`, err: reserved},
		{value: `"DEFAULT"`, err: reserved},
		{value: `"Home"`, err: reserved},
		{value: `"supervisor"`, err: reserved},
		{value: `"default2"`, want: "default2"},
		{value: `"homes"`, want: "homes"},
		{value: `7`, err: "write the name as a string"},
	})
}

// name: unique, ignoring case.
func TestNamesUnique(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		ok   bool
	}{
		{"shop", "shop2", true},
		{"a.b", "a-b", true},
		{"a.b", "a_b", true},
		{"shop", "shop", false},
		{"shop", "Shop", false},
		{"SHOP", "shop", false},
	} {
		src := fmt.Sprintf("[[vhost]]\nname = %q\nmatch = [\"192.0.2.1\"]\n[[vhost]]\nname = %q\nmatch = [\"192.0.2.2\"]\n", tc.a, tc.b)
		_, err := parse(t, src)
		var ps Problems
		switch {
		case tc.ok && err != nil:
			t.Errorf("%q and %q refused: %v", tc.a, tc.b, err)
		case !tc.ok && (!errors.As(err, &ps) || len(ps) != 1 || ps[0].Line != 5 || ps[0].Column != 8 || !strings.Contains(ps[0].Msg, "names must differ in more than case")):
			t.Errorf("%q and %q: err = %v; want one problem at 5:8 saying names must differ in more than case", tc.a, tc.b, err)
		}
	}
}

// match: a non-empty list of patterns; listen: a non-empty list of address
// patterns, only with a host name in match.
func TestKeyMatchAndListen(t *testing.T) {
	canon := func(ps []vhost.Pattern) any {
		var out []string
		for _, p := range ps {
			out = append(out, p.Canonical())
		}
		return out
	}
	t.Run("match", func(t *testing.T) {
		checkKey(t, "[[vhost]]\nname = \"v\"\n", "match", "%s", func(t *Table) any { return canon(t.VHosts[0].Match) }, []keyCase{
			{value: `["192.0.2.1"]`, want: []string{"192.0.2.1"}},
			{value: `["192.0.2.1", "192.0.2.1/32"]`, want: []string{"192.0.2.1", "192.0.2.1"}}, // twice in one vhost is harmless
			{value: `[]`, err: "is empty"},
			{value: `"192.0.2.1"`, err: `must be a list, even of one pattern: match = ["192.0.2.1"]`},
		})
		checkKey(t, "[[vhost]]\nname = \"v\"\n", "match", "[%s]", func(t *Table) any { return nil }, []keyCase{
			{value: `443`, err: "each pattern is a string"},
		})
	})
	t.Run("listen", func(t *testing.T) {
		checkKey(t, "[[vhost]]\nname = \"v\"\nmatch = [\"shop.example.com\"]\n", "listen", "%s", func(t *Table) any { return canon(t.VHosts[0].Listen) }, []keyCase{
			{value: "", want: []string(nil)},
			{value: `["192.0.2.1", "192.0.2.2:443", "198.51.100.0/24", "*:443"]`, want: []string{"192.0.2.1", "192.0.2.2:443", "198.51.100.0/24", "*:443"}},
			{value: `["unix:/run/php/pool.sock", "unix:@fpm", "*:80"]`, want: []string{"unix:/run/php/pool.sock", "unix:@fpm", "*:80"}},
			{value: `[]`, err: "is empty"},
			{value: `"192.0.2.1"`, err: "must be a list"},
		})
		checkKey(t, "[[vhost]]\nname = \"v\"\nmatch = [\"shop.example.com\"]\n", "listen", "[%s]", func(t *Table) any { return nil }, []keyCase{
			{value: `"blog.example.com"`, err: "is a host name; listen lists local addresses"},
			{value: `"unix:run/php.sock"`, err: "must be absolute"},
		})
	})
	t.Run("listen without a name", func(t *testing.T) {
		checkKey(t, oneVHost, "listen", "%s", func(t *Table) any { return nil }, []keyCase{
			{value: `["192.0.2.1"]`, err: "match lists no host name"},
		})
	})
}

// Address patterns of REFERENCE.md's "Match patterns": each one accepted
// matches the connections (local addresses) the text says and no others;
// each one just past a limit is refused at its place in the list.
func TestAddressPatterns(t *testing.T) {
	tests := []struct {
		pattern     string
		err         string
		match, miss []string
	}{
		// IP, IPv4-mapped addresses counting as IPv4 both ways.
		{pattern: "192.0.2.10", match: []string{"192.0.2.10:80", "[::ffff:192.0.2.10]:443"}, miss: []string{"192.0.2.11:80"}},
		{pattern: "::ffff:192.0.2.10", match: []string{"192.0.2.10:80"}, miss: []string{"192.0.2.11:80"}},
		{pattern: "2001:db8::1", match: []string{"[2001:db8::1]:80"}, miss: []string{"[2001:db8::2]:80"}},
		{pattern: "[2001:db8::1]", match: []string{"[2001:db8::1]:80"}},
		{pattern: "fe80::1", match: []string{"[fe80::1%eth0]:80"}}, // zones are ignored in connections
		{pattern: "fe80::1%eth0", err: "zones (%eth0) are not supported"},
		{pattern: "0.0.0.0", err: "unspecified address"},
		{pattern: "::", err: "unspecified address"},
		{pattern: "::ffff:0.0.0.0", err: "unspecified address"},
		// IP:port, ports 1..65535.
		{pattern: "192.0.2.10:443", match: []string{"192.0.2.10:443", "[::ffff:192.0.2.10]:443"}, miss: []string{"192.0.2.10:80"}},
		{pattern: "[2001:db8::1]:443", match: []string{"[2001:db8::1]:443"}, miss: []string{"[2001:db8::1]:80"}},
		{pattern: "192.0.2.10:1", match: []string{"192.0.2.10:1"}},
		{pattern: "192.0.2.10:65535", match: []string{"192.0.2.10:65535"}},
		{pattern: "192.0.2.10:0", err: "port 0"},
		{pattern: "192.0.2.10:65536", err: "not a valid IP address"},
		{pattern: "[fe80::1%eth0]:80", err: "zones"},
		{pattern: "0.0.0.0:80", err: "write *:80"},
		{pattern: "[::]:80", err: "write *:80"},
		// CIDR: /0../32 and /0../128, bits past the prefix ignored, a
		// full-length prefix is the address.
		{pattern: "0.0.0.0/0", match: []string{"192.0.2.1:80", "[::ffff:10.0.0.1]:80"}, miss: []string{"[2001:db8::1]:80"}},
		{pattern: "10.0.0.0/8", match: []string{"10.0.0.0:80", "10.255.255.255:80"}, miss: []string{"11.0.0.0:80", "9.255.255.255:80"}},
		{pattern: "10.1.2.3/8", match: []string{"10.0.0.1:80"}, miss: []string{"11.0.0.0:80"}},
		{pattern: "192.0.2.10/32", match: []string{"192.0.2.10:80"}, miss: []string{"192.0.2.11:80"}},
		{pattern: "10.0.0.0/33", err: "prefix length 33 out of range for IPv4 (0..32)"},
		{pattern: "10.0.0.0/-1", err: "not a number 0..32"},
		{pattern: "::/0", match: []string{"[2001:db8::1]:80"}},
		{pattern: "2001:db8::/32", match: []string{"[2001:db8:ffff::1]:80"}, miss: []string{"[2001:db9::1]:80"}},
		{pattern: "2001:db8::1/128", match: []string{"[2001:db8::1]:80"}, miss: []string{"[2001:db8::2]:80"}},
		{pattern: "2001:db8::/129", err: "prefix length 129 out of range for IPv6 (0..128)"},
		{pattern: "::ffff:10.0.0.0/104", match: []string{"10.1.1.1:80"}, miss: []string{"11.0.0.0:80"}},
		{pattern: "::ffff:0.0.0.0/96", match: []string{"192.0.2.1:80"}},
		{pattern: "::ffff:0.0.0.0/95", err: "96..128"},
		{pattern: "::ffff:192.0.2.10/128", match: []string{"192.0.2.10:80"}, miss: []string{"192.0.2.11:80"}},
		{pattern: "fe80::%eth0/64", err: "zones"},
		{pattern: "0.0.0.0/32", err: "unspecified"},
		{pattern: "::/128", err: "unspecified"},
		// *:port.
		{pattern: "*:1", match: []string{"192.0.2.1:1", "[2001:db8::1]:1"}, miss: []string{"192.0.2.1:2"}},
		{pattern: "*:65535", match: []string{"192.0.2.1:65535"}},
		{pattern: "*:0", err: "PORT 1..65535"},
		{pattern: "*:65536", err: "PORT 1..65535"},
		{pattern: "*", err: "[defaults]"},
	}
	for _, tc := range tests {
		t.Run(tc.pattern, func(t *testing.T) {
			checkPattern(t, tc.pattern, tc.err)
			tab, err := parse(t, "[[vhost]]\nname = \"v\"\nmatch = ["+strconv.Quote(tc.pattern)+"]\n")
			if err != nil {
				return // reported by checkPattern
			}
			for _, local := range tc.match {
				if got := tab.ClassifyAddr(netip.MustParseAddrPort(local)).Name; got != "v" {
					t.Errorf("connection to %s: %s, want v", local, got)
				}
			}
			for _, local := range tc.miss {
				if got := tab.ClassifyAddr(netip.MustParseAddrPort(local)).Name; got != DefaultsName {
					t.Errorf("connection to %s: %s, want %s", local, got, DefaultsName)
				}
			}
		})
	}
}

// Unix-domain listeners of REFERENCE.md's "Match patterns": unix:/path
// (absolute, clean, at most 107 bytes: sun_path less its NUL) and
// unix:@name (abstract, 1..106 printable bytes) match the connections of
// the listener bound there and nothing else; host names apply on such a
// listener unless a listen list leaves it out, and never with a port.
func TestUnixPatterns(t *testing.T) {
	long := "/" + strings.Repeat("p", 106)
	tests := []struct {
		pattern     string
		err         string
		match, miss []string // listener paths
	}{
		{pattern: "unix:/run/php/shop.sock", match: []string{"/run/php/shop.sock"}, miss: []string{"/run/php/shop.sock2", "@/run/php/shop.sock", "/run/php", ""}},
		{pattern: "unix:" + long, match: []string{long}},
		{pattern: "unix:" + long + "p", err: "sun_path holds at most 107"},
		{pattern: "unix:@shop-fpm", match: []string{"@shop-fpm"}, miss: []string{"/shop-fpm", "@shop"}},
		{pattern: "unix:@a", match: []string{"@a"}},
		{pattern: "unix:@" + strings.Repeat("n", 106), match: []string{"@" + strings.Repeat("n", 106)}},
		{pattern: "unix:@" + strings.Repeat("n", 107), err: "1..106 bytes"},
		{pattern: "unix:@", err: "1..106 bytes"},
		{pattern: "unix:@a\tb", err: "printable ASCII"},
		{pattern: "unix:", err: "empty socket path"},
		{pattern: "unix:php.sock", err: "must be absolute"},
		{pattern: "unix:/run//php.sock", err: `write the path as the listener reports it, "unix:/run/php.sock"`},
		{pattern: "unix:/run/php/", err: `"unix:/run/php"`},
		{pattern: "unix:/run/../php.sock", err: `"unix:/php.sock"`},
		{pattern: "unix:/a\u0000b", err: "NUL"},
	}
	for _, tc := range tests {
		label := tc.pattern
		if len(label) > 30 {
			label = fmt.Sprintf("%s...(%d)", label[:12], len(label))
		}
		t.Run(label, func(t *testing.T) {
			checkPattern(t, tc.pattern, tc.err)
			tab, err := parse(t, "[[vhost]]\nname = \"v\"\nmatch = ["+strconv.Quote(tc.pattern)+"]\n")
			if err != nil {
				return
			}
			for _, path := range tc.match {
				if got := tab.ClassifyPath(path).Name; got != "v" {
					t.Errorf("listener %q: %s, want v", path, got)
				}
			}
			for _, path := range tc.miss {
				if got := tab.ClassifyPath(path).Name; got != DefaultsName {
					t.Errorf("listener %q: %s, want %s", path, got, DefaultsName)
				}
			}
			if got := tab.ClassifyAddr(netip.MustParseAddrPort("192.0.2.1:80")).Name; got != DefaultsName {
				t.Errorf("a TCP connection: %s, want %s", got, DefaultsName)
			}
		})
	}

	tab, err := parse(t, `
[[vhost]]
name = "pool"
match = ["unix:/run/php/pool.sock"]
[[vhost]]
name = "shop"
match = ["shop.example.com", "shop.example.com:8443"]
listen = ["unix:/run/php/pool.sock"]
[[vhost]]
name = "blog"
match = ["blog.example.com"]
[[vhost]]
name = "port"
match = ["api.example.com:9000"]
`)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ host, path, want string }{
		{"", "/run/php/pool.sock", "pool"},
		{"shop.example.com", "/run/php/pool.sock", "shop"},
		{"SHOP.example.com.:8443", "/run/php/pool.sock", "shop"}, // the Host's port does not matter
		{"blog.example.com", "/run/php/pool.sock", "blog"},       // no listen list: every socket
		{"api.example.com", "/run/php/pool.sock", "pool"},        // a name with :port never matches a socket
		{"nobody.example.com", "/run/php/pool.sock", "pool"},
		{"shop.example.com", "/run/php/other.sock", DefaultsName}, // listen leaves that socket out
		{"blog.example.com", "@other", "blog"},
	} {
		c := tab.ClassifyPath(tc.path)
		if tc.host != "" {
			c = tab.ClassifyNameOnPath(tc.host, tc.path)
		}
		if c.Name != tc.want {
			t.Errorf("%q on %s: %s, want %s", tc.host, tc.path, c.Name, tc.want)
		}
	}
	if got := tab.ClassifyName("shop.example.com", netip.MustParseAddrPort("192.0.2.1:80")).Name; got != DefaultsName {
		t.Errorf("a name listening on a unix socket only matched on TCP: %s", got)
	}
}

// checkPattern parses a table whose vhost matches pattern after a good
// one and checks it is accepted, or refused with one problem at its place.
func checkPattern(t *testing.T, pattern, wantErr string) {
	t.Helper()
	const prefix = `match = ["192.0.2.99", `
	_, err := parse(t, "[[vhost]]\nname = \"v\"\n"+prefix+strconv.Quote(pattern)+"]\n")
	if wantErr == "" {
		if err != nil {
			t.Errorf("%q refused: %v", pattern, err)
		}
		return
	}
	var ps Problems
	if !errors.As(err, &ps) || len(ps) != 1 {
		t.Fatalf("%q: err = %v; want one problem saying %q", pattern, err, wantErr)
	}
	if p := ps[0]; p.Key != "vhost[0].match[1]" || p.Line != 3 || p.Column != len(prefix)+1 || !strings.Contains(p.Msg, wantErr) {
		t.Errorf("%q: got %s\nwant vhost[0].match[1] at 3:%d saying %q", pattern, p, len(prefix)+1, wantErr)
	}
}

// Host name patterns: case, trailing dot and the Host header's port do not
// matter; labels of 1-63 characters, 253 in all; a wildcard is the whole
// first label and does not match the suffix itself; a name with :port
// matches only connections to that local port.
func TestNamePatterns(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	name253 := strings.Repeat("abcdefghi.", 25) + "abc"
	type conn struct{ host, local string }
	tests := []struct {
		pattern     string
		err         string
		match, miss []conn
	}{
		{pattern: "shop.example.com", match: []conn{{"shop.example.com", "192.0.2.1:80"}, {"SHOP.Example.COM.", "192.0.2.1:443"}, {"shop.example.com:8080", "192.0.2.1:80"}},
			miss: []conn{{"www.shop.example.com", "192.0.2.1:80"}, {"example.com", "192.0.2.1:80"}}},
		{pattern: "Shop.Example.COM.", match: []conn{{"shop.example.com", "192.0.2.1:80"}}},
		{pattern: "*.example.com", match: []conn{{"a.example.com", "192.0.2.1:80"}, {"a.b.example.com", "192.0.2.1:80"}},
			miss: []conn{{"example.com", "192.0.2.1:80"}, {"aexample.com", "192.0.2.1:80"}}},
		{pattern: "shop.example.com:8443", match: []conn{{"shop.example.com", "192.0.2.1:8443"}, {"shop.example.com:80", "192.0.2.1:8443"}},
			miss: []conn{{"shop.example.com:8443", "192.0.2.1:80"}}},
		{pattern: "shop.example.com:1", match: []conn{{"shop.example.com", "192.0.2.1:1"}}},
		{pattern: "shop.example.com:65535", match: []conn{{"shop.example.com", "192.0.2.1:65535"}}},
		{pattern: "shop.example.com:0", err: "1..65535"},
		{pattern: "shop.example.com:65536", err: "1..65535"},
		{pattern: "a", match: []conn{{"a", "192.0.2.1:80"}}},
		{pattern: label63 + ".example", match: []conn{{label63 + ".example", "192.0.2.1:80"}}},
		{pattern: label63 + "a.example", err: "DNS allows 63"},
		{pattern: name253, match: []conn{{name253, "192.0.2.1:80"}, {name253 + ".", "192.0.2.1:80"}}},
		{pattern: name253 + ".", match: []conn{{name253, "192.0.2.1:80"}}},
		{pattern: name253 + "d", err: "DNS allows 253"},
		{pattern: "*." + name253[2:], match: []conn{{"a." + name253[2:], "192.0.2.1:80"}}},
		{pattern: "*.b" + name253[2:], err: "DNS allows 253"},
		{pattern: "xn--bcher-kva.example", match: []conn{{"xn--bcher-kva.example", "192.0.2.1:80"}}},
		{pattern: "bücher.example", err: "xn--"},
		{pattern: "_sip.example.com", match: []conn{{"_sip.example.com", "192.0.2.1:80"}}},
		{pattern: "a.*.example.com", err: "whole first label"},
		{pattern: "*example.com", err: "whole first label"},
		{pattern: "-shop.example.com", err: "starts or ends with '-'"},
		{pattern: "shop..example.com", err: "empty label"},
	}
	for _, tc := range tests {
		label := tc.pattern
		if len(label) > 30 {
			label = fmt.Sprintf("%s...(%d)", label[:12], len(label))
		}
		t.Run(label, func(t *testing.T) {
			checkPattern(t, tc.pattern, tc.err)
			tab, err := parse(t, "[[vhost]]\nname = \"v\"\nmatch = ["+strconv.Quote(tc.pattern)+"]\n")
			if err != nil {
				return
			}
			for _, c := range tc.match {
				if got := tab.ClassifyName(c.host, netip.MustParseAddrPort(c.local)).Name; got != "v" {
					t.Errorf("%q at %s: %s, want v", c.host, c.local, got)
				}
			}
			for _, c := range tc.miss {
				if got := tab.ClassifyName(c.host, netip.MustParseAddrPort(c.local)).Name; got != DefaultsName {
					t.Errorf("%q at %s: %s, want %s", c.host, c.local, got, DefaultsName)
				}
			}
		})
	}
}

// "The most specific match wins": IP:port, then IP, then the longest CIDR,
// then *:port, then [defaults]; an exact name beats any wildcard, a longer
// wildcard a shorter one, a name with :port the same name without; a name
// that matches beats the address; a name of a vhost with listen counts
// only there, and its address patterns everywhere.
func TestMostSpecificWins(t *testing.T) {
	tab, err := parse(t, `
[[vhost]]
name = "addrport"
match = ["192.0.2.10:443"]
[[vhost]]
name = "addr"
match = ["192.0.2.10"]
[[vhost]]
name = "cidr24"
match = ["192.0.2.0/24"]
[[vhost]]
name = "cidr16"
match = ["192.0.0.0/16"]
[[vhost]]
name = "port"
match = ["*:443"]
[[vhost]]
name = "exact"
match = ["shop.example.com"]
[[vhost]]
name = "exactport"
match = ["shop.example.com:8443"]
[[vhost]]
name = "wild"
match = ["*.example.com"]
[[vhost]]
name = "longwild"
match = ["*.shop.example.com"]
[[vhost]]
name = "listening"
match = ["blog.example.org", "203.0.113.5"]
listen = ["198.51.100.1"]
`)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ host, local, want string }{
		{"", "192.0.2.10:443", "addrport"},
		{"", "192.0.2.10:80", "addr"},
		{"", "192.0.2.11:443", "cidr24"},
		{"", "192.0.3.1:443", "cidr16"},
		{"", "198.51.100.9:443", "port"},
		{"", "198.51.100.9:80", DefaultsName},
		{"shop.example.com", "192.0.2.10:443", "exact"},
		{"shop.example.com", "192.0.2.10:8443", "exactport"},
		{"www.shop.example.com", "192.0.2.10:443", "longwild"},
		{"www.example.com", "192.0.2.10:443", "wild"},
		{"example.com", "192.0.2.10:80", "addr"},
		{"nobody.example.net", "192.0.2.11:443", "cidr24"},
		{"blog.example.org", "198.51.100.1:80", "listening"},
		{"blog.example.org", "198.51.100.2:443", "port"},
		{"", "203.0.113.5:80", "listening"}, // listen leaves address patterns alone
		{"blog.example.org", "203.0.113.5:80", "listening"},
	} {
		c := tab.ClassifyAddr(netip.MustParseAddrPort(tc.local))
		if tc.host != "" {
			c = tab.ClassifyName(tc.host, netip.MustParseAddrPort(tc.local))
		}
		if c.Name != tc.want {
			t.Errorf("%q at %s: %s, want %s", tc.host, tc.local, c.Name, tc.want)
		}
	}
}

// "A pattern claimed by two vhosts is an error (however it is spelt)".
func TestPatternInTwoVHosts(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		ok   bool
	}{
		{"192.0.2.1", "::ffff:192.0.2.1", false},
		{"192.0.2.1", "192.0.2.1/32", false},
		{"192.0.2.1", "[::ffff:192.0.2.1]", false},
		{"10.0.0.0/8", "10.1.2.3/8", false},
		{"shop.example.com", "SHOP.example.com.", false},
		{"192.0.2.1", "192.0.2.1:80", true},
		{"192.0.2.0/24", "192.0.2.0/25", true},
		{"shop.example.com", "shop.example.com:443", true},
		{"*.example.com", "example.com", true},
		{"unix:/run/php/a.sock", "unix:/run/php/a.sock", false},
		{"unix:@fpm", "unix:@fpm", false},
		{"unix:/fpm", "unix:@/fpm", true},
		{"unix:/run/php/a.sock", "unix:/run/php/b.sock", true},
	} {
		src := fmt.Sprintf("[[vhost]]\nname = \"a\"\nmatch = [%q]\n[[vhost]]\nname = \"b\"\nmatch = [%q]\n", tc.a, tc.b)
		_, err := parse(t, src)
		var ps Problems
		switch {
		case tc.ok && err != nil:
			t.Errorf("%q and %q refused: %v", tc.a, tc.b, err)
		case !tc.ok && (!errors.As(err, &ps) || len(ps) != 1 || ps[0].Line != 6 || ps[0].Column != 10 || !strings.Contains(ps[0].Msg, `is already matched by vhost "a"`)):
			t.Errorf("%q and %q: err = %v; want one problem at 6:10", tc.a, tc.b, err)
		}
	}
}

// cpu_weight and io_weight: whole number 1..10000; absent is no limit.
func TestKeyWeights(t *testing.T) {
	cases := func(key string) []keyCase {
		const rangeErr = "is out of range: use 1..10000"
		return []keyCase{
			{value: "", want: uint64(0)},
			{value: "1", want: uint64(1)},
			{value: "0", err: "0 " + rangeErr},
			{value: "-1", err: "-1 " + rangeErr},
			{value: "100", want: uint64(100)},
			{value: "10000", want: uint64(10000)},
			{value: "10001", err: "10001 " + rangeErr},
			{value: `"100"`, err: "write the number without quotes"},
			{value: "1.5", err: "write a whole number from 1 to 10000"},
		}
	}
	t.Run("cpu_weight", func(t *testing.T) {
		checkLimit(t, "cpu_weight", "%s", func(c Class) any { return c.Resources.CPUWeight }, cases("cpu_weight"))
	})
	t.Run("io_weight", func(t *testing.T) {
		checkLimit(t, "io_weight", "%s", func(c Class) any { return c.Resources.IOWeight }, cases("io_weight"))
	})
}

// cpu_max: "N%" or "N.N%", more than 0 and at most 100000.
func TestKeyCPUMax(t *testing.T) {
	const rangeErr = "is out of range: use more than 0% and at most 100000%"
	checkLimit(t, "cpu_max", "%s", func(c Class) any { return c.Resources.CPUQuotaPercent }, []keyCase{
		{value: "", want: 0.0},
		{value: `"50%"`, want: 50.0},
		{value: `"12.5%"`, want: 12.5},
		{value: `"0.001%"`, want: 0.001},
		{value: `"0%"`, err: rangeErr},
		{value: `"0.0%"`, err: rangeErr},
		{value: `"1%"`, want: 1.0},
		{value: `"200%"`, want: 200.0},
		{value: `"100000%"`, want: 100000.0},
		{value: `"100000.0%"`, want: 100000.0},
		{value: `"100000.001%"`, err: rangeErr},
		{value: `"100001%"`, err: rangeErr},
		{value: `"-1%"`, err: "is not a percentage"},
		{value: `"50"`, err: `needs a %: cpu_max = "50%"`},
		{value: `50`, err: `write it as a string with %: cpu_max = "50%"`},
		{value: `"1e3%"`, err: "is not a percentage"},
		{value: `"50 %"`, err: "is not a percentage"},
		{value: `"12,5%"`, err: `"12,5%" has a comma in its number; write "12.5%": a decimal point, not a comma`},
	})
}

// io_read_bps and io_write_bps take a SIZE per device: a whole number of
// bytes, or a string with an optional K, M, G, T (1024-based, any case; B
// means bytes); fractions need K, M, G or T and are rounded down; more
// than 0.
func TestKeyIOSize(t *testing.T) {
	const zeroErr = "must be more than 0; to leave the device unlimited, remove it"
	get := func(c Class) any {
		if len(c.Resources.Devices) == 0 {
			return uint64(0)
		}
		return c.Resources.Devices[0].ReadBPS
	}
	checkLimit(t, "io_read_bps", `{ "/dev/vda" = %s }`, get, []keyCase{
		{value: "", want: uint64(0)},
		{value: "1", want: uint64(1)},
		{value: "0", err: "0: " + zeroErr},
		{value: "-1", err: "-1: " + zeroErr},
		{value: `"1"`, want: uint64(1)},
		{value: `"1B"`, want: uint64(1)},
		{value: `"1b"`, want: uint64(1)},
		{value: `"0B"`, err: zeroErr},
		{value: `"1K"`, want: uint64(1024)},
		{value: `"1k"`, want: uint64(1024)},
		{value: `"50M"`, want: uint64(52428800)},
		{value: `"1g"`, want: uint64(1 << 30)},
		{value: `"1T"`, want: uint64(1 << 40)},
		{value: `"1.5K"`, want: uint64(1536)},
		{value: `"1.9999K"`, want: uint64(2047)}, // rounded down
		{value: `"0.001K"`, want: uint64(1)},
		{value: `"0.0009K"`, err: zeroErr},
		{value: `"1.5"`, err: "is not a whole number"},
		{value: `"1.5B"`, err: "is not a whole number"},
		{value: "9223372036854775807", want: uint64(1<<63 - 1)},
		{value: `"9223372036854775807"`, want: uint64(1<<63 - 1)},
		{value: `"8388607T"`, want: uint64(8388607 << 40)},
		{value: `"8388608T"`, err: "is too large; the most is 9223372036854775807"},
		{value: `"9223372036854775808"`, err: "is too large"},
		{value: `"50MB"`, err: `unknown unit "MB" in "50MB"`},
		{value: `"50 M"`, err: `unknown unit " M"`},
		{value: `"1P"`, err: `unknown unit "P"`},
		{value: `"1e6"`, err: `unknown unit "e6"`},
		{value: "1.5", err: "is not a whole number"},
		{value: `"1,5M"`, err: `"1,5M" has a comma in its number; write "1.5M"`},
	})
}

// io_read_iops and io_write_iops take a COUNT: "the same without the
// meaning of bytes", more than 0, at most 2^32-2 (the kernel keeps IOPS
// limits in 32 bits, and 2^32-1 is its "no limit").
func TestKeyIOCount(t *testing.T) {
	const tooMany = "operations per second is too many: the kernel counts them in 32 bits, the most is 4294967294"
	get := func(c Class) any {
		if len(c.Resources.Devices) == 0 {
			return uint64(0)
		}
		return c.Resources.Devices[0].ReadIOPS
	}
	checkLimit(t, "io_read_iops", `{ "/dev/vda" = %s }`, get, []keyCase{
		{value: "", want: uint64(0)},
		{value: "1", want: uint64(1)},
		{value: "0", err: "must be more than 0"},
		{value: "2000", want: uint64(2000)},
		{value: `"2K"`, want: uint64(2048)},
		{value: `"2k"`, want: uint64(2048)},
		{value: "4294967294", want: uint64(4294967294)},
		{value: `"4294967294"`, want: uint64(4294967294)},
		{value: "4294967295", err: "4294967295 " + tooMany},
		{value: "4294967297", err: "4294967297 " + tooMany},
		{value: `"4G"`, err: "4294967296 " + tooMany},
		{value: `"1.5"`, err: "is not a whole number"},
	})
}

// Each of the four device keys sets its own limit of the device, and
// limits of one device across keys are merged.
func TestIOKeysFields(t *testing.T) {
	tab, err := parse(t, `[defaults]
io_read_bps = { "/dev/vda" = "1K" }
io_write_bps = { "/dev/vda" = "2K" }
io_read_iops = { "/dev/vda" = 3 }
io_write_iops = { "/dev/vda" = "4K" }
`)
	if err != nil {
		t.Fatal(err)
	}
	d := tab.Defaults.Resources.Devices
	if len(d) != 1 || d[0].ReadBPS != 1024 || d[0].WriteBPS != 2048 || d[0].ReadIOPS != 3 || d[0].WriteIOPS != 4096 {
		t.Errorf("devices = %+v; want one with 1024, 2048, 3, 4096", d)
	}
	// The IOPS bound applies to both IOPS keys, and to no byte rate.
	_, err = parse(t, "[defaults]\nio_write_iops = { \"/dev/vda\" = 4294967295 }\nio_write_bps = { \"/dev/vda\" = 4294967295 }\n")
	var ps Problems
	if !errors.As(err, &ps) || len(ps) != 1 || ps[0].Key != `defaults.io_write_iops."/dev/vda"` {
		t.Errorf("err = %v; want one problem, about io_write_iops", err)
	}
}

// dscp: a name, any case: CS0-CS7, AF11-AF43 (AFxy, x 1..4, y 1..3), EF
// (46), VOICE-ADMIT (44); or a number 0..63, also as a string; absent
// leaves the server's marking alone (-1).
func TestKeyDSCP(t *testing.T) {
	const unknown = "unknown DSCP name"
	checkLimit(t, "dscp", "%s", func(c Class) any { return c.DSCP }, []keyCase{
		{value: "", want: -1},
		{value: "0", want: 0},
		{value: "63", want: 63},
		{value: "64", err: "64 is out of range 0..63; it looks like a whole TOS byte"},
		{value: "-1", err: "-1 is out of range"},
		{value: `"0"`, want: 0},
		{value: `"46"`, want: 46},
		{value: `"63"`, want: 63},
		{value: `"64"`, err: "64 is out of range 0..63"},
		{value: `"CS0"`, want: 0},
		{value: `"CS7"`, want: 56},
		{value: `"cs7"`, want: 56},
		{value: `"CS8"`, err: unknown},
		{value: `"AF11"`, want: 10},
		{value: `"AF13"`, want: 14},
		{value: `"AF41"`, want: 34},
		{value: `"af43"`, want: 38},
		{value: `"AF10"`, err: unknown},
		{value: `"AF14"`, err: unknown},
		{value: `"AF44"`, err: unknown},
		{value: `"AF51"`, err: unknown},
		{value: `"EF"`, want: 46},
		{value: `"ef"`, want: 46},
		{value: `"VOICE-ADMIT"`, want: 44},
		{value: `"Voice-Admit"`, want: 44},
		{value: `"BE"`, err: unknown},
		{value: "46.0", err: `write a DSCP name such as "AF41" or a number 0..63`},
		{value: "true", err: `write a DSCP name such as "AF41" or a number 0..63`},
	})
}

// max_connections and max_connections_per_ip: whole number 1..1000000;
// absent is no cap. A cap alone refuses what is over it.
func TestKeyConnectionCaps(t *testing.T) {
	const rangeErr = "is out of range: use 1..1000000"
	for _, key := range []string{"max_connections", "max_connections_per_ip"} {
		t.Run(key, func(t *testing.T) {
			checkLimit(t, key, "%s", func(c Class) any {
				a := c.Admission
				return [2]any{a.MaxConnections + a.MaxConnectionsPerIP, a.OverLimit}
			}, []keyCase{
				{value: "", want: [2]any{0, ""}},
				{value: "1", want: [2]any{1, OverLimitRefuse}},
				{value: "0", err: "0 " + rangeErr},
				{value: "-1", err: "-1 " + rangeErr},
				{value: "150", want: [2]any{150, OverLimitRefuse}},
				{value: "1000000", want: [2]any{1000000, OverLimitRefuse}},
				{value: "1000001", err: "1000001 " + rangeErr},
				{value: `"150"`, err: "write the number without quotes"},
				{value: "1.5", err: "write a whole number from 1 to 1000000"},
			})
		})
	}
	// Each key sets its own field.
	tab, err := parse(t, "[defaults]\nmax_connections = 7\nmax_connections_per_ip = 3\n")
	if err != nil {
		t.Fatal(err)
	}
	if a := tab.Defaults.Admission; a.MaxConnections != 7 || a.MaxConnectionsPerIP != 3 {
		t.Errorf("admission = %+v; want 7 in all, 3 per address", a)
	}
}

// over_limit: "refuse" (the default with a cap), "default", or a vhost's
// name, in any case; not the class itself, not a name of no class. (Only
// with a cap, and loops: admission_test.go.)
func TestKeyOverLimit(t *testing.T) {
	const blog = "[[vhost]]\nname = \"Blog-2\"\nmatch = [\"192.0.2.2\"]\n"
	const notClass = `write "refuse", "default" or the name of a vhost`
	get := func(c Class) any { return c.Admission.OverLimit }
	common := []keyCase{
		{value: "", want: OverLimitRefuse},
		{value: `"refuse"`, want: OverLimitRefuse},
		{value: `"REFUSE"`, want: OverLimitRefuse},
		{value: `"Blog-2"`, want: "Blog-2"},
		{value: `"blog-2"`, want: "Blog-2"},
		{value: `"BLOG-2"`, want: "Blog-2"},
		{value: `"blog_2"`, err: `"blog_2" names no class; did you mean "Blog-2"?`},
		{value: `"rfuse"`, err: `"rfuse" names no class; did you mean "refuse"?`},
		{value: `"reject"`, err: `did you mean "refuse"?`},
		{value: `"nowhere.example"`, err: `"nowhere.example" names no class. Write "refuse", "default" or the name of a vhost`},
		{value: `""`, err: "is empty; " + notClass},
		{value: `2`, err: "is a number (2); " + notClass},
		{value: `["default"]`, err: "is a list; " + notClass},
	}
	t.Run("vhost", func(t *testing.T) {
		header := blog + oneVHost + "max_connections = 2\n"
		checkKey(t, header, "over_limit", "%s", func(t *Table) any { return get(t.VHosts[1]) }, append([]keyCase{
			{value: `"default"`, want: DefaultsName},
			{value: `"Default"`, want: DefaultsName},
			{value: `"defaults"`, err: `did you mean "default"?`},
			{value: `"v"`, err: `"v" is this vhost itself`},
			{value: `"V"`, err: `"V" is this vhost itself`},
		}, common...))
	})
	t.Run("defaults", func(t *testing.T) {
		header := blog + "[defaults]\nmax_connections_per_ip = 2\n"
		checkKey(t, header, "over_limit", "%s", func(t *Table) any { return get(t.Defaults) }, append([]keyCase{
			{value: `"default"`, err: `"default" is [defaults] itself`},
			{value: `"DEFAULT"`, err: `"DEFAULT" is [defaults] itself`},
		}, common...))
	})
}

// refuse_status: whole number 400..599, default 503; retry_after: seconds
// 0..86400, default 1 (0 leaves Retry-After out). Both on a class that
// refuses (a cap, over_limit "refuse").
func TestKeyRefusal(t *testing.T) {
	refusing := []struct {
		name, header string
		class        func(*Table) Class
	}{
		{"defaults", "[defaults]\nmax_connections = 1\n", func(t *Table) Class { return t.Defaults }},
		{"vhost", oneVHost + "max_connections_per_ip = 1\nover_limit = \"refuse\"\n", func(t *Table) Class { return t.VHosts[0] }},
	}
	for _, s := range refusing {
		t.Run(s.name, func(t *testing.T) {
			const statusErr = "is out of range: use 400..599"
			checkKey(t, s.header, "refuse_status", "%s", func(t *Table) any { return s.class(t).Admission.RefuseStatus }, []keyCase{
				{value: "", want: 503},
				{value: "400", want: 400},
				{value: "399", err: "399 " + statusErr},
				{value: "508", want: 508},
				{value: "599", want: 599},
				{value: "600", err: "600 " + statusErr},
				{value: "200", err: "200 " + statusErr},
				{value: `"508"`, err: "write the number without quotes"},
			})
			const retryErr = "is out of range: use 0..86400"
			checkKey(t, s.header, "retry_after", "%s", func(t *Table) any { return s.class(t).Admission.RetryAfter }, []keyCase{
				{value: "", want: 1},
				{value: "0", want: 0},
				{value: "-1", err: "-1 " + retryErr},
				{value: "1", want: 1},
				{value: "30", want: 30},
				{value: "86400", want: 86400},
				{value: "86401", err: "86401 " + retryErr},
				{value: `"30s"`, err: "is a string (\"30s\"); write a whole number from 0 to 86400"},
				{value: "1.5", err: "write a whole number"},
			})
		})
	}
}

// "Any key can be absent except a vhost's name and match. An absent limit
// is no limit"; "an empty file is a valid table".
func TestAbsentKeys(t *testing.T) {
	for _, src := range []string{"", "[settings]\n[defaults]\n", "[[vhost]]\nname = \"v\"\nmatch = [\"192.0.2.1\"]\n"} {
		tab, err := parse(t, src)
		if err != nil {
			t.Fatalf("%q: %v", src, err)
		}
		if !reflect.DeepEqual(tab.Settings, Settings{}) {
			t.Errorf("%q: settings %+v, want none", src, tab.Settings)
		}
		if timeout, bytes := tab.Settings.SniffLimits(); timeout != 2*time.Second || bytes != 16384 {
			t.Errorf("%q: sniff limits %v, %d; want the defaults 2s, 16384", src, timeout, bytes)
		}
		for _, c := range append([]Class{tab.Defaults}, tab.VHosts...) {
			if !c.Resources.Equal(cgroup.Resources{}) || c.DSCP != -1 {
				t.Errorf("%q: class %s has limits %+v, DSCP %d; want none", src, c.Name, c.Resources, c.DSCP)
			}
			if want := (Admission{RefuseStatus: 503, RetryAfter: 1}); c.Admission != want || c.Admission.Capped() {
				t.Errorf("%q: class %s has admission %+v; want no cap, %+v", src, c.Name, c.Admission, want)
			}
		}
	}
}

// Problems are FILE:LINE:COLUMN with the column in bytes, pointing at the
// value to change.
func TestProblemColumnsInBytes(t *testing.T) {
	for _, tc := range []struct {
		label, src string
		at         string // the text the problem points at: its first occurrence in the file
		key        string
	}{
		{"after a two-byte character", "[[vhost]]\nname = \"v\"\nmatch = [\"é.example\", \"10.0.0.0/33\"]\n", `"10.0.0.0/33"`, "vhost[0].match[1]"},
		{"after a four-byte character", "[[vhost]]\nname = \"v\"\nmatch = [\"192.0.2.1\"] # 🙂\n[defaults]\ndscp = \"🙂\"\n", `"🙂"`, "defaults.dscp"},
		{"after a tab", "[defaults]\ncpu_weight =\t0\n", "0\n", "defaults.cpu_weight"},
		{"CRLF line ends", "[defaults]\r\ncpu_weight = 1\r\ndscp = 99\r\n", "99", "defaults.dscp"},
		{"syntax error after a two-byte character", "[defaults]\ndscp = \"é\" x\n", "x", ""},
	} {
		t.Run(tc.label, func(t *testing.T) {
			_, err := parse(t, tc.src)
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("err = %v, want Problems", err)
			}
			off := strings.Index(tc.src, tc.at)
			line := 1 + strings.Count(tc.src[:off], "\n")
			col := off - strings.LastIndex(tc.src[:off], "\n")
			want := fmt.Sprintf("qos.toml:%d:%d: ", line, col)
			var found bool
			for _, p := range ps {
				if strings.HasPrefix(p.String(), want) && (tc.key == "" || p.Key == tc.key) {
					found = true
				}
			}
			if !found {
				t.Errorf("no problem at %s (byte column of %q):\n%v", want, tc.at, err)
			}
		})
	}
}
