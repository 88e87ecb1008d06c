package vhost

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func checkSniff(t *testing.T, label string, data []byte, wantName string, want Sniff) {
	t.Helper()
	name, got := SniffName(data)
	if got != want || name != wantName {
		t.Errorf("%s: SniffName = %q, %v; want %q, %v", label, name, got, wantName, want)
	}
}

// checkPrefixes asserts that every proper prefix of data needs more.
func checkPrefixes(t *testing.T, label string, data []byte) {
	t.Helper()
	for n := range len(data) {
		if name, got := SniffName(data[:n]); got != NeedMore {
			t.Errorf("%s: prefix of %d/%d bytes gives %q, %v; want need more", label, n, len(data), name, got)
			return
		}
	}
}

var httpCases = []struct {
	label, req, name string
	want             Sniff
}{
	{"origin form", "GET / HTTP/1.1\r\nHost: shop.example.com\r\n\r\n", "shop.example.com", Found},
	{"port stripped", "GET /x HTTP/1.1\r\nHost: shop.example.com:8080\r\nAccept: */*\r\n\r\n", "shop.example.com", Found},
	{"empty port", "GET / HTTP/1.1\r\nHost: shop.example.com:\r\n\r\n", "shop.example.com", Found},
	{"case and dot", "GET / HTTP/1.1\r\nhOsT: Shop.Example.COM.\r\n\r\n", "shop.example.com", Found},
	{"no whitespace", "GET / HTTP/1.1\r\nHost:shop.example.com\r\n\r\n", "shop.example.com", Found},
	{"tabs and spaces", "GET / HTTP/1.1\r\nHost: \t shop.example.com \t\r\n\r\n", "shop.example.com", Found},
	{"host last", "POST /f HTTP/1.1\r\nContent-Length: 3\r\nX-A: b\r\nHost: a.b\r\n\r\n", "a.b", Found},
	{"HTTP/1.0", "GET / HTTP/1.0\r\nHost: a.example\r\n\r\n", "a.example", Found},
	{"bare LF", "GET / HTTP/1.1\nHost: shop.example.com\nAccept: */*\n\n", "shop.example.com", Found},
	{"mixed line ends", "GET / HTTP/1.1\r\nHost: shop.example.com\n\r\n", "shop.example.com", Found},
	{"underscore", "GET / HTTP/1.1\r\nHost: my_host.example.com\r\n\r\n", "my_host.example.com", Found},
	{"hyphenated method", "VERSION-CONTROL / HTTP/1.1\r\nHost: a.b\r\n\r\n", "a.b", Found},
	{"absolute form", "GET http://shop.example.com:8080/x HTTP/1.1\r\nHost: shop.example.com:8080\r\n\r\n", "shop.example.com", Found},
	{"absolute form wins", "GET http://Shop.Example.com/x?y HTTP/1.1\r\nHost: other.example.com\r\n\r\n", "shop.example.com", Found},
	{"absolute https no path", "OPTIONS HTTPS://a.example.org HTTP/1.1\r\n\r\n", "a.example.org", Found},
	{"absolute query", "GET http://a.example?x=/ HTTP/1.1\r\n\r\n", "a.example", Found},
	{"absolute userinfo", "GET http://u:p@a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n", "a.example", Found},
	{"absolute IPv6", "GET http://[::1]:80/ HTTP/1.1\r\nHost: a.example\r\n\r\n", "", NoName},
	{"absolute empty host", "GET http:///x HTTP/1.1\r\nHost: a.example\r\n\r\n", "", NoName},
	{"no host", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", "", NoName},
	{"HTTP/1.0 no host", "GET / HTTP/1.0\r\n\r\n", "", NoName},
	{"two hosts", "GET / HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n\r\n", "", NoName},
	{"empty line first (RFC 9112 §2.2)", "\r\nGET / HTTP/1.1\r\nHost: a.example\r\n\r\n", "a.example", Found},
	{"empty lines first, bare LF", "\n\n\r\nGET / HTTP/1.1\r\nHost: a.example\r\n\r\n", "a.example", Found},
	{"empty line then not HTTP", "\r\n\x16\x03\x01", "", NoName},
	{"two hosts absolute", "GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n", "", NoName},
	{"empty host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", "", NoName},
	{"IPv6 host", "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", "", NoName},
	{"IPv4 host", "GET / HTTP/1.1\r\nHost: 192.0.2.1:80\r\n\r\n", "", NoName},
	{"numeric last label", "GET / HTTP/1.1\r\nHost: example.123\r\n\r\n", "", NoName},
	{"bad port", "GET / HTTP/1.1\r\nHost: a.example:8x\r\n\r\n", "", NoName},
	{"two colons", "GET / HTTP/1.1\r\nHost: a.example:1:2\r\n\r\n", "", NoName},
	{"space in host", "GET / HTTP/1.1\r\nHost: a example\r\n\r\n", "", NoName},
	{"slash in host", "GET / HTTP/1.1\r\nHost: a.example/x\r\n\r\n", "", NoName},
	{"empty label", "GET / HTTP/1.1\r\nHost: a..example\r\n\r\n", "", NoName},
	{"leading dot", "GET / HTTP/1.1\r\nHost: .example\r\n\r\n", "", NoName},
	{"long label", "GET / HTTP/1.1\r\nHost: " + strings.Repeat("a", 64) + ".example\r\n\r\n", "", NoName},
	{"63 label", "GET / HTTP/1.1\r\nHost: " + strings.Repeat("a", 63) + ".example\r\n\r\n", strings.Repeat("a", 63) + ".example", Found},
	{"long name", "GET / HTTP/1.1\r\nHost: " + strings.Repeat("abcdefg.", 32) + "ab\r\n\r\n", "", NoName},
	{"non-ASCII host", "GET / HTTP/1.1\r\nHost: b\xc3\xbccher.example\r\n\r\n", "", NoName},
	{"space before colon", "GET / HTTP/1.1\r\nHost : a.example\r\n\r\n", "", NoName},
	{"no colon", "GET / HTTP/1.1\r\nHost a.example\r\n\r\n", "", NoName},
	{"NUL in value", "GET / HTTP/1.1\r\nX: a\x00b\r\nHost: a.example\r\n\r\n", "", NoName},
	{"bare CR", "GET / HTTP/1.1\r\nX: a\rb\r\nHost: a.example\r\n\r\n", "", NoName},
	{"folded host", "GET / HTTP/1.1\r\nHost: a.example\r\n .evil\r\n\r\n", "", NoName},
	{"folded other", "GET / HTTP/1.1\r\nX: a\r\n b\r\nHost: a.example\r\n\r\n", "a.example", Found},
	{"space before first header", "GET / HTTP/1.1\r\n Host: a.example\r\n\r\n", "", NoName},
	{"HTTP/2 prior knowledge, preface only (h2c.go reads on)", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "", NeedMore},
	{"HTTP/2 version", "GET / HTTP/2.0\r\nHost: a.example\r\n\r\n", "", NoName},
	{"HTTP/0.9", "GET /\r\n", "", NoName},
	{"lower-case method", "get / HTTP/1.1\r\nHost: a.example\r\n\r\n", "", NoName},
	{"lower-case version", "GET / http/1.1\r\nHost: a.example\r\n\r\n", "", NoName},
	{"text", "Hello there\r\n", "", NoName},
	{"double space", "GET  / HTTP/1.1\r\nHost: a.example\r\n\r\n", "", NoName},
	{"long method", strings.Repeat("A", 40) + " / HTTP/1.1\r\n", "", NoName},
	{"junk after version", "GET / HTTP/1.1x\r\nHost: a.example\r\n\r\n", "", NoName},
	{"CR CR", "GET / HTTP/1.1\r\nHost: a.example\r\n\r\r\n", "", NoName},
	{"SSH", "SSH-2.0-OpenSSH_9.2\r\n", "", NoName},
	{"binary", "\x00\x01\x02", "", NoName},
	{"SSLv2 hello", "\x80\x2e\x01\x00\x02", "", NoName},
	{"need more", "GET / HTTP/1.1\r\nHost: a.example\r\n", "", NeedMore},
	{"empty", "", "", NeedMore},
}

func TestSniffHTTP(t *testing.T) {
	for _, c := range httpCases {
		checkSniff(t, c.label, []byte(c.req), c.name, c.want)
		if c.want == Found {
			checkPrefixes(t, c.label, []byte(c.req))
			checkSniff(t, c.label+" + more", []byte(c.req+"GET / HTTP/1.1\r\nHost: other.example\r\n\r\n"), c.name, c.want)
		}
		if c.want == NoName {
			checkSniff(t, c.label+" + more", []byte(c.req+"Host: x.example\r\n\r\n"), "", NoName)
		}
	}
}

func TestSniffHTTPLimit(t *testing.T) {
	filler := "X-Filler: " + strings.Repeat("f", 100) + "\r\n"
	head := "GET / HTTP/1.1\r\nHost: a.example\r\n"
	for len(head)+len(filler)+2 <= maxHTTPHead {
		head += filler
	}
	// Pad so that the empty line ends exactly at the limit.
	pad := maxHTTPHead - len(head) - len("X: \r\n\r\n")
	head += "X: " + strings.Repeat("p", pad) + "\r\n"
	checkSniff(t, "head of exactly maxHTTPHead", []byte(head+"\r\n"), "a.example", Found)
	checkSniff(t, "head one byte over", []byte(head+"Y\r\n\r\n"), "", NoName)
	checkSniff(t, "maxHTTPHead without end", []byte(head+"YY"), "", NoName)
	checkSniff(t, "maxHTTPHead - 1 without end", []byte(head+"Y"), "", NeedMore)
	checkSniff(t, "long request line", []byte("GET /"+strings.Repeat("a", maxHTTPHead)), "", NoName)
}

func TestSniffHTTPCaptures(t *testing.T) {
	for file, want := range map[string]string{
		"curl-http.bin":       "shop.example.com",
		"curl-http-proxy.bin": "shop.example.com",
	} {
		data, err := os.ReadFile(filepath.Join("testdata", "http", file))
		if err != nil {
			t.Fatal(err)
		}
		checkSniff(t, file, data, want, Found)
		checkPrefixes(t, file, data)
	}
}

// Captured ClientHellos: what the client sends first, saved by a loopback
// listener (see testdata/clienthello/README).
var helloCaptures = map[string]string{
	"curl-sni.bin":          "shop.example.com",
	"curl-nosni.bin":        "",
	"openssl-sni.bin":       "shop.example.com",
	"openssl-nosni.bin":     "",
	"openssl-tls12-sni.bin": "shop.example.com",
	"go-sni.bin":            "shop.example.com",
	"go-nosni.bin":          "",
	"go-ech.bin":            "public.example.net", // the outer, public name
}

func readHello(t testing.TB, file string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "clienthello", file))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func wantOf(name string) Sniff {
	if name == "" {
		return NoName
	}
	return Found
}

// handshakeOf returns the handshake bytes of a single-record ClientHello.
func handshakeOf(t testing.TB, rec []byte) []byte {
	t.Helper()
	n := int(binary.BigEndian.Uint16(rec[3:5]))
	if rec[0] != 0x16 || len(rec) != 5+n {
		t.Fatalf("not one handshake record: % x...", rec[:5])
	}
	return rec[5:]
}

// records splits a handshake message into records of at most size bytes.
func records(msg []byte, size int) []byte {
	var out []byte
	for len(msg) > 0 {
		k := min(size, len(msg))
		out = append(out, 0x16, 3, 1, byte(k>>8), byte(k))
		out = append(out, msg[:k]...)
		msg = msg[k:]
	}
	return out
}

func TestSniffTLSCaptures(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "clienthello", "*.bin"))
	if len(files) != len(helloCaptures) {
		t.Errorf("testdata has %d captures, the test knows %d", len(files), len(helloCaptures))
	}
	for file, name := range helloCaptures {
		data := readHello(t, file)
		want := wantOf(name)
		checkSniff(t, file, data, name, want)
		checkPrefixes(t, file, data)
		checkSniff(t, file+" + application data", append(bytes.Clone(data), 0x17, 3, 3, 0, 1, 0), name, want)
		msg := handshakeOf(t, data)
		for _, size := range []int{1, 2, 3, 5, 64, 100, 255, 511, 1000} {
			split := records(msg, size)
			label := fmt.Sprintf("%s in records of %d", file, size)
			checkSniff(t, label, split, name, want)
			if size == 1 || size == 100 {
				checkPrefixes(t, label, split)
			}
		}
	}
}

// TestSniffTLSGo runs Go's own TLS client, so a change in what it sends is
// noticed without recapturing.
func TestSniffTLSGo(t *testing.T) {
	for _, c := range []struct{ serverName, name string }{
		{"shop.example.com", "shop.example.com"},
		{"Shop.Example.COM.", "shop.example.com"},
		{"", ""},
		{"192.0.2.1", ""}, // Go sends no SNI for an IP address
	} {
		hello := goClientHello(t, c.serverName)
		checkSniff(t, "Go client for "+c.serverName, hello, c.name, wantOf(c.name))
		checkPrefixes(t, "Go client for "+c.serverName, hello)
	}
}

// goClientHello returns what a crypto/tls client sends first.
func goClientHello(t testing.TB, serverName string) []byte {
	t.Helper()
	cli, srv := net.Pipe()
	defer srv.Close()
	go func() {
		defer cli.Close()
		tls.Client(cli, &tls.Config{ServerName: serverName, InsecureSkipVerify: true}).Handshake()
	}()
	var got []byte
	buf := make([]byte, 4096)
	for {
		srv.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := srv.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("reading the ClientHello: %v", err)
		}
		if len(got) >= 5 && len(got) >= 5+int(binary.BigEndian.Uint16(got[3:5])) {
			return got
		}
	}
}

// Building ClientHellos by hand covers what the captured clients never
// send: GREASE, odd splits, malformed lengths.

type ext struct {
	typ  uint16
	data []byte
}

func u16(v int) []byte { return []byte{byte(v >> 8), byte(v)} }

func vec16(parts ...[]byte) []byte {
	b := bytes.Join(parts, nil)
	return append(u16(len(b)), b...)
}

// sniExt builds a server_name extension from (type, name) entries.
func sniExt(entries ...string) ext {
	var list []byte
	for _, e := range entries {
		typ := byte(0)
		if t, name, ok := strings.Cut(e, "="); ok {
			typ, e = t[0]-'0', name
		}
		list = append(list, typ)
		list = append(list, vec16([]byte(e))...)
	}
	return ext{0, vec16(list)}
}

// helloBody is a ClientHello body with the given extensions.
func helloBody(exts ...ext) []byte {
	b := []byte{3, 3}
	b = append(b, bytes.Repeat([]byte{0xaa}, 32)...)        // random
	b = append(b, 32)                                       // session id
	b = append(b, bytes.Repeat([]byte{0xbb}, 32)...)        //
	b = append(b, vec16([]byte{0x1a, 0x1a, 0x13, 0x01})...) // GREASE, TLS_AES_128_GCM_SHA256
	b = append(b, 1, 0)                                     // null compression
	var e []byte
	for _, x := range exts {
		e = append(e, u16(int(x.typ))...)
		e = append(e, vec16(x.data)...)
	}
	return append(b, vec16(e)...)
}

// handshake wraps a body as a handshake message of type typ.
func handshake(typ byte, body []byte) []byte {
	n := len(body)
	return append([]byte{typ, byte(n >> 16), byte(n >> 8), byte(n)}, body...)
}

func hello(exts ...ext) []byte { return records(handshake(1, helloBody(exts...)), maxRecord) }

var (
	greaseA = ext{0x0a0a, nil}
	greaseB = ext{0xfafa, []byte{0}}
	supVers = ext{43, []byte{4, 0x3a, 0x3a, 3, 4}} // GREASE version and TLS 1.3
	ech     = ext{0xfe0d, append([]byte{0, 0, 1, 0, 1, 7}, vec16(bytes.Repeat([]byte{1}, 32))...)}
)

func TestSniffTLSSynthetic(t *testing.T) {
	big := ext{0xff01, bytes.Repeat([]byte{7}, 40000)}
	noExt := handshake(1, helloBody()[:2+32+33+6+2])
	cases := []struct {
		label string
		data  []byte
		name  string
		want  Sniff
	}{
		{"plain", hello(sniExt("a.example")), "a.example", Found},
		{"GREASE", hello(greaseA, sniExt("a.example"), supVers, greaseB), "a.example", Found},
		{"ECH outer", hello(greaseA, sniExt("public.example"), ech, supVers), "public.example", Found},
		{"upper case and dot", hello(sniExt("A.Example.")), "a.example", Found},
		{"other name type first", hello(sniExt("1=opaque", "a.example")), "a.example", Found},
		{"SNI last after big extension", records(handshake(1, helloBody(big, sniExt("a.example"))), maxRecord), "a.example", Found},
		{"spans records", records(handshake(1, helloBody(big, sniExt("a.example"))), 1000), "a.example", Found},
		{"no SNI", hello(greaseA, supVers), "", NoName},
		{"no extensions", records(noExt, maxRecord), "", NoName},
		{"only other name type", hello(sniExt("1=opaque")), "", NoName},
		{"two SNI extensions", hello(sniExt("a.example"), sniExt("b.example")), "", NoName},
		{"two host names", hello(sniExt("a.example", "b.example")), "", NoName},
		{"empty name list", hello(ext{0, u16(0)}), "", NoName},
		{"empty SNI extension", hello(ext{0, nil}), "", NoName},
		{"empty host name", hello(sniExt("")), "", NoName},
		{"IP address", hello(sniExt("192.0.2.1")), "", NoName},
		{"IPv6 address", hello(sniExt("::1")), "", NoName},
		{"bad character", hello(sniExt("a/b.example")), "", NoName},
		{"NUL in name", hello(sniExt("a.example\x00.evil")), "", NoName},
		{"name too long", hello(sniExt(strings.Repeat("a.", 127) + "ab")), "", NoName},
		{"list shorter than ext", hello(ext{0, append(vec16(append([]byte{0}, vec16([]byte("a.b"))...)), 0)}), "", NoName},
		{"name overruns list", hello(ext{0, vec16([]byte{0, 0, 9, 'a', '.', 'b'})}), "", NoName},
		{"server hello", records(handshake(2, helloBody(sniExt("a.example"))), maxRecord), "", NoName},
		{"ClientHello over 64 KiB", []byte{0x16, 3, 1, 0, 4, 1, 1, 0, 1}, "", NoName},
		{"ClientHello of 64 KiB", []byte{0x16, 3, 1, 0, 4, 1, 1, 0, 0}, "", NeedMore},
		{"record version 3.5", []byte{0x16, 3, 5}, "", NoName},
		{"record version 2", []byte{0x16, 2}, "", NoName},
		{"record version 3.0", []byte{0x16, 3, 0}, "", NoName},
		{"empty record", []byte{0x16, 3, 1, 0, 0}, "", NoName},
		{"record over 16 KiB", []byte{0x16, 3, 1, 0x40, 1}, "", NoName},
		{"alert", []byte{0x15, 3, 1, 0, 2, 2, 40}, "", NoName},
		{"just the type", []byte{0x16}, "", NeedMore},
	}
	// The body's own lengths must add up.
	body := helloBody(sniExt("a.example"))
	long := bytes.Clone(body)
	long[len(long)-len(sniExt("a.example").data)-5]++ // extensions length one too big
	cases = append(cases,
		struct {
			label string
			data  []byte
			name  string
			want  Sniff
		}{"extensions overrun", records(handshake(1, long), maxRecord), "", NoName},
		struct {
			label string
			data  []byte
			name  string
			want  Sniff
		}{"trailing byte in message", records(handshake(1, append(bytes.Clone(body), 0)), maxRecord), "", NoName})
	// A later record that is not a handshake record.
	split := records(handshake(1, body), 20)
	split[25] = 0x17
	cases = append(cases, struct {
		label string
		data  []byte
		name  string
		want  Sniff
	}{"application data inside", split, "", NoName})
	for _, c := range cases {
		checkSniff(t, c.label, c.data, c.name, c.want)
		if c.want == Found {
			checkPrefixes(t, c.label, c.data)
		}
	}
}

func TestSniffNameAllocs(t *testing.T) {
	inputs := [][]byte{
		[]byte(httpCases[0].req),
		readHello(t, "curl-sni.bin"),
		records(handshakeOf(t, readHello(t, "go-sni.bin")), 100),
		readHello(t, "go-nosni.bin"),
	}
	for _, in := range inputs {
		if n := testing.AllocsPerRun(100, func() { SniffName(in) }); n > 1 {
			t.Errorf("SniffName(% x...) allocates %v times; want at most 1 (the name)", in[:8], n)
		}
	}
	// FastCGI params give SERVER_NAME as well (SniffNames); not h2c, whose
	// HPACK decoder allocates (h2c_test.go measures it).
	fcgi := readFastCGI(t, "nginx-get.bin")
	if n := testing.AllocsPerRun(100, func() { SniffName(fcgi) }); n > 2 {
		t.Errorf("SniffName of FastCGI params allocates %v times; want at most 2 (HTTP_HOST and SERVER_NAME)", n)
	}
}

func BenchmarkSniffName(b *testing.B) {
	for _, bc := range []struct {
		label string
		data  []byte
	}{
		{"HTTP", readHTTP(b, "curl-http.bin")},
		{"ClientHello-curl", readHello(b, "curl-sni.bin")},
		{"ClientHello-go", readHello(b, "go-sni.bin")},
		{"ClientHello-go-100B-records", records(handshakeOf(b, readHello(b, "go-sni.bin")), 100)},
	} {
		b.Run(bc.label, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.data)))
			for b.Loop() {
				if _, r := SniffName(bc.data); r != Found {
					b.Fatal(r)
				}
			}
		})
	}
}

func readHTTP(tb testing.TB, file string) []byte {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "http", file))
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

// validSniffedName is what Found promises: a lower-case DNS name without
// port or trailing dot, which MatchName takes as it is.
func validSniffedName(name string) bool {
	var buf [253]byte
	n, ok := hostName([]byte(name), &buf)
	if !ok || string(buf[:n]) != name || strings.HasSuffix(name, ".") {
		return false
	}
	n, ok = normalizeHost(name, &buf)
	return ok && string(buf[:n]) == name
}

// sniffSeeds adds the captures in testdata whose first byte passes keep,
// TLS ones also cut into 50-byte records, to f's corpus.
func sniffSeeds(f *testing.F, keep func(first byte) bool) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*", "*.bin"))
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		if !keep(data[0]) {
			continue
		}
		f.Add(data)
		if data[0] == 0x16 {
			f.Add(records(handshakeOf(f, data), 50))
		}
	}
}

func isTLS(first byte) bool { return first == 0x16 }

func FuzzSniffName(f *testing.F) {
	sniffSeeds(f, func(byte) bool { return true })
	for _, c := range httpCases {
		f.Add([]byte(c.req))
	}
	f.Add(hello(greaseA, sniExt("1=x", "a.example"), ech, supVers, greaseB))
	f.Fuzz(func(t *testing.T, data []byte) { checkSniffer(t, SniffName, data) })
}

// FuzzSniffHTTP aims at the request-line and Host parser alone.
func FuzzSniffHTTP(f *testing.F) {
	sniffSeeds(f, func(b byte) bool { return !isTLS(b) })
	for _, c := range httpCases {
		f.Add([]byte(c.req))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkSniffer(t, sniffHTTP, data) })
}

// FuzzSniffTLS aims at the ClientHello reassembly and SNI parser alone.
func FuzzSniffTLS(f *testing.F) {
	sniffSeeds(f, isTLS)
	f.Add(hello(greaseA, sniExt("1=x", "a.example"), ech, supVers, greaseB))
	f.Fuzz(func(t *testing.T, data []byte) { checkSniffer(t, sniffTLS, data) })
}

// checkSniffer holds a sniffer to what the supervisor relies on: a Found
// name is a valid host name, and checkDecision's rules.
func checkSniffer(t *testing.T, sniff func([]byte) (string, Sniff), data []byte) {
	t.Helper()
	if name, r := checkDecision(t, sniff, data); r == Found && !validSniffedName(name) {
		t.Fatalf("Found invalid name %q", name)
	}
}

// checkDecision holds a parser of peeked bytes (SniffName and its parts,
// ParseProxy, ParseCGID) to what the supervisor relies on whatever the
// bytes: only Found comes with a value, more bytes never change a decision,
// nor fewer bytes make one that the whole does not confirm. It returns
// what parse answers for data.
func checkDecision[T comparable](t *testing.T, parse func([]byte) (T, Sniff), data []byte) (T, Sniff) {
	t.Helper()
	// show quotes names, so that "" shows.
	show := func(v T) string {
		if s, ok := any(v).(string); ok {
			return strconv.Quote(s)
		}
		return fmt.Sprintf("%+v", v)
	}
	got, r := parse(data)
	switch r {
	case Found:
	case NeedMore, NoName:
		var zero T
		if got != zero {
			t.Fatalf("%v with %s", r, show(got))
		}
	default:
		t.Fatalf("result %d", r)
	}
	if r != NeedMore {
		more := append(bytes.Clone(data), data...)
		if got2, r2 := parse(more); r2 != r || got2 != got {
			t.Fatalf("appending changed %s, %v to %s, %v", show(got), r, show(got2), r2)
		}
	}
	half := data[:len(data)/2]
	if got2, r2 := parse(half); r2 != NeedMore && (r2 != r || got2 != got) {
		t.Fatalf("first half gives %s, %v, the whole %s, %v", show(got2), r2, show(got), r)
	}
	return got, r
}

// SniffName reads each protocol from its first byte: FastCGI from nginx
// and Apache (php-fpm's clients), HTTP/2 with prior knowledge from curl
// and nghttp, each capture in full and needing more in every prefix.
func TestSniffNameProtocols(t *testing.T) {
	for _, tc := range []struct {
		label string
		data  []byte
		name  string
		want  Sniff
	}{
		{"FastCGI from nginx", readFastCGI(t, "nginx-get.bin"), "shop.example.com", Found},
		{"FastCGI from Apache mod_proxy_fcgi", readFastCGI(t, "apache-get.bin"), "shop.example.com", Found},
		{"FastCGI, SERVER_NAME only", readFastCGI(t, "apache-http10-nohost.bin"), "shop.example.com", Found},
		// The IP literal is no name: the server block's SERVER_NAME is.
		{"FastCGI to an IP literal", readFastCGI(t, "nginx-ip.bin"), "shop.example.com", Found},
		{"h2c from curl", readH2C(t, "curl.bin"), "shop.example.com", Found},
		{"h2c from nghttp", readH2C(t, "nghttp.bin"), "shop.example.com", Found},
		{"h2c to an IP literal", readH2C(t, "curl-ip.bin"), "", NoName},
	} {
		checkSniff(t, tc.label, tc.data, tc.name, tc.want)
		if tc.want == Found {
			checkPrefixes(t, tc.label, tc.data[:24]) // before any name can be there
		}
	}
}

func TestBeginsRequest(t *testing.T) {
	for _, tc := range []struct {
		name string
		data string
		want bool
	}{
		{"HTTP request line", "GET / HTTP/1.1\r\nHo", true},
		{"HTTP request line, bare LF", "POST /form HTTP/1.0\nHost", true},
		{"after empty lines", "\r\n\r\nGET /x HTTP/1.1\r\n", true},
		{"method and space", "GET ", true},
		{"long method", "UPDATEREDIRECTREF /x HTTP/1.1\r\n", true},
		{"method alone", "GET", false},
		{"body like a method", "POSTDATA", false},
		{"body", "name=value\r\nmore", false},
		{"lower-case method", "get / HTTP/1.1\r\n", false},
		{"space first", " GET / HTTP/1.1\r\n", false},
		{"a token too long for a method", "ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJ /", false},
		{"FastCGI BEGIN_REQUEST", "\x01\x01\x00\x01\x00\x08\x00\x00", true},
		{"FastCGI BEGIN_REQUEST header only", "\x01\x01", true},
		{"FastCGI STDIN", "\x01\x05\x00\x01\x00\x10\x00\x00", false},
		{"FastCGI PARAMS", "\x01\x04\x00\x01", false},
		{"one FastCGI byte", "\x01", false},
		{"TLS record", "\x16\x03\x01\x00", false},
		{"nothing", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := BeginsRequest([]byte(tc.data)); got != tc.want {
				t.Errorf("BeginsRequest(%q) = %v, want %v", tc.data, got, tc.want)
			}
		})
	}
}
