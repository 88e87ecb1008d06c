package vhost

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// The limits README.md and policy/REFERENCE.md give for host names and for
// sniffing, at their edges: what the text allows works, one step past it
// does not.

// Sniff byte limits of a QoS table: smallest, default, largest
// (REFERENCE.md: sniff_bytes 512..65536, default 16384).
var sniffByteLimits = []int{512, 16384, 65536}

// httpHeadOf is a request head of exactly n bytes, empty line included,
// that asks for host.
func httpHeadOf(tb testing.TB, n int, host string) []byte {
	tb.Helper()
	head := "GET / HTTP/1.1\r\nHost: " + host + "\r\nX-Pad: "
	pad := n - len(head) - len("\r\n\r\n")
	if pad < 0 {
		tb.Fatalf("a head asking for %q needs more than %d bytes", host, n)
	}
	return []byte(head + strings.Repeat("p", pad) + "\r\n\r\n")
}

// clientHelloOf is a ClientHello asking for host, in records of at most
// 16 KiB, of exactly n bytes on the wire; a padding extension (RFC 7685)
// makes up the length.
func clientHelloOf(tb testing.TB, n int, host string) []byte {
	tb.Helper()
	base := len(handshake(1, helloBody(sniExt(host), ext{21, nil})))
	for recs := 1; 5*recs < n; recs++ {
		msg := n - 5*recs // the handshake message, cut into recs records
		if msg >= base && (msg+maxRecord-1)/maxRecord == recs {
			b := records(handshake(1, helloBody(sniExt(host), ext{21, make([]byte, msg-base)})), maxRecord)
			if len(b) != n {
				tb.Fatalf("built a ClientHello of %d bytes, want %d", len(b), n)
			}
			return b
		}
	}
	tb.Fatalf("no ClientHello of exactly %d bytes", n)
	return nil
}

// A request head or ClientHello that is complete within sniff_bytes gives
// its name, at every allowed sniff_bytes; one byte more, cut at
// sniff_bytes as the supervisor peeks it, gives none (the supervisor then
// falls back to the address). REFERENCE.md: "a request head or ClientHello
// longer than that falls back to the address".
func TestSniffWithinSniffBytes(t *testing.T) {
	for _, limit := range sniffByteLimits {
		for _, kind := range []struct {
			name  string
			build func(testing.TB, int, string) []byte
		}{{"HTTP head", httpHeadOf}, {"ClientHello", clientHelloOf}} {
			t.Run(fmt.Sprintf("%s/%d", kind.name, limit), func(t *testing.T) {
				exact := kind.build(t, limit, "shop.example.com")
				checkSniff(t, "exactly sniff_bytes", exact, "shop.example.com", Found)
				over := kind.build(t, limit+1, "shop.example.com")
				if name, got := SniffName(over[:limit]); got == Found {
					t.Errorf("one byte over sniff_bytes, cut at sniff_bytes: found %q, want no name yet", name)
				}
			})
		}
	}
	// Past the largest sniff_bytes an HTTP head is no longer read at all.
	checkSniff(t, "head one byte over the largest sniff_bytes", httpHeadOf(t, maxHTTPHead+1, "shop.example.com"), "", NoName)
}

// Host names at the limits REFERENCE.md gives ("labels of 1-63
// characters, 253 in all; a wildcard is the whole first label; trailing
// dot and case ignored; internationalized names in their xn-- form"):
// a name a pattern may hold is one a client's HTTP Host and TLS SNI give,
// and the pattern matches it; a name past a limit is refused as a pattern
// and never sniffed.
func TestHostNameLimits(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	name253 := strings.Repeat("abcdefghi.", 25) + "abc" // 253 characters
	suffix251 := name253[2:]                            // "*." + suffix251 is 253 in all
	if len(name253) != 253 || len(suffix251) != 251 {
		t.Fatal("bad test names")
	}
	tests := []struct {
		label   string
		pattern string
		client  string // what the client asks for
		sniffed string // the name sniffed from it; "" for none
		err     string // the pattern's error; "" if it is a valid pattern
	}{
		{"label of 1", "a.b", "a.b", "a.b", ""},
		{"label of 63", label63 + ".example", label63 + ".example", label63 + ".example", ""},
		{"label of 64", label63 + "a.example", label63 + "a.example", "", "DNS allows 63"},
		{"253 in all", name253, name253, name253, ""},
		{"253 with a trailing dot", name253 + ".", name253 + ".", name253, ""},
		{"253 with a port", name253 + ":65535", name253, name253, ""},
		{"254 in all", name253 + "d", name253 + "d", "", "DNS allows 253"},
		{"wildcard, 253 in all", "*." + suffix251, "a." + suffix251, "a." + suffix251, ""},
		{"wildcard, 253 in all, dot and port", "*." + suffix251 + ".:65535", "a." + suffix251, "a." + suffix251, ""},
		{"wildcard, 254 in all", "*.b" + suffix251, "a.b" + suffix251, "", "DNS allows 253"},
		{"case", "Shop.Example.COM", "SHOP.example.com", "shop.example.com", ""},
		{"underscore", "_a.example", "_a.example", "_a.example", ""},
		{"xn--", "xn--bcher-kva.example", "xn--bcher-kva.example", "xn--bcher-kva.example", ""},
		{"not xn--", "bücher.example", "bücher.example", "", "xn--"},
		{"empty label", "a..example", "a..example", "", "empty label"},
	}
	for _, tc := range tests {
		t.Run(tc.label, func(t *testing.T) {
			if len(tc.client) > 0 {
				http := []byte("GET / HTTP/1.1\r\nHost: " + tc.client + ":8080\r\n\r\n")
				tls := hello(sniExt(tc.client))
				for proto, data := range map[string][]byte{"HTTP Host": http, "TLS SNI": tls} {
					name, got := SniffName(data)
					if name != tc.sniffed || (got == Found) != (tc.sniffed != "") {
						t.Errorf("%s %q: sniffed %q, %v; want %q", proto, tc.client, name, got, tc.sniffed)
					}
				}
			}
			p, err := ParsePattern(tc.pattern)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("pattern %q: err = %v, want one saying %q", tc.pattern, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("pattern %q: %v", tc.pattern, err)
			}
			m := NewMatcher([]Rule{{VHost: 0, Pattern: p}})
			if got := m.MatchName(tc.sniffed, netip.MustParseAddrPort("192.0.2.1:65535")); got != 0 {
				t.Errorf("pattern %q does not match the sniffed %q", tc.pattern, tc.sniffed)
			}
		})
	}
}
