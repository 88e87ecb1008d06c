package supervisor

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/vhqos/vhqos/vhost"
	"golang.org/x/sys/unix"
)

func TestCGIDSocket(t *testing.T) {
	for _, tc := range []struct {
		path string
		want bool
	}{
		{"/run/apache2/socks/cgisock.1234", true}, // Debian's, with Apache's pid
		{"/etc/apache2/logs/cgisock.7", true},     // Apache's default, relative to ServerRoot
		{"/run/cgisock", true},
		{"cgisock.99", true},
		{"/run/apache2/socks/cgisock.", false},
		{"/run/apache2/socks/cgisock.12a", false},
		{"/run/apache2/socks/cgisock.sock", false},
		{"/run/apache2/socks/mycgisock.12", false},
		{"/run/apache2/socks/cgisock2", false},
		{"/run/cgisock.1/php.sock", false},
		{"@cgisock.12", false},
		{"", false},
	} {
		if got := cgidSocket(tc.path); got != tc.want {
			t.Errorf("cgidSocket(%q) = %v, want %v", tc.path, got, tc.want)
		}
	}
}

// cgidCapture reads a request Debian's Apache sent mod_cgid's daemon.
func cgidCapture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "vhost", "testdata", "cgid", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// cgidRequest is a CGI_REQ (GETPID_REQ for typ 3, without env) as
// mod_cgid's send_req lays it out on x86-64 (vhost/cgid.go), from Apache
// connection id.
func cgidRequest(typ int, id uint64, env ...string) []byte {
	h := make([]byte, 152)
	le := binary.LittleEndian
	le.PutUint32(h[0:], uint32(typ))
	le.PutUint64(h[8:], id)
	le.PutUint32(h[16:], 4242) // ppid
	if typ == 3 {
		return h
	}
	le.PutUint32(h[20:], uint32(len(env)))
	const script = "/usr/lib/cgi-bin/x"
	for i, s := range []string{script, script, "/cgi-bin/x", ""} {
		le.PutUint64(h[40+8*i:], uint64(len(s)))
	}
	le.PutUint32(h[72:], 4)
	h = append(h, script+script+"/cgi-bin/x"...)
	for _, s := range env {
		h = le.AppendUint64(h, uint64(len(s)))
		h = append(h, s...)
	}
	return append(h, make([]byte, 72)...)
}

// cgidMessages cuts a request as mod_cgid sends it: the header with the
// strings in one message, each environment string in one, then the limits.
func cgidMessages(t *testing.T, req []byte) [][]byte {
	t.Helper()
	le := binary.LittleEndian
	if len(req) < 152 {
		return [][]byte{req}
	}
	pos := 152
	for i := range 4 {
		pos += int(le.Uint64(req[40+8*i:]))
	}
	if le.Uint32(req) == 3 || pos > len(req) {
		return [][]byte{req}
	}
	out := [][]byte{req[:pos]}
	for range int(le.Uint32(req[20:])) {
		if pos+8 > len(req) {
			break
		}
		end := pos + 8 + int(le.Uint64(req[pos:]))
		if end > len(req) {
			break
		}
		out = append(out, req[pos:end])
		pos = end
	}
	if pos < len(req) {
		out = append(out, req[pos:])
	}
	return out
}

func pattern(t *testing.T, s string) vhost.Pattern {
	t.Helper()
	p, err := vhost.ParsePattern(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// sendCGID sends req over c as an Apache child does: the first message
// with a file descriptor (the CGI's stderr pipe, SCM_RIGHTS), each after
// it with a write of its own; then closes the sending side.
func sendCGID(t *testing.T, c net.Conn, msgs [][]byte, withFd bool) {
	t.Helper()
	for i, m := range msgs {
		sendCGIDPart(t, c, m, i == 0 && withFd)
	}
	c.(*net.UnixConn).CloseWrite()
}

// A connection to mod_cgid's socket is classified by the CGI request it
// carries, as a connection to SERVER_ADDR:SERVER_PORT asking for
// HTTP_HOST (SERVER_NAME where no rule claims HTTP_HOST) would be; the pid
// request that follows a CGI request as the CGI request was; anything
// else by the socket's path. The server reads every byte as sent, past
// the message that passes a file descriptor. On a socket that is not
// mod_cgid's the path decides.
func TestCGIDListener(t *testing.T) {
	get := cgidCapture(t, "cgid-get.bin")       // shop.example.com, 127.0.0.1:8081, conn id 0
	getpid := cgidCapture(t, "cgid-getpid.bin") // conn id 0
	noHost := cgidCapture(t, "cgid-http10-nohost.bin")
	type sendCase struct {
		name   string
		req    []byte
		withFd bool
		want   Decision
	}
	addrVhost := Decision{Group: "addr", DSCP: 12}
	decisions := []Decision{nameDecisions[0], nameDecisions[1], addrVhost, poolDecision}
	cgidSends := []sendCase{
		{"Apache's request: HTTP_HOST", get, true, nameDecisions[0]},
		{"its pid request: the same", getpid, false, nameDecisions[0]},
		{"a pid request for no CGI request: the path", getpid, false, poolDecision},
		{"HTTP/1.0 without Host: SERVER_NAME", noHost, true, nameDecisions[0]},
		{"without a file descriptor", get, false, nameDecisions[0]},
		{"a name no rule claims: the address", cgidRequest(1, 5, "HTTP_HOST=nobody.example", "SERVER_NAME=nobody.example",
			"SERVER_ADDR=192.0.2.10", "SERVER_PORT=80"), true, addrVhost},
		{"an address the name does not listen on: the address", cgidRequest(1, 6, "HTTP_HOST=a.blog.example", "SERVER_NAME=a.blog.example",
			"SERVER_ADDR=192.0.2.10", "SERVER_PORT=80"), true, addrVhost},
		{"a name where it listens", cgidRequest(1, 7, "HTTP_HOST=a.blog.example", "SERVER_NAME=a.blog.example",
			"SERVER_ADDR=192.0.2.20", "SERVER_PORT=80"), true, nameDecisions[1]},
		{"HTTP_HOST no rule claims, SERVER_NAME one does", cgidRequest(1, 8, "HTTP_HOST=alias.example", "SERVER_NAME=shop.example.com",
			"SERVER_ADDR=127.0.0.1", "SERVER_PORT=8081"), true, nameDecisions[0]},
		{"no address: names on the path", cgidRequest(1, 9, "HTTP_HOST=shop.example.com"), true, nameDecisions[0]},
		{"nothing known: the path's class", cgidRequest(1, 10, "HTTP_HOST=nobody.example", "SERVER_ADDR=127.0.0.1", "SERVER_PORT=80"), true, defaultDecision},
		{"a request cut short: the path", get[:500], true, poolDecision},
		{"not a request: the path", []byte("GET / HTTP/1.1\r\nHost: shop.example.com\r\n\r\n"), false, poolDecision},
	}
	for _, tc := range []struct {
		name, sock string
		sends      []sendCase
		found      uint64
	}{
		{"mod_cgid's socket", "cgisock.4242", cgidSends, 9},
		{"another socket", "other.sock", []sendCase{
			{"Apache's request", get, true, poolDecision},
		}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), tc.sock)
			// shop.example.com's names apply everywhere, *.blog.example's
			// only on 192.0.2.20; 192.0.2.10 is an address vhost; the
			// socket's path has a vhost of its own.
			cl := &pathClassifier{m: vhost.NewMatcher([]vhost.Rule{
				{VHost: 0, Pattern: pattern(t, "shop.example.com")},
				{VHost: 1, Pattern: pattern(t, "*.blog.example"), Listen: []vhost.Pattern{pattern(t, "192.0.2.20")}},
				{VHost: 2, Pattern: pattern(t, "192.0.2.10")},
				{VHost: 3, Pattern: pattern(t, "unix:"+sock)},
			}), decisions: decisions}
			h := startServerWith(t, "unix:"+sock, false, cl)
			h.command("serve " + strconv.Itoa(len(tc.sends)))
			for _, s := range tc.sends {
				c, _ := h.dial()
				sendCGID(t, c, cgidMessages(t, s.req), s.withFd)
				r := readSum(t, c, patience)
				if want := fmt.Sprintf("%x", sha256.Sum256(s.req)); r.sum != want {
					t.Errorf("%s: the server received other bytes than the client sent", s.name)
				}
				if !h.placer.wasIn(r.pid, s.want.Group) || h.placer.groupOf(r.pid) != s.want.Group {
					t.Errorf("%s: serving process %d in %q, want %q", s.name, r.pid, h.placer.groupOf(r.pid), s.want.Group)
				}
			}
			if l := h.line(); l != "ok" {
				t.Fatal(l)
			}
			st := h.sup.Stats()
			if found := st.NamesFound.Load(); found != tc.found {
				t.Errorf("CGI requests found %d, want %d", found, tc.found)
			}
		})
	}
}

// Where no rule could ever look past a unix socket's path (no name rule
// applies there), the kernel accepts on it alone; on mod_cgid's socket the
// supervisor accepts, for each request names an address.
func TestCGIDListenerEmulated(t *testing.T) {
	for _, tc := range []struct {
		sock      string
		want      Decision
		continued bool
	}{
		{"cgisock.77", Decision{Group: "addr", DSCP: 12}, false},
		{"other.sock", defaultDecision, true},
	} {
		t.Run(tc.sock, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), tc.sock)
			cl := newPathClassifier(t, []Decision{{Group: "addr", DSCP: 12}}, nil, []string{"192.0.2.10"})
			h := startServerWith(t, "unix:"+sock, false, cl)
			h.command("serve 1")
			c, _ := h.dial()
			sendCGID(t, c, cgidMessages(t, cgidRequest(1, 1, "SERVER_ADDR=192.0.2.10", "SERVER_PORT=80")), true)
			r := readSum(t, c, patience)
			if g := h.placer.groupOf(r.pid); g != tc.want.Group {
				t.Errorf("serving process in %q, want %q", g, tc.want.Group)
			}
			if l := h.line(); l != "ok" {
				t.Fatal(l)
			}
			st := h.sup.Stats()
			within(func() bool { return st.Continued.Load()+st.Accepted.Load() > 0 }) // counted after the answer
			if continued := st.Continued.Load() > 0; continued != tc.continued {
				t.Errorf("accept left to the kernel: %v, want %v", continued, tc.continued)
			}
		})
	}
}

// The bytes of a request are looked at within sniff_timeout: one whose
// environment never comes is classified by the path when time is up, and
// the server then reads it as sent.
func TestCGIDListenerTimeout(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "cgisock.1")
	cl := &timeoutClassifier{newPathClassifier(t, []Decision{nameDecisions[0], poolDecision}, nil,
		[]string{"shop.example.com"}, []string{"unix:" + sock}), 200 * time.Millisecond}
	h := startServerWith(t, "unix:"+sock, false, cl)
	h.command("serve 1")
	c, _ := h.dial()
	msgs := cgidMessages(t, cgidCapture(t, "cgid-get.bin"))
	// The header and strings, and not the environment, the connection open.
	uc := c.(*net.UnixConn)
	if _, err := uc.Write(msgs[0]); err != nil {
		t.Fatal(err)
	}
	if !within(func() bool { return h.sup.Stats().NameTimeouts.Load() == 1 }) {
		t.Fatal("the request never timed out")
	}
	uc.CloseWrite()
	r := readSum(t, c, patience)
	if want := fmt.Sprintf("%x", sha256.Sum256(msgs[0])); r.sum != want {
		t.Errorf("the server received other bytes than the client sent")
	}
	if g := h.placer.groupOf(r.pid); g != poolDecision.Group {
		t.Errorf("serving process in %q, want %q", g, poolDecision.Group)
	}
}

// timeoutClassifier is a pathClassifier with a short sniff timeout.
type timeoutClassifier struct {
	*pathClassifier
	timeout time.Duration
}

func (c *timeoutClassifier) SniffLimits() (time.Duration, int) { return c.timeout, 16384 }

// The memory of CGI requests for their pid requests stays bounded when no
// pid request comes.
func TestCGIDStateBounded(t *testing.T) {
	st := newCGIDState()
	for id := range uint64(3 * maxCGIDRecent) {
		st.remember(id, cgidNames{host: "a.example"})
	}
	if n := len(st.recent); n > maxCGIDRecent {
		t.Errorf("%d requests remembered, want at most %d", n, maxCGIDRecent)
	}
	last := uint64(3*maxCGIDRecent - 1)
	if n, ok := st.take(last); !ok || n.host != "a.example" {
		t.Errorf("the latest request was forgotten")
	}
	if _, ok := st.take(last); ok {
		t.Errorf("a request was taken twice")
	}
}

// mod_cgid's requests reach the daemon in the order they came: a pid
// request, whole at once, does not overtake the CGI request before it
// while that one is still pending (the daemon would know no pid for it),
// and then is classified as that CGI request was.
func TestCGIDListenerInOrder(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "cgisock.2")
	cl := newPathClassifier(t, []Decision{nameDecisions[0], poolDecision}, nil, []string{"shop.example.com"}, []string{"unix:" + sock})
	h := startServerWith(t, "unix:"+sock, false, cl)
	h.command("serve 2")
	req, getpid := cgidCapture(t, "cgid-get.bin"), cgidCapture(t, "cgid-getpid.bin")
	msgs := cgidMessages(t, req)
	first, _ := h.dial()
	// The CGI request's first message, with its descriptor: the request
	// waits for its environment.
	sendCGIDPart(t, first, msgs[0], true)
	if !within(func() bool { return h.sup.pendingCount.Load() == 1 }) {
		t.Fatal("the CGI request never waited for its environment")
	}
	second, _ := h.dial()
	sendCGID(t, second, [][]byte{getpid}, false)
	// The server reads a connection to its end before it answers, and the
	// pid request has ended: if it were handed over first, its answer
	// would come now. (A slow machine can only hide that, not fake it.)
	second.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, _ := second.Read(make([]byte, 1)); n > 0 {
		t.Fatal("the pid request was handed to the server before the CGI request it follows")
	}
	second.SetReadDeadline(time.Time{})
	for _, m := range msgs[1:] {
		sendCGIDPart(t, first, m, false)
	}
	first.(*net.UnixConn).CloseWrite()
	for _, c := range []struct {
		name string
		conn net.Conn
		sent []byte
	}{{"the CGI request", first, req}, {"the pid request", second, getpid}} {
		r := readSum(t, c.conn, patience)
		if want := fmt.Sprintf("%x", sha256.Sum256(c.sent)); r.sum != want {
			t.Errorf("%s: the server received other bytes than the client sent", c.name)
		}
		if g := h.placer.groupOf(r.pid); g != nameDecisions[0].Group {
			t.Errorf("%s: serving process in %q, want %q", c.name, g, nameDecisions[0].Group)
		}
	}
}

// sendCGIDPart sends one message of a request, with a file descriptor if
// withFd, keeping the connection open.
func sendCGIDPart(t *testing.T, c net.Conn, m []byte, withFd bool) {
	t.Helper()
	var oob []byte
	if withFd {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		defer unix.Close(p[0])
		defer unix.Close(p[1])
		oob = unix.UnixRights(p[1])
	}
	if _, _, err := c.(*net.UnixConn).WriteMsgUnix(m, oob, nil); err != nil {
		t.Fatalf("sending: %v", err)
	}
}

// TestCGIDReclassifyKeepsNamesOff: a new table decides a CGI's connection
// again by the server address its request named, and never turns the
// search for later requests on: what follows the request is the CGI's
// stdin.
func TestCGIDReclassifyKeepsNamesOff(t *testing.T) {
	server := netip.MustParseAddrPort("127.0.0.1:8081")
	tbl := newTrackTable()
	c := &trackedConn{ino: 1, rules: server, cgid: true, decision: Decision{Group: "default", DSCP: -1}}
	plain := &trackedConn{ino: 2, rules: server, decision: Decision{Group: "default", DSCP: -1}}
	tbl.add(c)
	tbl.add(plain)
	tbl.reclassify(&labClassifier{shop: 8081, names: true})
	if tbl.namesApply(c) {
		t.Errorf("a new table turned name sniffing on for a CGI's connection")
	}
	if !tbl.namesApply(plain) {
		t.Errorf("a new table with names did not turn name sniffing on for a TCP connection (the test's classifier is broken)")
	}
	if g := tbl.decision(c).Group; g != "shop" {
		t.Errorf("the CGI's connection is in %q after the reload, want shop (its request's server address)", g)
	}
}
