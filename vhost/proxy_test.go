package vhost

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The seed corpus in testdata/fuzz/FuzzParseProxy holds what HAProxy
// 2.6.12 (Debian 12) sent to a server: the header and the client's first
// bytes. Captured in a network namespace with testdata/capture/listen.go as
// the server, mode tcp, one frontend per file:
//
//	haproxy-v1-tcp4         bind 127.0.0.1, server send-proxy; curl -H 'Host: shop.example.com'
//	haproxy-v1-tcp6         bind [::1], send-proxy
//	haproxy-v1-tcp6-mapped  bind :::PORT v4v6, send-proxy, curl to 127.0.0.1
//	haproxy-v1-unknown-unix bind unix@, send-proxy; curl --unix-socket
//	haproxy-v1-check        server ... send-proxy check check-send-proxy (the health check)
//	haproxy-v2-tcp4         send-proxy-v2, and so on as for v1
//	haproxy-v2-tcp6
//	haproxy-v2-tcp6-mapped
//	haproxy-v2-local-unix   (a LOCAL command, family UNSPEC)
//	haproxy-v2-local-check  (a LOCAL command, family UNSPEC)
//	haproxy-v2-tlvs         bind ssl crt, send-proxy-v2 proxy-v2-options
//	                        ssl,cert-cn,ssl-cipher,cert-sig,cert-key,authority,crc32c,unique-id;
//	                        curl -k https://shop.example.com (TLVs CRC32C,
//	                        AUTHORITY, UNIQUE_ID, SSL with 4 sub-TLVs)
//	haproxy-v2-ssl-cn       bind ssl crt, send-proxy-v2-ssl-cn (an SSL TLV)
//	haproxy-v2-tls          send-proxy-v2, TLS passed through: curl's ClientHello follows

// readProxyCorpus returns the bytes of a seed corpus file.
func readProxyCorpus(tb testing.TB, name string) []byte {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzParseProxy", name))
	if err != nil {
		tb.Fatal(err)
	}
	s, ok := strings.CutPrefix(string(raw), "go test fuzz v1\n[]byte(")
	if ok {
		s, ok = strings.CutSuffix(s, ")\n")
	}
	if ok {
		s, err = strconv.Unquote(s)
	}
	if !ok || err != nil {
		tb.Fatalf("%s: not a []byte corpus file (%v)", name, err)
	}
	return []byte(s)
}

func ppAddr(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestParseProxyCaptures(t *testing.T) {
	for _, c := range []struct {
		file     string
		want     ProxyHeader
		sniffed  string // the name SniffName finds after the header
		sniffRes Sniff
	}{
		{"haproxy-v1-tcp4", ProxyHeader{Len: 43, Src: ppAddr("127.0.0.1:58294"), Dst: ppAddr("127.0.0.1:8001")}, "shop.example.com", Found},
		{"haproxy-v1-tcp6", ProxyHeader{Len: 31, Src: ppAddr("[::1]:38660"), Dst: ppAddr("[::1]:8002")}, "shop.example.com", Found},
		{"haproxy-v1-tcp6-mapped", ProxyHeader{Len: 57, Src: ppAddr("127.0.0.1:42916"), Dst: ppAddr("127.0.0.1:8011")}, "shop.example.com", Found},
		{"haproxy-v1-unknown-unix", ProxyHeader{Len: 15, Local: true}, "shop.example.com", Found},
		{"haproxy-v1-check", ProxyHeader{Len: 43, Src: ppAddr("127.0.0.1:57574"), Dst: ppAddr("127.0.0.1:9007")}, "", NeedMore},
		{"haproxy-v2-tcp4", ProxyHeader{Len: 28, Src: ppAddr("127.0.0.1:41198"), Dst: ppAddr("127.0.0.1:8003")}, "shop.example.com", Found},
		{"haproxy-v2-tcp6", ProxyHeader{Len: 52, Src: ppAddr("[::1]:58048"), Dst: ppAddr("[::1]:8004")}, "shop.example.com", Found},
		{"haproxy-v2-tcp6-mapped", ProxyHeader{Len: 52, Src: ppAddr("127.0.0.1:40964"), Dst: ppAddr("127.0.0.1:8012")}, "shop.example.com", Found},
		{"haproxy-v2-local-unix", ProxyHeader{Len: 16, Local: true}, "shop.example.com", Found},
		{"haproxy-v2-local-check", ProxyHeader{Len: 16, Local: true}, "", NeedMore},
		{"haproxy-v2-tlvs", ProxyHeader{Len: 16 + 148, Src: ppAddr("127.0.0.1:43292"), Dst: ppAddr("127.0.0.1:8005")}, "shop.example.com", Found},
		{"haproxy-v2-ssl-cn", ProxyHeader{Len: 16 + 30, Src: ppAddr("127.0.0.1:52232"), Dst: ppAddr("127.0.0.1:8006")}, "shop.example.com", Found},
		{"haproxy-v2-tls", ProxyHeader{Len: 28, Src: ppAddr("127.0.0.1:41404"), Dst: ppAddr("127.0.0.1:8013")}, "shop.example.com", Found},
	} {
		data := readProxyCorpus(t, c.file)
		h, r := ParseProxy(data)
		if r != Found || h != c.want {
			t.Errorf("%s: ParseProxy = %+v, %v; want %+v, found", c.file, h, r, c.want)
			continue
		}
		// The header is skipped for sniffing, the rest is the client's.
		if name, r := SniffName(data[h.Len:]); name != c.sniffed || r != c.sniffRes {
			t.Errorf("%s: SniffName after the header = %q, %v; want %q, %v", c.file, name, r, c.sniffed, c.sniffRes)
		}
		checkProxyPrefixes(t, c.file, data[:h.Len])
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzParseProxy", "haproxy-*"))
	if len(files) != 13 {
		t.Errorf("testdata has %d HAProxy captures, the test knows 13", len(files))
	}
}

// checkProxyPrefixes asserts that every proper prefix of a complete header
// needs more, so a header split at any byte boundary waits for the rest.
func checkProxyPrefixes(t *testing.T, label string, header []byte) {
	t.Helper()
	for n := range len(header) {
		if h, r := ParseProxy(header[:n]); r != NeedMore || h != (ProxyHeader{}) {
			t.Errorf("%s: prefix of %d/%d bytes gives %+v, %v; want need more", label, n, len(header), h, r)
			return
		}
	}
}

// v2 builds a version 2 header: signature, version and command, family and
// protocol, length, then the address block and TLVs in body.
func ppV2(verCmd, famProto byte, body ...[]byte) []byte {
	b := append([]byte(proxyV2Sig), verCmd, famProto, 0, 0)
	for _, p := range body {
		b = append(b, p...)
	}
	binary.BigEndian.PutUint16(b[14:], uint16(len(b)-16))
	return b
}

// v2Len is v2 with a length field that says n, whatever follows.
func ppV2Len(verCmd, famProto byte, n int, body ...[]byte) []byte {
	b := ppV2(verCmd, famProto, body...)
	binary.BigEndian.PutUint16(b[14:], uint16(n))
	return b
}

func ppTLV(typ byte, value string) []byte {
	return append([]byte{typ, byte(len(value) >> 8), byte(len(value))}, value...)
}

var (
	ppInet4 = []byte{192, 0, 2, 1, 198, 51, 100, 7, 0xc3, 0x50, 0x01, 0xbb} // 192.0.2.1:50000 -> 198.51.100.7:443
	ppInet6 = append(append(append(
		netip.MustParseAddr("2001:db8::1").AsSlice(),
		netip.MustParseAddr("2001:db8::2:1").AsSlice()...),
		0xc3, 0x50), 0x01, 0xbb)
	ppInet6Mapped = append(append(append(
		netip.MustParseAddr("::ffff:192.0.2.1").AsSlice(),
		netip.MustParseAddr("::ffff:198.51.100.7").AsSlice()...),
		0xc3, 0x50), 0x01, 0xbb)
	ppUnix         = append(append([]byte("/run/client.sock"), make([]byte, 108-16)...), append([]byte("/run/haproxy.sock"), make([]byte, 108-17)...)...)
	ppSrc4, ppDst4 = ppAddr("192.0.2.1:50000"), ppAddr("198.51.100.7:443")
	ppSrc6, ppDst6 = ppAddr("[2001:db8::1]:50000"), ppAddr("[2001:db8::2:1]:443")
)

var proxyCases = []struct {
	label string
	data  []byte
	want  ProxyHeader // Len 0 unless Found
	res   Sniff
}{
	// Version 1.
	{"v1 TCP4", []byte("PROXY TCP4 192.0.2.1 198.51.100.7 50000 443\r\n"), ProxyHeader{Len: 45, Src: ppSrc4, Dst: ppDst4}, Found},
	{"v1 TCP4 longest", []byte("PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"),
		ProxyHeader{Len: 56, Src: ppAddr("255.255.255.255:65535"), Dst: ppAddr("255.255.255.255:65535")}, Found},
	{"v1 TCP4 zeros", []byte("PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n"), ProxyHeader{Len: 32, Src: ppAddr("0.0.0.0:0"), Dst: ppAddr("0.0.0.0:0")}, Found},
	{"v1 TCP6", []byte("PROXY TCP6 2001:db8::1 2001:db8::2:1 50000 443\r\n"), ProxyHeader{Len: 48, Src: ppSrc6, Dst: ppDst6}, Found},
	{"v1 TCP6 upper case", []byte("PROXY TCP6 2001:DB8::1 2001:0DB8:0000:0000:0000:0000:0002:0001 50000 443\r\n"), ProxyHeader{Len: 74, Src: ppSrc6, Dst: ppDst6}, Found},
	{"v1 TCP6 longest", []byte("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"),
		ProxyHeader{Len: 104, Src: ppAddr("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"), Dst: ppAddr("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535")}, Found},
	{"v1 TCP6 mapped", []byte("PROXY TCP6 ::ffff:192.0.2.1 ::FFFF:c633:6407 50000 443\r\n"), ProxyHeader{Len: 56, Src: ppSrc4, Dst: ppDst4}, Found},
	{"v1 TCP6 unspecified", []byte("PROXY TCP6 :: ::1 1 2\r\n"), ProxyHeader{Len: 23, Src: ppAddr("[::]:1"), Dst: ppAddr("[::1]:2")}, Found},
	{"v1 TCP6 ellipsis at end", []byte("PROXY TCP6 2001:db8:: 1:2:3:4:5:6:1.2.3.4 1 2\r\n"),
		ProxyHeader{Len: 47, Src: ppAddr("[2001:db8::]:1"), Dst: ppAddr("[1:2:3:4:5:6:102:304]:2")}, Found},
	{"v1 UNKNOWN", []byte("PROXY UNKNOWN\r\n"), ProxyHeader{Len: 15, Local: true}, Found},
	{"v1 UNKNOWN with addresses", []byte("PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"),
		ProxyHeader{Len: 107, Local: true}, Found},
	{"v1 UNKNOWN ignores the rest", []byte("PROXY UNKNOWN \x00 whatever\x7f\xff\r\n"), ProxyHeader{Len: 28, Local: true}, Found},

	{"v1 need more", []byte("PROXY TCP4 192.0.2.1 198.51.100.7 50000 443\r"), ProxyHeader{}, NeedMore},
	{"v1 need more UNKNOWN", []byte("PROXY UNKNOWN"), ProxyHeader{}, NeedMore},
	{"v1 need more P", []byte("P"), ProxyHeader{}, NeedMore},
	{"empty", nil, ProxyHeader{}, NeedMore},

	{"HTTP", []byte("GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"), ProxyHeader{}, NoName},
	{"HTTP POST", []byte("POST / HTTP/1.1\r\n"), ProxyHeader{}, NoName},
	{"WebDAV PROPFIND", []byte("PROPFIND / HTTP/1.1\r\n"), ProxyHeader{}, NoName},
	{"TLS", []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01}, ProxyHeader{}, NoName},
	{"HTTP after empty line", []byte("\r\nGET / HTTP/1.1\r\n"), ProxyHeader{}, NoName},
	{"v1 lower case", []byte("proxy TCP4 192.0.2.1 198.51.100.7 50000 443\r\n"), ProxyHeader{}, NoName},
	{"v1 no space", []byte("PROXYTCP4 192.0.2.1 198.51.100.7 50000 443\r\n"), ProxyHeader{}, NoName},
	{"v1 TCP5", []byte("PROXY TCP5 192.0.2.1 198.51.100.7 50000 443\r\n"), ProxyHeader{}, NoName},
	{"v1 UDP4", []byte("PROXY UDP4 192.0.2.1 198.51.100.7 50000 443\r\n"), ProxyHeader{}, NoName},
	{"v1 tcp4", []byte("PROXY tcp4 192.0.2.1 198.51.100.7 50000 443\r\n"), ProxyHeader{}, NoName},
	{"v1 TCP4 v6 address", []byte("PROXY TCP4 2001:db8::1 198.51.100.7 50000 443\r\n"), ProxyHeader{}, NoName},
	{"v1 TCP6 v4 address", []byte("PROXY TCP6 192.0.2.1 2001:db8::1 50000 443\r\n"), ProxyHeader{}, NoName},
	{"v1 leading zero", []byte("PROXY TCP4 192.0.2.01 198.51.100.7 50000 443\r\n"), ProxyHeader{}, NoName},
	{"v1 octet 256", []byte("PROXY TCP4 192.0.2.256 198.51.100.7 50000 443\r\n"), ProxyHeader{}, NoName},
	{"v1 three octets", []byte("PROXY TCP4 192.0.2 198.51.100.7 50000 443\r\n"), ProxyHeader{}, NoName},
	{"v1 five octets", []byte("PROXY TCP4 192.0.2.1.5 198.51.100.7 50000 443\r\n"), ProxyHeader{}, NoName},
	{"v1 trailing dot", []byte("PROXY TCP4 192.0.2. 198.51.100.7 50000 443\r\n"), ProxyHeader{}, NoName},
	{"v1 leading dot", []byte("PROXY TCP4 .192.0.2 198.51.100.7 50000 443\r\n"), ProxyHeader{}, NoName},
	{"v1 empty octet", []byte("PROXY TCP4 192.0..1 198.51.100.7 50000 443\r\n"), ProxyHeader{}, NoName},
	{"v1 port leading zero", []byte("PROXY TCP4 192.0.2.1 198.51.100.7 050000 443\r\n"), ProxyHeader{}, NoName},
	{"v1 port 00", []byte("PROXY TCP4 192.0.2.1 198.51.100.7 00 443\r\n"), ProxyHeader{}, NoName},
	{"v1 port 65536", []byte("PROXY TCP4 192.0.2.1 198.51.100.7 50000 65536\r\n"), ProxyHeader{}, NoName},
	{"v1 port sign", []byte("PROXY TCP4 192.0.2.1 198.51.100.7 +5 443\r\n"), ProxyHeader{}, NoName},
	{"v1 three fields", []byte("PROXY TCP4 192.0.2.1 198.51.100.7 50000\r\n"), ProxyHeader{}, NoName},
	{"v1 five fields", []byte("PROXY TCP4 192.0.2.1 198.51.100.7 50000 443 1\r\n"), ProxyHeader{}, NoName},
	{"v1 double space", []byte("PROXY TCP4 192.0.2.1  198.51.100.7 50000 443\r\n"), ProxyHeader{}, NoName},
	{"v1 trailing space", []byte("PROXY TCP4 192.0.2.1 198.51.100.7 50000 443 \r\n"), ProxyHeader{}, NoName},
	{"v1 leading space", []byte("PROXY TCP4  192.0.2.1 198.51.100.7 50000 443\r\n"), ProxyHeader{}, NoName},
	{"v1 fifth field refused at once", []byte("PROXY TCP4 192.0.2.1 198.51.100.7 50000 443 "), ProxyHeader{}, NoName},
	{"v1 tab", []byte("PROXY TCP4\t192.0.2.1 198.51.100.7 50000 443\r\n"), ProxyHeader{}, NoName},
	{"v1 TCP4 only", []byte("PROXY TCP4\r\n"), ProxyHeader{}, NoName},
	{"v1 nothing", []byte("PROXY \r\n"), ProxyHeader{}, NoName},
	{"v1 UNKNOWNX", []byte("PROXY UNKNOWNX\r\n"), ProxyHeader{}, NoName},
	{"v1 UNKNOW", []byte("PROXY UNKNOW\r\n"), ProxyHeader{}, NoName},
	{"v1 bare LF", []byte("PROXY TCP4 192.0.2.1 198.51.100.7 50000 443\n"), ProxyHeader{}, NoName},
	{"v1 UNKNOWN bare LF", []byte("PROXY UNKNOWN\nGET / HTTP/1.1\r\n"), ProxyHeader{}, NoName},
	{"v1 UNKNOWN LF inside", []byte("PROXY UNKNOWN a\nb\r\n"), ProxyHeader{}, NoName},
	{"v1 bare CR", []byte("PROXY TCP4 192.0.2.1 198.51.100.7 50000 443\rGET"), ProxyHeader{}, NoName},
	{"v1 v6 zone", []byte("PROXY TCP6 fe80::1%eth0 2001:db8::1 50000 443\r\n"), ProxyHeader{}, NoName},
	{"v1 v6 brackets", []byte("PROXY TCP6 [2001:db8::1] 2001:db8::2 50000 443\r\n"), ProxyHeader{}, NoName},
	{"v1 v6 two ellipses", []byte("PROXY TCP6 2001::db8::1 2001:db8::2 50000 443\r\n"), ProxyHeader{}, NoName},
	{"v1 v6 five digits", []byte("PROXY TCP6 2001:0db8f::1 2001:db8::2 50000 443\r\n"), ProxyHeader{}, NoName},
	{"v1 v6 seven groups", []byte("PROXY TCP6 1:2:3:4:5:6:7 ::1 1 2\r\n"), ProxyHeader{}, NoName},
	{"v1 v6 nine groups", []byte("PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n"), ProxyHeader{}, NoName},
	{"v1 v6 ellipsis for nothing", []byte("PROXY TCP6 1:2:3:4::5:6:7:8 ::1 1 2\r\n"), ProxyHeader{}, NoName},
	{"v1 v6 trailing colon", []byte("PROXY TCP6 1:2:3:4:5:6:7: ::1 1 2\r\n"), ProxyHeader{}, NoName},
	{"v1 v6 early dotted quad", []byte("PROXY TCP6 1:2:3:4:1.2.3.4 ::1 1 2\r\n"), ProxyHeader{}, NoName},
	{"v1 v6 dotted quad past the end", []byte("PROXY TCP6 1:2:3:4:5:6:7:1.2.3.4 ::1 1 2\r\n"), ProxyHeader{}, NoName},
	{"v1 v6 hex in dotted quad", []byte("PROXY TCP6 ::ffff:1.2.3.a ::1 1 2\r\n"), ProxyHeader{}, NoName},
	{"v1 binary", []byte("PROXY TCP4 \x00"), ProxyHeader{}, NoName},
	{"v1 letters in TCP4", []byte("PROXY TCP4 a"), ProxyHeader{}, NoName},
	{"v1 too long", []byte("PROXY UNKNOWN " + strings.Repeat("f", 92) + "\r\n"), ProxyHeader{}, NoName},
	{"v1 CR as byte 107", []byte("PROXY UNKNOWN " + strings.Repeat("f", 92) + "\r"), ProxyHeader{}, NoName},
	{"v1 no CRLF in 107 bytes", []byte("PROXY UNKNOWN " + strings.Repeat("f", 93)), ProxyHeader{}, NoName},
	{"v1 106 bytes", []byte("PROXY UNKNOWN " + strings.Repeat("f", 92)), ProxyHeader{}, NeedMore},

	// Version 2.
	{"v2 TCP4", ppV2(0x21, 0x11, ppInet4), ProxyHeader{Len: 28, Src: ppSrc4, Dst: ppDst4}, Found},
	{"v2 UDP4", ppV2(0x21, 0x12, ppInet4), ProxyHeader{Len: 28, Src: ppSrc4, Dst: ppDst4}, Found},
	{"v2 TCP6", ppV2(0x21, 0x21, ppInet6), ProxyHeader{Len: 52, Src: ppSrc6, Dst: ppDst6}, Found},
	{"v2 UDP6", ppV2(0x21, 0x22, ppInet6), ProxyHeader{Len: 52, Src: ppSrc6, Dst: ppDst6}, Found},
	{"v2 TCP6 mapped", ppV2(0x21, 0x21, ppInet6Mapped), ProxyHeader{Len: 52, Src: ppSrc4, Dst: ppDst4}, Found},
	{"v2 TLVs", ppV2(0x21, 0x11, ppInet4, ppTLV(0x03, "\x01\x02\x03\x04"), ppTLV(0x02, "shop.example.com"), ppTLV(0x04, ""), ppTLV(0xe0, strings.Repeat("x", 300))),
		ProxyHeader{Len: 28 + 7 + 19 + 3 + 303, Src: ppSrc4, Dst: ppDst4}, Found},
	{"v2 TLV bytes not parsed", ppV2(0x21, 0x11, ppInet4, []byte{0xff}), ProxyHeader{Len: 29, Src: ppSrc4, Dst: ppDst4}, Found},
	{"v2 largest", ppV2(0x21, 0x11, ppInet4, make([]byte, maxProxyHeader-28)), ProxyHeader{Len: maxProxyHeader, Src: ppSrc4, Dst: ppDst4}, Found},
	{"v2 UNIX stream", ppV2(0x21, 0x31, ppUnix), ProxyHeader{Len: 232}, Found},
	{"v2 UNIX datagram", ppV2(0x21, 0x32, ppUnix, ppTLV(0x02, "a.example")), ProxyHeader{Len: 232 + 12}, Found},
	{"v2 UNSPEC", ppV2(0x21, 0x00), ProxyHeader{Len: 16}, Found},
	{"v2 UNSPEC with bytes", ppV2(0x21, 0x00, ppInet4), ProxyHeader{Len: 28}, Found},
	{"v2 INET unspecified transport", ppV2(0x21, 0x10, []byte{1, 2}), ProxyHeader{Len: 18}, Found},
	{"v2 UNSPEC stream", ppV2(0x21, 0x01), ProxyHeader{Len: 16}, Found},
	{"v2 LOCAL", ppV2(0x20, 0x00), ProxyHeader{Len: 16, Local: true}, Found},
	{"v2 LOCAL with addresses", ppV2(0x20, 0x11, ppInet4), ProxyHeader{Len: 28, Local: true}, Found},
	{"v2 LOCAL family ignored", ppV2(0x20, 0xff, []byte{1}), ProxyHeader{Len: 17, Local: true}, Found},
	{"v2 LOCAL short addresses", ppV2(0x20, 0x21, ppInet4), ProxyHeader{Len: 28, Local: true}, Found},

	{"v2 need more", ppV2(0x21, 0x11, ppInet4)[:27], ProxyHeader{}, NeedMore},
	{"v2 need more length", ppV2(0x21, 0x11, ppInet4)[:15], ProxyHeader{}, NeedMore},
	{"v2 need more signature", []byte("\r\n\r\n\x00"), ProxyHeader{}, NeedMore},
	{"v2 need more largest", ppV2Len(0x21, 0x11, maxProxyHeader-16, ppInet4), ProxyHeader{}, NeedMore},

	{"v2 signature typo", []byte("\r\n\r\n\x00\r\nQUIT\r"), ProxyHeader{}, NoName},
	{"v2 signature without NUL", []byte("\r\n\r\n\r\nQUIT\n!\x11\x00\x0c"), ProxyHeader{}, NoName},
	{"v2 version 1", ppV2(0x11, 0x11, ppInet4), ProxyHeader{}, NoName},
	{"v2 version 3", ppV2(0x31, 0x11, ppInet4), ProxyHeader{}, NoName},
	{"v2 command 2", ppV2(0x22, 0x11, ppInet4), ProxyHeader{}, NoName},
	{"v2 command F", ppV2(0x2f, 0x11, ppInet4), ProxyHeader{}, NoName},
	{"v2 family 4", ppV2(0x21, 0x41, ppInet4), ProxyHeader{}, NoName},
	{"v2 protocol 3", ppV2(0x21, 0x13, ppInet4), ProxyHeader{}, NoName},
	{"v2 bad version refused at once", []byte(proxyV2Sig + "\x11"), ProxyHeader{}, NoName},
	{"v2 bad family refused at once", []byte(proxyV2Sig + "\x21\xf1"), ProxyHeader{}, NoName},
	{"v2 TCP4 short", ppV2(0x21, 0x11, ppInet4[:11]), ProxyHeader{}, NoName},
	{"v2 TCP6 short", ppV2(0x21, 0x21, ppInet4, ppInet4), ProxyHeader{}, NoName},
	{"v2 UNIX short", ppV2(0x21, 0x31, ppUnix[:215]), ProxyHeader{}, NoName},
	{"v2 TCP4 short refused before the addresses", ppV2Len(0x21, 0x11, 11), ProxyHeader{}, NoName},
	{"v2 over 64 KiB", ppV2Len(0x21, 0x11, maxProxyHeader-15, ppInet4), ProxyHeader{}, NoName},
	{"v2 length 65535", ppV2Len(0x21, 0x11, 65535, ppInet4), ProxyHeader{}, NoName},
}

func TestParseProxy(t *testing.T) {
	// Whatever follows a header is the client's: HTTP, TLS, a second
	// header, garbage.
	trailers := [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"),
		{0x16, 0x03, 0x01},
		[]byte("PROXY TCP4 203.0.113.9 203.0.113.10 1 2\r\n"),
		ppV2(0x21, 0x11, ppInet4),
		{0x00, 0xff, '\r', '\n'},
		[]byte("\n"),
	}
	for _, c := range proxyCases {
		h, r := ParseProxy(c.data)
		if r != c.res || h != c.want {
			t.Errorf("%s: ParseProxy = %+v, %v; want %+v, %v", c.label, h, r, c.want, c.res)
			continue
		}
		switch r {
		case Found:
			checkProxyPrefixes(t, c.label, c.data)
			for _, tr := range trailers {
				more := append(bytes.Clone(c.data), tr...)
				if h2, r2 := ParseProxy(more); r2 != Found || h2 != h {
					t.Errorf("%s followed by %q: ParseProxy = %+v, %v; want %+v, found (the header only)", c.label, tr, h2, r2, h)
				}
			}
		case NoName:
			for _, tr := range trailers {
				more := append(bytes.Clone(c.data), tr...)
				if h2, r2 := ParseProxy(more); r2 != NoName || h2 != (ProxyHeader{}) {
					t.Errorf("%s followed by %q: ParseProxy = %+v, %v; want no name", c.label, tr, h2, r2)
				}
			}
		}
	}
}

// TestParseProxyLimits: a v2 header the caller's 64 KiB can hold is read,
// one byte more is refused as soon as its length field arrives.
func TestParseProxyLimits(t *testing.T) {
	for _, c := range []struct {
		addrLen int
		want    Sniff
	}{
		{maxProxyHeader - 16, Found},
		{maxProxyHeader - 15, NoName},
	} {
		data := ppV2Len(0x21, 0x11, c.addrLen, ppInet4, make([]byte, c.addrLen-len(ppInet4)))
		if _, r := ParseProxy(data[:16]); c.want == NoName && r != NoName {
			t.Errorf("fixed part announcing %d bytes: %v; want no name", c.addrLen, r)
		}
		if h, r := ParseProxy(data); r != c.want || r == Found && h.Len != len(data) {
			t.Errorf("v2 header of %d bytes: %+v, %v; want %v", len(data), h, r, c.want)
		}
	}
}

func TestParseProxyAllocs(t *testing.T) {
	for _, file := range []string{"haproxy-v1-tcp4", "haproxy-v1-tcp6", "haproxy-v1-tcp6-mapped", "haproxy-v2-tcp6", "haproxy-v2-tlvs"} {
		data := readProxyCorpus(t, file)
		if n := testing.AllocsPerRun(100, func() { ParseProxy(data) }); n != 0 {
			t.Errorf("ParseProxy(%s) allocates %v times; want 0", file, n)
		}
	}
}

func BenchmarkParseProxy(b *testing.B) {
	for _, file := range []string{"haproxy-v1-tcp4", "haproxy-v1-tcp6-mapped", "haproxy-v2-tcp4", "haproxy-v2-tlvs"} {
		data := readProxyCorpus(b, file)
		b.Run(file, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ParseProxy(data)
			}
		})
	}
}

func FuzzParseProxy(f *testing.F) {
	// The HAProxy captures come from testdata/fuzz/FuzzParseProxy.
	for _, c := range proxyCases {
		f.Add(c.data)
	}
	f.Fuzz(checkParseProxy)
}

// checkParseProxy holds ParseProxy to what the supervisor relies on: a
// Found header lies within data and describes itself consistently, the
// answer never depends on how many bytes arrived beyond the deciding ones,
// and a v1 line's verdict agrees with a reference parser built on
// net/netip and strconv.
func checkParseProxy(t *testing.T, data []byte) {
	t.Helper()
	h, r := checkDecision(t, ParseProxy, data)
	if r == Found {
		switch {
		case h.Len <= 0 || h.Len > len(data) || h.Len > maxProxyHeader:
			t.Fatalf("Found with Len %d of %d bytes", h.Len, len(data))
		case h.Src.IsValid() != h.Dst.IsValid():
			t.Fatalf("Found with one address: %+v", h)
		case h.Local && h.Src.IsValid():
			t.Fatalf("Local with addresses: %+v", h)
		case h.Src.IsValid() && (h.Src.Addr().Is4In6() || h.Dst.Addr().Is4In6() || h.Src.Addr().Zone() != "" || h.Dst.Addr().Zone() != ""):
			t.Fatalf("addresses not unmapped or with a zone: %+v", h)
		}
		if h2, r2 := ParseProxy(data[:h.Len]); r2 != Found || h2 != h {
			t.Fatalf("the header alone gives %+v, %v; the whole %+v, found", h2, r2, h)
		}
		if h2, r2 := ParseProxy(data[:h.Len-1]); r2 != NeedMore || h2 != (ProxyHeader{}) {
			t.Fatalf("the header but its last byte gives %+v, %v; want need more", h2, r2)
		}
	}
	if want, wantR, ok := refProxyV1(data); ok && (r != wantR || h != want) {
		t.Fatalf("ParseProxy = %+v, %v; the reference v1 parser says %+v, %v", h, r, want, wantR)
	}
}

// refProxyV1 parses a complete v1 line the simple way. ok is false when
// data does not start with "PROXY " and hold a CRLF within 107 bytes.
func refProxyV1(data []byte) (h ProxyHeader, r Sniff, ok bool) {
	s := string(data[:min(len(data), proxyV1Max)])
	end := strings.Index(s, "\r\n")
	if !strings.HasPrefix(s, "PROXY ") || end < 0 {
		return h, 0, false
	}
	line := s[len("PROXY "):end]
	if strings.ContainsAny(line, "\r\n") {
		return h, NoName, true
	}
	if line == "UNKNOWN" || strings.HasPrefix(line, "UNKNOWN ") {
		return ProxyHeader{Len: end + 2, Local: true}, Found, true
	}
	f := strings.Split(line, " ")
	if len(f) != 5 || f[0] != "TCP4" && f[0] != "TCP6" {
		return h, NoName, true
	}
	var addr [2]netip.Addr
	for i := range addr {
		a, err := netip.ParseAddr(f[1+i])
		if err != nil || a.Zone() != "" || a.Is4() != (f[0] == "TCP4") {
			return h, NoName, true
		}
		addr[i] = a.Unmap()
	}
	var port [2]uint16
	for i := range port {
		p := f[3+i]
		v, err := strconv.ParseUint(p, 10, 16)
		if err != nil || len(p) > 1 && p[0] == '0' {
			return h, NoName, true
		}
		port[i] = uint16(v)
	}
	return ProxyHeader{Len: end + 2, Src: netip.AddrPortFrom(addr[0], port[0]), Dst: netip.AddrPortFrom(addr[1], port[1])}, Found, true
}
