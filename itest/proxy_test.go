package itest

// The PROXY protocol: HAProxy in front of servers under vhqos, with
// send-proxy (v1) and send-proxy-v2; and raw clients with headers,
// garbage and lenient starts against Apache under vhqos.

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// proxyQoS trusts the listeners given for TRUSTED (proxy_protocol) and has
// vhosts by name, one by a name on port 443 only, and two by an address no
// listener has, EDGE (any port, and port 8080): the address a proxy's
// clients connect to, which only a trusted header can tell. The servers
// listen on other ports, so a match on a port is the header's port too.
const proxyQoS = `
[settings]
proxy_protocol = [TRUSTED]

[defaults]
dscp = "CS2"

[[vhost]]
name = "shop"
match = ["shop.example"]
dscp = "EF"

[[vhost]]
name = "blog"
match = ["blog.example"]
dscp = "AF21"

[[vhost]]
name = "blogtls"
match = ["blog.example:443"]
dscp = "AF31"

[[vhost]]
name = "edge"
match = ["EDGE"]
dscp = "CS1"

[[vhost]]
name = "edge8080"
match = ["EDGE:8080"]
dscp = "AF11"
`

func proxyTable(edge string, trusted ...string) string {
	return strings.NewReplacer("TRUSTED", `"`+strings.Join(trusted, `", "`)+`"`, "EDGE", edge).Replace(proxyQoS)
}

// nginxProxied is an nginx site behind HAProxy: every listener expects
// the PROXY protocol, some with TLS. The answer says what nginx saw: the
// Host, the SNI, the connection's ends (HAProxy's and its own: no
// set_real_ip_from) and the header's addresses.
const nginxProxied = `
    server {
        listen 127.0.0.1:8081 proxy_protocol;
        listen 127.0.0.1:8082 proxy_protocol;
        listen 127.0.0.1:8083 proxy_protocol;
        listen 127.0.0.1:8443 ssl proxy_protocol;
        listen 127.0.0.1:8444 ssl proxy_protocol;
        ssl_certificate @CERT@;
        ssl_certificate_key @KEY@;
        location / {
            return 200 "host $host\nsni $ssl_server_name\nremote $remote_addr:$remote_port\nlocal $server_addr:$server_port\nproxy-src $proxy_protocol_addr:$proxy_protocol_port\nproxy-dst $proxy_protocol_server_addr:$proxy_protocol_server_port\n";
        }
    }
}
`

// nginxSaw parses nginxProxied's answer.
func nginxSaw(body string) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(body, "\n") {
		if k, v, ok := strings.Cut(line, " "); ok {
			out[k] = v
		}
	}
	return out
}

// proxiedGet sends one request for / with Host host to addr, over TLS
// with SNI sni when tls is set, and returns the answer's body once the
// connection has ended.
func proxiedGet(addr string, useTLS bool, sni, host string) (string, error) {
	d := &net.Dialer{Timeout: RequestTimeout}
	var c net.Conn
	var err error
	if useTLS {
		c, err = tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
	} else {
		c, err = d.Dial("tcp", addr)
	}
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(RequestTimeout))
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return "", err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("status %d: %q", resp.StatusCode, body)
	}
	io.Copy(io.Discard, r)
	return string(body), err
}

// HAProxy (natively) in front of nginx under vhqos, with send-proxy and
// send-proxy-v2, over HTTP and TLS passthrough: a connection is classified
// by the Host or the SNI behind the header; one without a known name by
// the header's destination, the address the client connected to, on the
// listeners the table trusts (proxy_protocol), and by the listener's own
// address elsewhere. Checked on the wire: nginx's packets to HAProxy carry
// the vhost's DSCP. nginx, told to expect the header, reads it intact (it
// answers, and names the header's addresses).
func TestProxyHAProxyNginx(t *testing.T) {
	capture, err := StartCapture()
	if err != nil {
		t.Fatal(err)
	}
	defer capture.Stop()
	// 8083 is behind HAProxy too, but not trusted.
	qos := proxyTable("127.0.0.7", "127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8443", "127.0.0.1:8444")
	listen := []string{"127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083", "127.0.0.1:8443", "127.0.0.1:8444"}
	n := runNginxConf(t, wrapped(t, qos), listen, func(dir string) string {
		cert, key, err := MakeCertificate(dir, "shop.example", "blog.example")
		if err != nil {
			t.Fatal(err)
		}
		return NginxHTTP(dir) + strings.NewReplacer("@CERT@", cert, "@KEY@", key).Replace(nginxProxied)
	})
	checkCgroupsGone(t, n)
	RunHAProxy(t, []ProxyRoute{
		{"127.0.0.5:80", "127.0.0.1:8081", 1},
		{"127.0.0.6:80", "127.0.0.1:8082", 2},
		{"127.0.0.5:443", "127.0.0.1:8443", 1},
		{"127.0.0.6:443", "127.0.0.1:8444", 2},
		{"127.0.0.7:80", "127.0.0.1:8081", 1},
		{"127.0.0.7:8080", "127.0.0.1:8082", 2},
		{"127.0.0.7:443", "127.0.0.1:8444", 2},
		{"127.0.0.7:81", "127.0.0.1:8083", 1},
	})
	for _, tc := range []struct {
		why      string
		front    string
		tls      bool
		name     string // Host, and SNI over TLS
		listener string // where HAProxy connects: nginx's local address
		dscp     int
	}{
		{"v1, Host", "127.0.0.5:80", false, "shop.example", "127.0.0.1:8081", 46},
		{"v2, Host", "127.0.0.6:80", false, "blog.example", "127.0.0.1:8082", 18},
		{"v1, SNI, a name on the header's port", "127.0.0.5:443", true, "blog.example", "127.0.0.1:8443", 26},
		{"v2, SNI", "127.0.0.6:443", true, "shop.example", "127.0.0.1:8444", 46},
		{"v2, SNI, a name on the header's port", "127.0.0.6:443", true, "blog.example", "127.0.0.1:8444", 26},
		{"v1, no known name, the header's destination", "127.0.0.7:80", false, "other.example", "127.0.0.1:8081", 8},
		{"v2, no known name, the header's destination and port", "127.0.0.7:8080", false, "other.example", "127.0.0.1:8082", 10},
		{"v2, TLS, no known name, the header's destination", "127.0.0.7:443", true, "other.example", "127.0.0.1:8444", 8},
		{"v1, a name beats the header's destination", "127.0.0.7:80", false, "shop.example", "127.0.0.1:8081", 46},
		{"v1, no known name, a destination no vhost has", "127.0.0.5:80", false, "other.example", "127.0.0.1:8081", 16},
		{"v1, untrusted listener: the destination ignored", "127.0.0.7:81", false, "other.example", "127.0.0.1:8083", 16},
	} {
		t.Run(tc.why, func(t *testing.T) {
			body, err := proxiedGet(tc.front, tc.tls, tc.name, tc.name)
			if err != nil {
				t.Fatalf("through %s: %v", tc.front, err)
			}
			saw := nginxSaw(body)
			wantSNI := ""
			if tc.tls {
				wantSNI = tc.name
			}
			if saw["host"] != tc.name || saw["sni"] != wantSNI || saw["local"] != tc.listener || saw["proxy-dst"] != tc.front {
				t.Errorf("nginx saw %q; want host %s, SNI %q, on %s, the header naming %s", body, tc.name, wantSNI, tc.listener, tc.front)
			}
			server, err1 := netip.ParseAddrPort(saw["local"])
			client, err2 := netip.ParseAddrPort(saw["remote"])
			if err1 != nil || err2 != nil {
				t.Fatalf("nginx's answer %q: %v %v", body, err1, err2)
			}
			if m, err := capture.Conn(server, client); err != nil || !m.All(tc.dscp) {
				t.Errorf("nginx's packets to HAProxy (%v -> %v): %v (%v), want DSCP %d", server, client, m, err, tc.dscp)
			}
		})
	}
}

// sumServer reads each connection to its end and answers who read it
// (its pid and /proc/self/cgroup, as ParseWhoami reads them) and what: the
// SHA-256 and the bytes in hex. One process per listening address, each
// accepting and serving in turn, as a prefork server does.
const sumServer = `import hashlib, os, signal, socket, sys

children = []
for addr in sys.argv[1:]:
    host, port = addr.rsplit(":", 1)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, int(port)))
    listener.listen(64)
    pid = os.fork()
    if pid == 0:
        while True:
            conn, _ = listener.accept()
            data = b""
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            with open("/proc/self/cgroup") as f:
                cgroups = f.read().splitlines()
            answer = "pid %d\n" % os.getpid() + "".join("cgroup %s\n" % c for c in cgroups)
            answer += "sha256 %s\nbytes %s\n" % (hashlib.sha256(data).hexdigest(), data.hex())
            conn.sendall(answer.encode())
            conn.close()
    listener.close()
    children.append(pid)

def stop(signum, frame):
    for pid in children:
        os.kill(pid, signal.SIGTERM)
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
for pid in children:
    os.waitpid(pid, 0)
`

// runSumServer runs sumServer (Debian's python3) under vhqos with the
// table qos, listening on addrs.
func runSumServer(t *testing.T, qos string, addrs ...string) *Daemon {
	t.Helper()
	dir, err := scratchDir()
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "sum.py")
	if err := os.WriteFile(script, []byte(sumServer), 0o644); err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	d := RunDaemon(t, DaemonConfig{Name: "sum server", Dir: dir, Prefix: wrapped(t, qos), Argv: append([]string{"/usr/bin/python3", script}, addrs...), Listen: addrs})
	checkCgroupsGone(t, d)
	return d
}

// sumAnswer is what sumServer answered.
type sumAnswer struct {
	Whoami
	sum, data []byte
}

// sumExchange sends payload to addr, half-closes, and reads the answer.
func sumExchange(addr string, payload []byte) (client netip.AddrPort, a sumAnswer, err error) {
	c, err := net.DialTimeout("tcp", addr, RequestTimeout)
	if err != nil {
		return client, a, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(RequestTimeout))
	client, _ = ends(c)
	if _, err := c.Write(payload); err != nil {
		return client, a, err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return client, a, err
	}
	answer, err := io.ReadAll(c)
	if err != nil {
		return client, a, err
	}
	if a.Whoami, err = ParseWhoami(string(answer)); err != nil {
		return client, a, err
	}
	for _, line := range strings.Split(string(answer), "\n") {
		if v, ok := strings.CutPrefix(line, "sha256 "); ok {
			a.sum, err = hex.DecodeString(v)
		}
		if v, ok := strings.CutPrefix(line, "bytes "); ok && err == nil {
			a.data, err = hex.DecodeString(v)
		}
	}
	if err == nil && a.sum == nil {
		err = fmt.Errorf("no sha256 in %q", answer)
	}
	return client, a, err
}

// clientHello is the ClientHello (its TLS records) Go's crypto/tls sends
// for the server name sni.
func clientHello(t *testing.T, sni string) []byte {
	t.Helper()
	cli, srv := net.Pipe()
	defer srv.Close()
	go func() {
		tls.Client(cli, &tls.Config{ServerName: sni, InsecureSkipVerify: true}).Handshake()
		cli.Close()
	}()
	srv.SetDeadline(time.Now().Add(RequestTimeout))
	var hello []byte
	// Records until the handshake message they carry is complete.
	for {
		var h [5]byte
		if _, err := io.ReadFull(srv, h[:]); err != nil {
			t.Fatalf("reading Go's ClientHello: %v", err)
		}
		rec := make([]byte, binary.BigEndian.Uint16(h[3:]))
		if _, err := io.ReadFull(srv, rec); err != nil {
			t.Fatalf("reading Go's ClientHello: %v", err)
		}
		hello = append(append(hello, h[:]...), rec...)
		msg := hello[5:] // one record is all Go sends for it
		if len(msg) >= 4 && len(msg) >= 4+int(msg[1])<<16|int(msg[2])<<8|int(msg[3]) {
			return hello
		}
	}
}

// randomBytes returns n random bytes.
func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// checkProxied checks data, what a server behind HAProxy read, against
// what the client sent: a PROXY header of version for the client's
// connection to front, exactly as HAProxy writes it, then payload byte for
// byte.
func checkProxied(t *testing.T, data []byte, version int, client, front netip.AddrPort, payload []byte) {
	t.Helper()
	var header []byte
	switch version {
	case 1:
		header = fmt.Appendf(nil, "PROXY TCP4 %s %s %d %d\r\n", client.Addr(), front.Addr(), client.Port(), front.Port())
	case 2:
		// Signature, PROXY command, TCP over IPv4, the length of what
		// follows (addresses and any TLVs), the addresses and ports.
		header = append([]byte("\r\n\r\n\x00\r\nQUIT\n"), 0x21, 0x11, 0, 0)
		src, dst := client.Addr().As4(), front.Addr().As4()
		header = append(append(header, src[:]...), dst[:]...)
		header = binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(header, client.Port()), front.Port())
		if len(data) >= 16 {
			// HAProxy adds TLVs only when told to (proxy-v2-options):
			// whatever the length says is the header.
			length := int(binary.BigEndian.Uint16(data[14:16]))
			binary.BigEndian.PutUint16(header[14:16], uint16(length))
			if length > 12 && len(data) >= 16+length {
				header = append(header, data[len(header):16+length]...)
			}
		}
	}
	if !bytes.HasPrefix(data, header) {
		t.Errorf("the server read %d bytes starting %q; want the PROXY header %q first", len(data), data[:min(len(data), len(header)+16)], header)
		return
	}
	if got := data[len(header):]; !bytes.Equal(got, payload) {
		i := 0
		for i < min(len(got), len(payload)) && got[i] == payload[i] {
			i++
		}
		t.Errorf("after the header the server read %d bytes, the client sent %d; the first difference at byte %d", len(got), len(payload), i)
	}
}

// HAProxy in front of a server under vhqos that reads each connection to
// its end and answers with what it read: the bytes it reads are exactly
// HAProxy's PROXY header (v1 and v2) and then exactly the client's bytes,
// for HTTP (a POST whose body goes on far past sniff_bytes), TLS (a
// ClientHello and more) and FastCGI (a request with a large stdin), all of
// them classified by their name (Host, SNI, HTTP_HOST); and bytes with no
// name by the header's destination. The serving process reports its own
// cgroup.
func TestProxyHAProxyBytesIntact(t *testing.T) {
	const v1, v2 = "127.0.0.1:9101", "127.0.0.1:9102"
	d := runSumServer(t, proxyTable("127.0.0.7", v1, v2), v1, v2)
	RunHAProxy(t, []ProxyRoute{
		{"127.0.0.5:91", v1, 1},
		{"127.0.0.6:91", v2, 2},
		{"127.0.0.7:91", v1, 1},
		{"127.0.0.7:92", v2, 2},
	})
	body := randomBytes(t, 100<<10)
	httpPayload := append(fmt.Appendf(nil, "POST /upload HTTP/1.1\r\nHost: shop.example\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", len(body)), body...)
	tlsPayload := append(clientHello(t, "blog.example"), randomBytes(t, 50<<10)...)
	fcgiPayload := fcgiRequest([][2]string{
		{"REQUEST_METHOD", "POST"}, {"SCRIPT_FILENAME", "/srv/upload.php"}, {"SERVER_NAME", "blog.example"},
		{"CONTENT_LENGTH", fmt.Sprint(70 << 10)}, {"HTTP_HOST", "shop.example"},
	}, randomBytes(t, 70<<10), 1000, 0)
	garbage := append([]byte("\x00\x01\x02 no protocol at all\r\n\r\n"), randomBytes(t, 1000)...)
	for _, tc := range []struct {
		what    string
		front   string
		version int
		payload []byte
		group   string
	}{
		{"HTTP, v1", "127.0.0.5:91", 1, httpPayload, "vhost-shop"},
		{"HTTP, v2", "127.0.0.6:91", 2, httpPayload, "vhost-shop"},
		{"TLS, v1", "127.0.0.5:91", 1, tlsPayload, "vhost-blog"},
		{"TLS, v2", "127.0.0.6:91", 2, tlsPayload, "vhost-blog"},
		{"FastCGI, v1", "127.0.0.5:91", 1, fcgiPayload, "vhost-shop"},
		{"FastCGI, v2", "127.0.0.6:91", 2, fcgiPayload, "vhost-shop"},
		{"no name, v1", "127.0.0.7:91", 1, garbage, "vhost-edge"},
		{"no name, v2", "127.0.0.7:92", 2, garbage, "vhost-edge"},
		{"no name, v1, a destination no vhost has", "127.0.0.5:91", 1, garbage, "default"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			client, a, err := sumExchange(tc.front, tc.payload)
			if err != nil {
				t.Fatalf("through %s: %v", tc.front, err)
			}
			if sum := sha256.Sum256(a.data); !bytes.Equal(sum[:], a.sum) {
				t.Fatalf("the server's SHA-256 %x is not that of the bytes it returned", a.sum)
			}
			checkProxied(t, a.data, tc.version, client, netip.MustParseAddrPort(tc.front), tc.payload)
			if want := fmt.Sprintf("/vhqos.%d/%s", d.Cmd.Process.Pid, tc.group); !strings.HasSuffix(a.Cgroup(), want) {
				t.Errorf("served by pid %d in cgroup %q, want …%s", a.PID, a.Cgroup(), want)
			}
		})
	}
}

// rawQoS trusts 127.0.0.3:8080 only; edge is the headers' destination.
var rawQoS = proxyTable("127.0.0.9", "127.0.0.3:8080")

// rawApacheExtra adds listeners that expect the PROXY protocol
// (mod_remoteip) for the same two names: 127.0.0.3:8080, which the table
// trusts, and 127.0.0.4:8080, which it does not.
const rawApacheExtra = `LoadModule remoteip_module /usr/lib/apache2/modules/mod_remoteip.so
Listen 127.0.0.3:8080
Listen 127.0.0.4:8080
<VirtualHost 127.0.0.3:8080 127.0.0.4:8080>
    ServerName shop.example
    RemoteIPProxyProtocol On
</VirtualHost>
<VirtualHost 127.0.0.3:8080 127.0.0.4:8080>
    ServerName blog.example
    RemoteIPProxyProtocol On
</VirtualHost>
`

// proxyV2 is a PROXY v2 header from 192.0.2.7:40000 to dst:80 with TLVs:
// ALPN, an authority naming shop.example (which nothing must believe:
// TLVs are not read), a NOOP and one of the range for custom use.
func proxyV2(dst string) []byte {
	var tlvs []byte
	for _, tlv := range []struct {
		typ   byte
		value string
	}{{0x01, "h2"}, {0x02, "shop.example"}, {0x04, "\x00\x00\x00\x00\x00"}, {0xe0, "vhqos"}} {
		tlvs = binary.BigEndian.AppendUint16(append(tlvs, tlv.typ), uint16(len(tlv.value)))
		tlvs = append(tlvs, tlv.value...)
	}
	h := append([]byte("\r\n\r\n\x00\r\nQUIT\n"), 0x21, 0x11)
	h = binary.BigEndian.AppendUint16(h, uint16(12+len(tlvs)))
	src, d := netip.MustParseAddr("192.0.2.7").As4(), netip.MustParseAddr(dst).As4()
	h = append(append(h, src[:]...), d[:]...)
	h = binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(h, 40000), 80)
	return append(h, tlvs...)
}

// Raw clients against Apache under vhqos, each classified as the README
// and REFERENCE.md say, and Apache's answer intact: a request after empty
// lines (RFC 9112 §2.2) by its Host; garbage after a valid PROXY v1 header
// by the header's destination on a trusted listener and by the listener's
// address elsewhere (Apache reads the header and answers 400 to the
// garbage; had the header been consumed it would close without a word);
// a PROXY v2 header with TLVs, then a request, by its Host, or without a
// known name by the destination where trusted. Apache's REMOTE_ADDR is the
// header's source: it read the header.
func TestRawApache(t *testing.T) {
	capture, err := StartCapture()
	if err != nil {
		t.Fatal(err)
	}
	defer capture.Stop()
	a := startUnderVhqos(t, rawQoS, ApacheConfig{
		VHosts: []VHost{{Name: "shop.example", Addr: "127.0.0.2:8080"}, {Name: "blog.example", Addr: "127.0.0.2:8080"}},
		Extra:  rawApacheExtra,
	})
	vhqosPid := a.Cmd.Process.Pid
	request := func(host string) string {
		return "GET /cgi-bin/whoami HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n"
	}
	const proxyV1 = "PROXY TCP4 192.0.2.7 127.0.0.9 40000 80\r\n"
	const garbage = "\x01\x02garbage\r\n\r\n"
	for _, tc := range []struct {
		what   string
		addr   string
		send   string
		status int
		group  string // of the serving process, when a CGI answers
		dscp   int
		remote string // Apache's REMOTE_ADDR
	}{
		{"CRLF before the request line", "127.0.0.2:8080", "\r\n" + request("shop.example"), 200, "vhost-shop", 46, "127.0.0.1"},
		{"two CRLFs before the request line", "127.0.0.2:8080", "\r\n\r\n" + request("blog.example"), 200, "vhost-blog", 18, "127.0.0.1"},
		{"v1 header then garbage, trusted", "127.0.0.3:8080", proxyV1 + garbage, 400, "", 8, ""},
		{"v1 header then garbage, untrusted", "127.0.0.4:8080", proxyV1 + garbage, 400, "", 16, ""},
		{"v1 header, CRLF, request, trusted", "127.0.0.3:8080", proxyV1 + "\r\n" + request("shop.example"), 200, "vhost-shop", 46, "192.0.2.7"},
		{"v2 header with TLVs, request, trusted", "127.0.0.3:8080", string(proxyV2("127.0.0.9")) + request("blog.example"), 200, "vhost-blog", 18, "192.0.2.7"},
		{"v2 header with TLVs, request, untrusted", "127.0.0.4:8080", string(proxyV2("127.0.0.9")) + request("blog.example"), 200, "vhost-blog", 18, "192.0.2.7"},
		{"v2 header with TLVs, unknown name, trusted", "127.0.0.3:8080", string(proxyV2("127.0.0.9")) + request("other.example"), 200, "vhost-edge", 8, "192.0.2.7"},
		{"v2 header with TLVs, unknown name, untrusted", "127.0.0.4:8080", string(proxyV2("127.0.0.9")) + request("other.example"), 200, "default", 16, "192.0.2.7"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			c, err := net.DialTimeout("tcp", tc.addr, RequestTimeout)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(RequestTimeout))
			client, server := ends(c)
			if _, err := io.WriteString(c, tc.send); err != nil {
				t.Fatal(err)
			}
			r := bufio.NewReader(c)
			resp, err := readResponse(r, c)
			if err != nil {
				t.Fatalf("Apache's answer to %q: %v", tc.send, err)
			}
			io.Copy(io.Discard, r)
			if resp.Status != tc.status {
				t.Fatalf("Apache answered %d to %q, want %d: %q", resp.Status, tc.send, tc.status, resp.Body)
			}
			if tc.group != "" {
				w, err := ParseWhoami(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				if want := fmt.Sprintf("/vhqos.%d/%s", vhqosPid, tc.group); !strings.HasSuffix(w.Cgroup(), want) {
					t.Errorf("served by pid %d in cgroup %q, want …%s", w.PID, w.Cgroup(), want)
				}
				if w.Remote.Addr().String() != tc.remote {
					t.Errorf("Apache's REMOTE_ADDR %v, want %s", w.Remote.Addr(), tc.remote)
				}
			}
			if m, err := capture.Conn(server, client); err != nil || !m.All(tc.dscp) {
				t.Errorf("Apache's packets to %v: %v (%v), want DSCP %d", client, m, err, tc.dscp)
			}
		})
	}
}
