package vhost

import (
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// cgidCapture is what a capture in testdata/cgid says, and the first
// prefix length at which ParseCGID answers.
type cgidCapture struct {
	want    CGIDRequest
	decided int
}

// cgidCaptures are what Debian's Apache sent mod_cgid's daemon
// (testdata/cgid/README).
var cgidCaptures = map[string]cgidCapture{
	"cgid-get.bin": {CGIDRequest{Type: CGIDScript, ConnID: 0, Host: "shop.example.com", ServerName: "shop.example.com",
		Server: netip.MustParseAddrPort("127.0.0.1:8081")}, 568},
	"cgid-name.bin": {CGIDRequest{Type: CGIDScript, ConnID: 2, Host: "blog.example.com", ServerName: "blog.example.com",
		Server: netip.MustParseAddrPort("127.0.0.1:8081")}, 565},
	"cgid-post.bin": {CGIDRequest{Type: CGIDScript, ConnID: 4, Host: "shop.example.com", ServerName: "shop.example.com",
		Server: netip.MustParseAddrPort("127.0.0.1:8081")}, 644},
	// Host without port: SERVER_PORT is 80, not the connection's 8081
	// (UseCanonicalPhysicalPort Off).
	"cgid-noport.bin": {CGIDRequest{Type: CGIDScript, ConnID: 64, Host: "blog.example.com", ServerName: "blog.example.com",
		Server: netip.MustParseAddrPort("127.0.0.1:80")}, 558},
	// No HTTP_HOST at all: decided only at the end of the environment.
	"cgid-http10-nohost.bin": {CGIDRequest{Type: CGIDScript, ConnID: 6, ServerName: "shop.example.com",
		Server: netip.MustParseAddrPort("127.0.0.1:80")}, 1009},
	// Host 127.0.0.1:8081: neither HTTP_HOST nor SERVER_NAME (the same,
	// under UseCanonicalName Off) is a name.
	"cgid-ip.bin": {CGIDRequest{Type: CGIDScript, ConnID: 8, Server: netip.MustParseAddrPort("127.0.0.1:8081")}, 551},
	"cgid-v6.bin": {CGIDRequest{Type: CGIDScript, ConnID: 10, Host: "shop.example.com", ServerName: "shop.example.com",
		Server: netip.MustParseAddrPort("[::1]:8081")}, 559},
	"cgid-getpid.bin": {CGIDRequest{Type: CGIDGetPID, ConnID: 0}, cgidHeaderLen},
}

func readCGID(tb testing.TB, file string) []byte {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "cgid", file))
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

// Each capture gives what its request asked for once the bytes that
// decide are in, and NeedMore before: the supervisor holds the
// connection until then.
func TestParseCGIDCaptures(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "cgid", "*.bin"))
	if len(files) != len(cgidCaptures) {
		t.Errorf("testdata has %d captures, the test knows %d", len(files), len(cgidCaptures))
	}
	for file, c := range cgidCaptures {
		data := readCGID(t, file)
		if got, r := ParseCGID(data); r != Found || got != c.want {
			t.Errorf("%s: ParseCGID = %+v, %v; want %+v, found", file, got, r, c.want)
		}
		decided := len(data)
		for n := range len(data) {
			if _, r := ParseCGID(data[:n]); r != NeedMore {
				decided = n
				break
			}
		}
		if decided != c.decided {
			t.Errorf("%s: decided at byte %d of %d, want %d", file, decided, len(data), c.decided)
		}
		if got, r := ParseCGID(data[:decided]); r != Found || got != c.want {
			t.Errorf("%s: its first %d bytes give %+v, %v; want %+v, found", file, decided, got, r, c.want)
		}
	}
}

// TestCGIDCorpus keeps the fuzz seed corpus, where go test and the fuzzer
// find it, the same as the captures the other tests read.
func TestCGIDCorpus(t *testing.T) {
	for file := range cgidCaptures {
		path := filepath.Join("testdata", "fuzz", "FuzzParseCGID", strings.TrimSuffix(file, ".bin"))
		corpus, err := os.ReadFile(path)
		if err != nil {
			t.Error(err)
			continue
		}
		want := "go test fuzz v1\n[]byte(" + strconv.Quote(string(readCGID(t, file))) + ")\n"
		if string(corpus) != want {
			t.Errorf("%s is not %s in the fuzz corpus format", path, file)
		}
	}
}

// cgidHeader is a cgid_req_t as mod_cgid's send_req fills it for a
// request of type typ with env strings, on x86-64.
type cgidHeader struct {
	typ, ppid, envCount, logLevel int32
	connID                        uint64
	filename, argv0, uri, args    string
}

func (h cgidHeader) bytes() []byte {
	b := make([]byte, cgidHeaderLen)
	le := binary.LittleEndian
	le.PutUint32(b[0:], uint32(h.typ))
	le.PutUint64(b[8:], h.connID)
	le.PutUint32(b[16:], uint32(h.ppid))
	le.PutUint32(b[20:], uint32(h.envCount))
	for i := 24; i < 36; i++ {
		b[i] = 0xff // no suexec identity: -1, -1, -1
	}
	for i, s := range []string{h.filename, h.argv0, h.uri, h.args} {
		le.PutUint64(b[40+8*i:], uint64(len(s)))
	}
	le.PutUint32(b[72:], uint32(h.logLevel))
	return append(b, h.filename+h.argv0+h.uri+h.args...)
}

func cgidEnv(kv ...string) []byte {
	var b []byte
	for _, s := range kv {
		b = binary.LittleEndian.AppendUint64(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

// cgidReq is a CGI_REQ with env, as Apache sends it, limits included.
func cgidReq(env ...string) []byte {
	h := cgidHeader{typ: cgidScript, ppid: 4242, envCount: int32(len(env)), logLevel: 4, connID: 7,
		filename: "/usr/lib/cgi-bin/x", argv0: "/usr/lib/cgi-bin/x", uri: "/cgi-bin/x"}
	return cat(h.bytes(), cgidEnv(env...), make([]byte, 72))
}

func okHeader() cgidHeader {
	return cgidHeader{typ: cgidScript, ppid: 4242, envCount: 1, logLevel: 4, filename: "/f", argv0: "/f", uri: "/u"}
}

func TestParseCGID(t *testing.T) {
	shop := []string{"HTTP_HOST=Shop.Example.COM.:8081", "PATH=/usr/bin", "SERVER_NAME=shop.example.com",
		"SERVER_ADDR=192.0.2.10", "SERVER_PORT=8081", "REMOTE_ADDR=198.51.100.7"}
	want := CGIDRequest{Type: CGIDScript, ConnID: 7, Host: "shop.example.com", ServerName: "shop.example.com",
		Server: netip.MustParseAddrPort("192.0.2.10:8081")}
	with := func(f func(*cgidHeader)) []byte {
		h := okHeader()
		f(&h)
		return cat(h.bytes(), cgidEnv("SERVER_NAME=shop.example"))
	}
	huge := binary.LittleEndian.AppendUint64(nil, maxCGID+1)
	for _, tc := range []struct {
		label string
		data  []byte
		want  CGIDRequest
		res   Sniff
	}{
		{"a request", cgidReq(shop...), want, Found},
		{"decided before the rest of the environment", cgidReq(shop...)[:len(cgidReq(shop[:5]...))-72], want, Found},
		{"an include (SSI exec)", func() []byte { b := cgidReq(shop...); b[0] = cgidInclude; return b }(),
			CGIDRequest{Type: CGIDInclude, ConnID: 7, Host: want.Host, ServerName: want.ServerName, Server: want.Server}, Found},
		{"the first of each decides", cgidReq(append(shop, "HTTP_HOST=other.example", "SERVER_ADDR=192.0.2.99")...), want, Found},
		{"a repeated HTTP_HOST before the others", cgidReq("HTTP_HOST=a.example", "HTTP_HOST=b.example", "SERVER_NAME=c.example",
			"SERVER_ADDR=192.0.2.1", "SERVER_PORT=80"),
			CGIDRequest{Type: CGIDScript, ConnID: 7, Host: "a.example", ServerName: "c.example", Server: netip.MustParseAddrPort("192.0.2.1:80")}, Found},
		{"IPv6", cgidReq("HTTP_HOST=[2001:db8::1]:80", "SERVER_NAME=shop.example", "SERVER_ADDR=2001:db8::1", "SERVER_PORT=80"),
			CGIDRequest{Type: CGIDScript, ConnID: 7, ServerName: "shop.example", Server: netip.MustParseAddrPort("[2001:db8::1]:80")}, Found},
		{"IPv4-mapped IPv6 is IPv4", cgidReq("SERVER_ADDR=::ffff:192.0.2.1", "SERVER_PORT=443"),
			CGIDRequest{Type: CGIDScript, ConnID: 7, Server: netip.MustParseAddrPort("192.0.2.1:443")}, Found},
		{"no address, a name", cgidReq("HTTP_HOST=shop.example"), CGIDRequest{Type: CGIDScript, ConnID: 7, Host: "shop.example"}, Found},
		{"an address without port", cgidReq("HTTP_HOST=shop.example", "SERVER_ADDR=192.0.2.1"),
			CGIDRequest{Type: CGIDScript, ConnID: 7, Host: "shop.example"}, Found},
		{"a bad port", cgidReq("HTTP_HOST=shop.example", "SERVER_ADDR=192.0.2.1", "SERVER_PORT=65536"),
			CGIDRequest{Type: CGIDScript, ConnID: 7, Host: "shop.example"}, Found},
		{"port 0", cgidReq("HTTP_HOST=shop.example", "SERVER_ADDR=192.0.2.1", "SERVER_PORT=0"),
			CGIDRequest{Type: CGIDScript, ConnID: 7, Host: "shop.example"}, Found},
		{"a port with a sign", cgidReq("SERVER_NAME=shop.example", "SERVER_ADDR=192.0.2.1", "SERVER_PORT=+80"),
			CGIDRequest{Type: CGIDScript, ConnID: 7, ServerName: "shop.example"}, Found},
		{"a port with a leading zero (Apache writes %u)", cgidReq("SERVER_NAME=shop.example", "SERVER_ADDR=192.0.2.1", "SERVER_PORT=080"),
			CGIDRequest{Type: CGIDScript, ConnID: 7, ServerName: "shop.example"}, Found},
		{"a port of six digits", cgidReq("SERVER_NAME=shop.example", "SERVER_ADDR=192.0.2.1", "SERVER_PORT=000080"),
			CGIDRequest{Type: CGIDScript, ConnID: 7, ServerName: "shop.example"}, Found},
		{"a bad address", cgidReq("HTTP_HOST=shop.example", "SERVER_ADDR=192.0.2", "SERVER_PORT=80"),
			CGIDRequest{Type: CGIDScript, ConnID: 7, Host: "shop.example"}, Found},
		{"an invalid HTTP_HOST", cgidReq("HTTP_HOST=shop example", "SERVER_NAME=shop.example", "SERVER_ADDR=192.0.2.1", "SERVER_PORT=80"),
			CGIDRequest{Type: CGIDScript, ConnID: 7, ServerName: "shop.example", Server: netip.MustParseAddrPort("192.0.2.1:80")}, Found},
		{"a name too long", cgidReq("HTTP_HOST="+strings.Repeat("a", maxHostValue+1), "SERVER_ADDR=192.0.2.1", "SERVER_PORT=80"),
			CGIDRequest{Type: CGIDScript, ConnID: 7, Server: netip.MustParseAddrPort("192.0.2.1:80")}, Found},
		{"a port too long to be one", cgidReq("HTTP_HOST=a.example:"+strings.Repeat("8", maxHostValue), "SERVER_ADDR=192.0.2.1", "SERVER_PORT=80"),
			CGIDRequest{Type: CGIDScript, ConnID: 7, Server: netip.MustParseAddrPort("192.0.2.1:80")}, Found},
		{"strings without =", cgidReq("HTTP_HOST", "SERVER_ADDR", "=", "", "SERVER_NAME=shop.example"),
			CGIDRequest{Type: CGIDScript, ConnID: 7, ServerName: "shop.example"}, Found},
		{"none of them", cgidReq("PATH=/usr/bin", "HTTP_HOST=192.0.2.1"), CGIDRequest{}, NoName},
		{"an empty environment", cgidReq(), CGIDRequest{}, NoName},
		{"a request for a pid", cgidHeader{typ: cgidGetPID, ppid: 4242, connID: 9}.bytes(), CGIDRequest{Type: CGIDGetPID, ConnID: 9}, Found},

		{"nothing", nil, CGIDRequest{}, NeedMore},
		{"part of the header", cgidReq(shop...)[:100], CGIDRequest{}, NeedMore},
		{"the header and strings", cgidReq(shop...)[:cgidHeaderLen+46], CGIDRequest{}, NeedMore},
		{"part of a length", cgidReq(shop...)[:cgidHeaderLen+46+5], CGIDRequest{}, NeedMore},
		{"part of HTTP_HOST", cgidReq(shop...)[:cgidHeaderLen+46+8+12], CGIDRequest{}, NeedMore},
		{"SERVER_PORT to come", cgidReq(shop...)[:len(cgidReq(shop[:4]...))-72], CGIDRequest{}, NeedMore},

		{"HTTP", []byte("GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n"), CGIDRequest{}, NoName},
		{"FastCGI", fcgiReq("HTTP_HOST=shop.example"), CGIDRequest{}, NoName},
		{"type 0 at once", []byte{0, 0, 0, 0}, CGIDRequest{}, NoName},
		{"type 4 at once", []byte{4, 0, 0, 0}, CGIDRequest{}, NoName},
		{"type 1 in the high byte", []byte{0, 0, 0, 1}, CGIDRequest{}, NoName},
		{"a header as Apache sends it", with(func(*cgidHeader) {}), CGIDRequest{Type: CGIDScript, ServerName: "shop.example"}, Found},
		{"no parent pid", with(func(h *cgidHeader) { h.ppid = 0 }), CGIDRequest{}, NoName},
		{"a negative env_count", with(func(h *cgidHeader) { h.envCount = -1 }), CGIDRequest{}, NoName},
		{"no filename", with(func(h *cgidHeader) { h.filename = "" }), CGIDRequest{}, NoName},
		{"no argv0", with(func(h *cgidHeader) { h.argv0 = "" }), CGIDRequest{}, NoName},
		{"no uri", with(func(h *cgidHeader) { h.uri = "" }), CGIDRequest{}, NoName},
		{"a filename over APR_PATH_MAX", with(func(h *cgidHeader) { h.filename = "/" + strings.Repeat("f", cgidPathMax) }), CGIDRequest{}, NoName},
		{"a filename of APR_PATH_MAX", with(func(h *cgidHeader) { h.filename = "/" + strings.Repeat("f", cgidPathMax-1) }),
			CGIDRequest{Type: CGIDScript, ServerName: "shop.example"}, Found},
		{"log level over trace8", with(func(h *cgidHeader) { h.logLevel = 16 }), CGIDRequest{}, NoName},
		{"a negative log level", with(func(h *cgidHeader) { h.logLevel = -1 }), CGIDRequest{}, NoName},
		{"a pid request with an environment", cgidHeader{typ: cgidGetPID, ppid: 1, envCount: 1}.bytes(), CGIDRequest{}, NoName},
		{"a pid request without a parent pid", cgidHeader{typ: cgidGetPID, connID: 9}.bytes(), CGIDRequest{}, NoName},
		{"a pid request with a uri", cgidHeader{typ: cgidGetPID, ppid: 1, uri: "/x"}.bytes(), CGIDRequest{}, NoName},
		{"args past the limit", func() []byte {
			b := cgidReq(shop...)
			binary.LittleEndian.PutUint64(b[64:], maxCGID)
			return b[:cgidHeaderLen]
		}(), CGIDRequest{}, NoName},
		{"more strings than fit", func() []byte {
			b := cgidReq(shop...)
			binary.LittleEndian.PutUint32(b[20:], maxCGID/8)
			return b[:cgidHeaderLen]
		}(), CGIDRequest{}, NoName},
		{"a string longer than the limit, at once", cat(okHeader().bytes(), huge), CGIDRequest{}, NoName},
		{"a string past the limit, at once", func() []byte {
			h := okHeader()
			h.args = strings.Repeat("a", maxCGID-cgidHeaderLen-100)
			return cat(h.bytes(), binary.LittleEndian.AppendUint64(nil, 100))
		}(), CGIDRequest{}, NoName},
		{"a string to the limit", func() []byte {
			h := okHeader()
			h.args = strings.Repeat("a", maxCGID-cgidHeaderLen-6-8-len("HTTP_HOST=a.example"))
			return cat(h.bytes(), cgidEnv("HTTP_HOST=a.example"))
		}(), CGIDRequest{Type: CGIDScript, Host: "a.example"}, Found},
	} {
		if tc.res != Found {
			tc.want = CGIDRequest{}
		}
		got, r := ParseCGID(tc.data)
		if got != tc.want || r != tc.res {
			t.Errorf("%s: ParseCGID = %+v, %v; want %+v, %v", tc.label, got, r, tc.want, tc.res)
		}
		checkParseCGID(t, tc.data)
	}
}

// checkParseCGID checks what holds for every input: checkDecision's rules
// (a decision is final, only Found comes with a request), names are names,
// addresses unmapped, and nothing past maxCGID bytes is looked at.
func checkParseCGID(t *testing.T, data []byte) {
	t.Helper()
	got, r := checkDecision(t, ParseCGID, data)
	if r == Found {
		for _, name := range []string{got.Host, got.ServerName} {
			if name != "" && !validSniffedName(name) {
				t.Fatalf("Found invalid name %q", name)
			}
		}
		if got.Type < CGIDScript || got.Type > CGIDGetPID {
			t.Fatalf("Found type %d", got.Type)
		}
		if got.Type == CGIDGetPID && (got.Host != "" || got.ServerName != "" || got.Server.IsValid()) {
			t.Fatalf("a pid request with names: %+v", got)
		}
		if got.Type != CGIDGetPID && got.Host == "" && got.ServerName == "" && !got.Server.IsValid() {
			t.Fatalf("Found nothing: %+v", got)
		}
		if a := got.Server.Addr(); got.Server.IsValid() && (a.Is4In6() || got.Server.Port() == 0) {
			t.Fatalf("Found server %v", got.Server)
		}
	}
	if len(data) > maxCGID {
		if got2, r2 := ParseCGID(data[:maxCGID]); r2 != r || got2 != got {
			t.Fatalf("looks past %d bytes: %+v, %v there, %+v, %v with them", maxCGID, got2, r2, got, r)
		}
	}
}

func TestParseCGIDAllocs(t *testing.T) {
	for _, file := range []string{"cgid-get.bin", "cgid-http10-nohost.bin", "cgid-getpid.bin"} {
		data := readCGID(t, file)
		// The two names and SERVER_ADDR's text for netip.ParseAddr.
		if n := testing.AllocsPerRun(100, func() { ParseCGID(data) }); n > 3 {
			t.Errorf("ParseCGID(%s) allocates %v times; want at most 3", file, n)
		}
	}
}

func BenchmarkParseCGID(b *testing.B) {
	for _, file := range []string{"cgid-get.bin", "cgid-http10-nohost.bin"} {
		data := readCGID(b, file)
		b.Run(strings.TrimSuffix(file, ".bin"), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, r := ParseCGID(data); r != Found {
					b.Fatal(r)
				}
			}
		})
	}
}

func FuzzParseCGID(f *testing.F) {
	for file := range cgidCaptures {
		f.Add(readCGID(f, file))
	}
	f.Add(cgidReq("HTTP_HOST=shop.example", "SERVER_ADDR=::ffff:192.0.2.1", "SERVER_PORT=80", "SERVER_NAME=x"))
	f.Add(cgidHeader{typ: cgidGetPID, ppid: 1, connID: 3}.bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		checkParseCGID(t, data)
	})
}
