package itest

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vhqos/vhqos/status"
)

const nameQoS = `
[[vhost]]
name = "shop"
match = ["shop.example"]
dscp = "EF"

[[vhost]]
name = "blog"
match = ["blog.example", "*.blog.example"]
dscp = "AF21"

[[vhost]]
name = "static"
match = ["static.example"]
listen = ["127.0.0.2"]
dscp = "CS1"
`

// Apache prefork with three name-based vhosts on one address, over HTTP
// and HTTPS: the process serving each request sits in the cgroup of the
// vhost the client named (HTTP Host, TLS SNI), the server's packets carry
// that vhost's DSCP, and an unknown name or none at all gets the defaults.
// Clients are curl (--resolve) and openssl s_client, as an operator would
// test by hand.
func TestApacheNameVhosts(t *testing.T) {
	for _, tool := range []string{"curl", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (make deps installs it): %v", tool, err)
		}
	}
	capture, err := StartCapture()
	if err != nil {
		t.Fatal(err)
	}
	defer capture.Stop()
	cert, key, err := MakeCertificate(t.TempDir(), "shop.example", "blog.example", "*.blog.example", "static.example")
	if err != nil {
		t.Fatal(err)
	}
	const httpAddr, tlsAddr, otherAddr = "127.0.0.2:8080", "127.0.0.2:8443", "127.0.0.3:8080"
	cfg := ApacheConfig{
		VHosts: []VHost{
			{Name: "shop.example", Addr: httpAddr},
			{Name: "blog.example", Addr: httpAddr, Aliases: []string{"*.blog.example"}},
			{Name: "static.example", Addr: httpAddr},
			{Name: "static.example", Addr: otherAddr},
		},
		TLSAddr: tlsAddr, CertFile: cert, KeyFile: key,
	}
	a := startUnderVhqos(t, nameQoS, cfg)
	vhqosPid := a.Cmd.Process.Pid
	cases := []struct {
		host  string // "" sends no Host header (HTTP) and no SNI (TLS)
		group string
		dscp  int
	}{
		{"shop.example", "vhost-shop", 46},
		{"www.blog.example", "vhost-blog", 18},
		{"BLOG.example.", "vhost-blog", 18},
		{"static.example", "vhost-static", 8},
		{"unknown.example", "default", 0},
		{"", "default", 0},
	}
	clients := []struct {
		name string
		get  func(t *testing.T, addr, host string) Whoami
	}{
		{"http curl", func(t *testing.T, addr, host string) Whoami { return curlWhoami(t, "http", addr, host) }},
		{"https curl", func(t *testing.T, addr, host string) Whoami { return curlWhoami(t, "https", addr, host) }},
		{"https openssl s_client", opensslWhoami},
	}
	for _, cl := range clients {
		addr := httpAddr
		if strings.HasPrefix(cl.name, "https") {
			addr = tlsAddr
		}
		for _, tc := range cases {
			if tc.host == "" && cl.name == "https curl" {
				continue // curl always sends SNI for a name; openssl covers none
			}
			w := cl.get(t, addr, tc.host)
			if err := capture.Sync(); err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("/vhqos.%d/%s", vhqosPid, tc.group)
			if !strings.HasSuffix(w.Cgroup(), want) {
				t.Errorf("%s, host %q: served by pid %d in cgroup %q, want …%s", cl.name, tc.host, w.PID, w.Cgroup(), want)
			}
			server := addrPort(t, addr)
			dscp := capture.DSCP(server, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), w.Remote.Port()))
			if len(dscp) != 1 || dscp[tc.dscp] == 0 {
				t.Errorf("%s, host %q: server packets carried DSCP %v, want only %d", cl.name, tc.host, dscp, tc.dscp)
			}
		}
	}
	// static's names count only on the address it listens on; elsewhere
	// the name is no one's and the address decides.
	w := curlWhoami(t, "http", otherAddr, "static.example")
	if want := fmt.Sprintf("/vhqos.%d/default", vhqosPid); !strings.HasSuffix(w.Cgroup(), want) {
		t.Errorf("static.example on %s, outside its listen list: served in %q, want …%s", otherAddr, w.Cgroup(), want)
	}
	// Apache agrees about which vhost served: its log's %v is the
	// ServerName the request was routed to. It logs a request after it
	// has answered it: the last line may come a moment after the answer.
	var entries []LogEntry
	want := len(cases) * len(clients)
	deadline := time.Now().Add(patience)
	for {
		var err error
		if entries, err = a.Log(); err != nil {
			t.Fatal(err)
		}
		if len(entries) >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(entries) != want {
		t.Errorf("access log has %d entries, want %d", len(entries), want)
	}
}

// curlWhoami asks for the whoami CGI with curl: over HTTP with host as
// the Host header, over HTTPS resolving host to addr's IP (--resolve) so
// that the name travels in SNI and Host as in real life.
func curlWhoami(t *testing.T, scheme, addr, host string) Whoami {
	t.Helper()
	ap := addrPort(t, addr)
	args := []string{"-sS", "-k", "--max-time", "20", "-H", "Connection: close"}
	url := fmt.Sprintf("%s://%s/cgi-bin/whoami", scheme, addr)
	switch {
	case host == "":
		args = append(args, "-H", "Host:", "--http1.0")
	case scheme == "http":
		// The Host header exactly as given (trailing dot and all).
		args = append(args, "-H", "Host: "+host)
	default:
		name := strings.TrimSuffix(host, ".")
		args = append(args, "--resolve", fmt.Sprintf("%s:%d:%s", name, ap.Port(), ap.Addr()))
		url = fmt.Sprintf("%s://%s:%d/cgi-bin/whoami", scheme, name, ap.Port())
	}
	out, err := exec.Command("curl", append(args, url)...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %s: %v: %s", url, err, out)
	}
	w, err := ParseWhoami(string(out))
	if err != nil {
		t.Fatalf("curl %s: %v", url, err)
	}
	return w
}

// opensslWhoami sends the request through openssl s_client, with SNI host
// (or none) and the same Host header.
func opensslWhoami(t *testing.T, addr, host string) Whoami {
	t.Helper()
	args := []string{"s_client", "-connect", addr, "-quiet", "-ign_eof"}
	req := "GET /cgi-bin/whoami HTTP/1.0\r\n"
	if host != "" {
		args = append(args, "-servername", strings.TrimSuffix(host, "."))
		req += "Host: " + host + "\r\n"
	} else {
		args = append(args, "-noservername")
	}
	req += "\r\n"
	cmd := exec.Command("openssl", args...)
	cmd.Stdin = strings.NewReader(req)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl %v: %v: %s", args, err, out)
	}
	body := string(out)
	if i := strings.Index(body, "\r\n\r\n"); i >= 0 {
		body = body[i+4:]
	}
	w, err := ParseWhoami(body)
	if err != nil {
		t.Fatalf("openssl %v: %v", args, err)
	}
	return w
}

// With track = "full" the server's reads go through vhqos: a keep-alive
// connection whose second request names another vhost moves there, its
// serving process and its packets' mark with it. (With "accept" and "fork"
// the first request decides.)
func TestKeepAliveReclassifiedInFullMode(t *testing.T) {
	capture, err := StartCapture()
	if err != nil {
		t.Fatal(err)
	}
	defer capture.Stop()
	const addr = "127.0.0.2:8080"
	cfg := ApacheConfig{VHosts: []VHost{
		{Name: "shop.example", Addr: addr},
		{Name: "blog.example", Addr: addr, Aliases: []string{"*.blog.example"}},
	}}
	a := startUnderVhqos(t, "[settings]\ntrack = \"full\"\n"+nameQoS, cfg)
	vhqosPid := a.Cmd.Process.Pid
	k, err := DialKeepAlive(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	var client, server netip.AddrPort
	for i, step := range []struct{ host, group string }{
		{"shop.example", "vhost-shop"},
		{"www.blog.example", "vhost-blog"},
		{"shop.example", "vhost-shop"},
	} {
		r, err := k.Get("http://" + step.host + "/cgi-bin/whoami")
		if err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
		client, server = r.Client, r.Server
		w, err := ParseWhoami(r.Body)
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("/vhqos.%d/%s", vhqosPid, step.group)
		if !strings.HasSuffix(w.Cgroup(), want) {
			t.Errorf("request %d for %s on one keep-alive connection: served in %q, want …%s", i+1, step.host, w.Cgroup(), want)
		}
	}
	k.Close()
	if err := capture.Sync(); err != nil {
		t.Fatal(err)
	}
	if d := capture.DSCP(server, client); d[46] == 0 || d[18] == 0 {
		t.Errorf("marks on the keep-alive connection: %v, want both EF (46) and AF21 (18)", d)
	}
}

// A fork-after-accept server (socat fork) with name-based vhosts: a client
// that connects and sends nothing holds up nobody, the next client is
// served in its vhost's cgroup while the silent one still waits, and the
// silent one is handed over after sniff_timeout with the defaults.
func TestSilentClientForkServer(t *testing.T) {
	// The talking client must be served within sniff_timeout for the test
	// to tell "served beside the silent one" from "served after it": long
	// enough for a busy machine, short enough to wait out.
	const sniffTimeout = 3 * time.Second
	qos := fmt.Sprintf(`
[settings]
track = "fork"
sniff_timeout = "%v"

[[vhost]]
name = "shop"
match = ["shop.example"]
dscp = "EF"
`, sniffTimeout)
	dir := forkDir(t)
	vhqos, _, socket := runForkServerStatus(t, qos, []string{"socat", "-t", "30", "TCP-LISTEN:8080,fork,reuseaddr", "EXEC:/bin/sh " + filepath.Join(dir, "report.sh")})
	nameTimeouts := func() uint64 {
		t.Helper()
		out, code := vhqosStatus(t, socket, nil)
		var r status.Report
		if err := json.Unmarshal([]byte(out), &r); code != 0 || err != nil {
			t.Fatalf("vhqos status: exit %d, %v: %s", code, err, out)
		}
		return r.Supervisor.NameTimeouts
	}
	// Taken before connecting: vhqos may accept, and start its clock,
	// before Dial returns.
	silentAt := time.Now()
	silent, err := net.Dial("tcp", "127.0.0.2:8080")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	eventually(t, patience, "vhqos holding the silent client's connection", func() bool { return accepted(t, silent) })
	start := time.Now()
	pid, cgroup, _ := forkRequest(t, "127.0.0.2:8080", "GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n")
	t.Logf("the talking client was served after %v", time.Since(start).Round(time.Millisecond))
	if n := nameTimeouts(); n != 0 {
		t.Errorf("the talking client was served only after the silent one's wait ran out (%d timeouts): it waited behind it", n)
	}
	if want := fmt.Sprintf("/vhqos.%d/vhost-shop", vhqos.Process.Pid); !strings.HasSuffix(cgroup, want) {
		t.Errorf("talking client served by %d in %q, want …%s", pid, cgroup, want)
	}
	// After the bound the silent client is served, by the defaults. It
	// stays silent until vhqos has given up on it, or its bytes, not the
	// bound, would decide.
	eventually(t, patience, "vhqos giving up on the silent client", func() bool { return nameTimeouts() == 1 })
	if waited := time.Since(silentAt); waited < sniffTimeout {
		t.Errorf("the silent client was given up on after %v, before sniff_timeout %v", waited, sniffTimeout)
	}
	silent.SetDeadline(time.Now().Add(patience))
	if _, err := silent.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	reply, err := io.ReadAll(silent)
	if err != nil {
		t.Fatalf("silent client: %v", err)
	}
	want := fmt.Sprintf("/vhqos.%d/default", vhqos.Process.Pid)
	if !strings.Contains(string(reply), want) {
		t.Errorf("silent client's answer %q does not show the defaults' cgroup …%s", reply, want)
	}
}

// accepted reports whether the server's end of the client's connection c
// has left the listener's accept queue: /proc/net/tcp names a socket's
// inode only once some process accepted it (inode 0 while it waits to be).
// Only the IPv4 table is read.
func accepted(t *testing.T, c net.Conn) bool {
	t.Helper()
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	hexAddr := func(a netip.AddrPort) string {
		b := a.Addr().As4()
		// The address as the kernel stores it, printed as a host-order
		// (little-endian) word; the port in plain hex.
		return fmt.Sprintf("%02X%02X%02X%02X:%04X", b[3], b[2], b[1], b[0], a.Port())
	}
	local := hexAddr(c.RemoteAddr().(*net.TCPAddr).AddrPort()) // the server's end
	remote := hexAddr(c.LocalAddr().(*net.TCPAddr).AddrPort())
	for _, line := range strings.Split(string(data), "\n")[1:] {
		// sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
		f := strings.Fields(line)
		if len(f) >= 10 && f[1] == local && f[2] == remote {
			return f[9] != "0"
		}
	}
	return false
}
