package supervisor

import (
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vhqos/vhqos/vhost"
	"golang.org/x/sys/unix"
)

// Tests of pending.go: connections classified by the host name in their
// first bytes, on real connections to a server under the filter, and the
// bounds on the wait for those bytes (sniff_bytes, sniff_timeout).

func splitInto(b []byte, n int) [][]byte {
	var out [][]byte
	size := (len(b) + n - 1) / n
	for len(b) > 0 {
		k := min(size, len(b))
		out = append(out, b[:k])
		b = b[k:]
	}
	return out
}

func clientHello(t *testing.T, name string) []byte {
	b, err := os.ReadFile(filepath.Join("..", "vhost", "testdata", "clienthello", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The class of a connection comes from the host name in its first bytes,
// HTTP or TLS, whole or in pieces; the server reads exactly the bytes the
// client sent; unknown, missing and unreadable names fall back to the
// address's class. Each case runs on a server that accepts in one process
// and on one that polls a non-blocking listener.
func TestNameDecides(t *testing.T) {
	http := func(host string) []byte {
		return []byte("GET /index.html HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: test\r\nAccept: */*\r\n\r\n")
	}
	// The ClientHello captures ask for shop.example.com (see
	// vhost/testdata/clienthello/README); the table maps it to shop too.
	cases := []struct {
		name   string
		chunks [][]byte
		pause  time.Duration
		want   Decision
	}{
		{"http host", [][]byte{http("shop.example")}, 0, nameDecisions[0]},
		{"http host with port and case", [][]byte{http("WWW.Blog.Example:8080")}, 0, nameDecisions[1]},
		{"http absolute form beats host", [][]byte{[]byte("GET http://shop.example/x HTTP/1.1\r\nHost: a.blog.example\r\n\r\n")}, 0, nameDecisions[0]},
		{"http in pieces", splitInto(http("x.blog.example"), 5), 30 * time.Millisecond, nameDecisions[1]},
		{"http with a body", [][]byte{append(http("shop.example"), strings.Repeat("body", 5000)...)}, 0, nameDecisions[0]},
		{"unknown name", [][]byte{http("nobody.example")}, 0, defaultDecision},
		{"no host", [][]byte{[]byte("GET / HTTP/1.0\r\n\r\n")}, 0, defaultDecision},
		{"garbage", [][]byte{[]byte("\x00\x01\x02 not a request at all\r\n\r\n")}, 0, defaultDecision},
		{"http2 prior knowledge", [][]byte{[]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")}, 0, defaultDecision},
		{"tls sni", [][]byte{clientHello(t, "openssl-sni.bin")}, 0, nameDecisions[0]},
		{"tls sni in pieces", splitInto(clientHello(t, "curl-sni.bin"), 7), 30 * time.Millisecond, nameDecisions[0]},
		{"tls without sni", [][]byte{clientHello(t, "go-nosni.bin")}, 0, defaultDecision},
	}
	for _, server := range []string{"one process", "polling children"} {
		t.Run(server, func(t *testing.T) {
			// No case waits for the timeout (each client sends all it
			// will send, then shuts its side): a generous one keeps a
			// slow machine's late pieces from falling back.
			cl := newNameClassifier(t, 20*time.Second)
			p, _ := vhost.ParsePattern("shop.example.com")
			cl.m = vhost.NewMatcher(append(rulesOf(t, "shop.example", "*.blog.example"), vhost.Rule{VHost: 0, Pattern: p}))
			h := startServerWith(t, "127.0.0.1:0", true, cl)
			if server == "one process" {
				h.command("serve " + strconv.Itoa(len(cases)))
			} else {
				h.command("pollsumchildren 2")
				if l := h.line(); l != "ok" {
					t.Fatal(l)
				}
			}
			for _, tc := range cases {
				c, _ := h.dial()
				var sent []byte
				for _, ch := range tc.chunks {
					sent = append(sent, ch...)
				}
				send(t, c, tc.chunks, tc.pause)
				r := readSum(t, c, patience)
				if want := fmt.Sprintf("%x", sha256.Sum256(sent)); r.sum != want {
					t.Errorf("%s: the server received other bytes than the client sent (sha256 %s, want %s)", tc.name, r.sum, want)
				}
				if r.tos != tc.want.DSCP<<2 {
					t.Errorf("%s: socket TOS %#x, want DSCP %d (%s)", tc.name, r.tos, tc.want.DSCP, tc.want.Group)
				}
				if !h.placer.wasIn(r.pid, tc.want.Group) {
					t.Errorf("%s: serving process %d was never placed in %s (now in %q)", tc.name, r.pid, tc.want.Group, h.placer.groupOf(r.pid))
				}
			}
			if server == "one process" {
				if l := h.line(); l != "ok" {
					t.Fatal(l)
				}
			}
			st := h.sup.Stats()
			// Eight cases carry a name (one that no vhost claims); four
			// do not.
			if found, fell := st.NamesFound.Load(), st.NameFallbacks.Load(); found != 8 || fell != 4 {
				t.Errorf("names found: %d, fallbacks %d; want 8 and 4", found, fell)
			}
		})
	}
}

func rulesOf(t *testing.T, patterns ...string) []vhost.Rule {
	var rules []vhost.Rule
	for i, s := range patterns {
		p, err := vhost.ParsePattern(s)
		if err != nil {
			t.Fatal(err)
		}
		rules = append(rules, vhost.Rule{VHost: i, Pattern: p})
	}
	return rules
}

// A client that connects and sends nothing holds up nobody but itself: a
// server with a single serving process serves another client while the
// silent one still waits, and the silent one, after the bounded wait, by
// the fallback class.
func TestSilentClientDoesNotBlockOthers(t *testing.T) {
	for _, server := range []string{"one process", "polling child"} {
		t.Run(server, func(t *testing.T) {
			// The talking client must be served within this bound for
			// the test to tell "served beside" from "served after": long
			// enough for a busy machine, short enough to wait out.
			const timeout = 3 * time.Second
			h := startServerWith(t, "127.0.0.1:0", true, newNameClassifier(t, timeout))
			if server == "one process" {
				h.command("serve 2")
			} else {
				h.command("pollsumchildren 1")
				if l := h.line(); l != "ok" {
					t.Fatal(l)
				}
			}
			// Taken before connecting: the supervisor may accept, and
			// start its clock, before dial returns.
			silentAt := time.Now()
			silent, _ := h.dial()
			waitFor(t, "the silent client first in line, waited for", func() bool { return h.sup.pendingCount.Load() == 1 })
			talker, _ := h.dial()
			start := time.Now()
			send(t, talker, [][]byte{[]byte("GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n")}, 0)
			r := readSum(t, talker, patience)
			t.Logf("the talking client was served after %v", time.Since(start).Round(time.Millisecond))
			if n := h.sup.Stats().NameTimeouts.Load(); n != 0 {
				t.Errorf("the talking client was served only after the silent one's wait ran out (%d timeouts): it waited behind it", n)
			}
			if !h.placer.wasIn(r.pid, "shop") || r.tos != 34<<2 {
				t.Errorf("talking client: served by %d in %q with TOS %#x, want shop/AF41", r.pid, h.placer.groupOf(r.pid), r.tos)
			}
			// The silent client is handed over once the wait is up; it
			// then sends its request, read by the server in full, in the
			// fallback class.
			// (Waited for rather than slept: under a loaded CI the event
			// loop's timer may fire late, but it must fire.)
			waitFor(t, fmt.Sprintf("the end of the silent client's wait for a name (bound %v)", timeout), func() bool {
				return h.sup.Stats().NameTimeouts.Load() > 0
			})
			if waited := time.Since(silentAt); waited < timeout {
				t.Errorf("the silent client was given up on after %v, before the %v bound", waited, timeout)
			}
			if n := h.sup.Stats().NameTimeouts.Load(); n != 1 {
				t.Errorf("name timeouts: %d, want 1", n)
			}
			late := []byte("GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n")
			send(t, silent, [][]byte{late}, 0)
			r = readSum(t, silent, patience)
			if want := fmt.Sprintf("%x", sha256.Sum256(late)); r.sum != want {
				t.Errorf("silent client: the server got other bytes (sha256 %s, want %s)", r.sum, want)
			}
			if r.tos != defaultDecision.DSCP<<2 || !h.placer.wasIn(r.pid, "default") {
				t.Errorf("silent client: TOS %#x, placed in %q; want the fallback, default/CS1", r.tos, h.placer.groupOf(r.pid))
			}
			if server == "one process" {
				if l := h.line(); l != "ok" {
					t.Fatal(l)
				}
			}
		})
	}
}

// limitClassifier is nameClassifier with the sniff limits of a table.
type limitClassifier struct {
	*nameClassifier
	bytes int
}

func (c limitClassifier) SniffLimits() (time.Duration, int) { return c.timeout, c.bytes }

// headOf is an HTTP request head of exactly n bytes asking for host.
func headOf(t *testing.T, n int, host string) []byte {
	head := "GET / HTTP/1.1\r\nHost: " + host + "\r\nX-Pad: "
	if n < len(head)+4 {
		t.Fatalf("no head of %d bytes", n)
	}
	return []byte(head + strings.Repeat("p", n-len(head)-4) + "\r\n\r\n")
}

// sendAll writes b and closes the sending side without blocking the test:
// a head larger than the socket buffers is only taken in as the server
// reads. The result arrives on the channel.
func sendAll(c net.Conn, b []byte) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := c.Write(b)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		done <- err
	}()
	return done
}

// sniff_bytes (README: "a request head or ClientHello not complete by then
// falls back") on real connections, at its smallest and largest values: a
// head of exactly sniff_bytes gets its vhost, one byte more the address's
// class, and the server reads every byte either way. The wait for bytes
// is a minute, so what decides is the byte count, never the clock.
func TestSniffBytesBounds(t *testing.T) {
	for _, limit := range []int{512, 65536} {
		t.Run(strconv.Itoa(limit), func(t *testing.T) {
			h := startServerWith(t, "127.0.0.1:0", true, limitClassifier{newNameClassifier(t, time.Minute), limit})
			h.command("serve 2")
			for _, tc := range []struct {
				size  int
				want  Decision
				found bool
			}{{limit, nameDecisions[0], true}, {limit + 1, defaultDecision, false}} {
				st := h.sup.Stats()
				found0, fell0 := st.NamesFound.Load(), st.NameFallbacks.Load()
				c, _ := h.dial()
				head := headOf(t, tc.size, "shop.example")
				sent := sendAll(c, head)
				r := readSum(t, c, 30*time.Second)
				if err := <-sent; err != nil {
					t.Fatalf("sending %d bytes: %v", tc.size, err)
				}
				if want := fmt.Sprintf("%x", sha256.Sum256(head)); r.sum != want {
					t.Errorf("head of %d bytes: the server received other bytes than the client sent", tc.size)
				}
				if r.tos != tc.want.DSCP<<2 || !h.placer.wasIn(r.pid, tc.want.Group) {
					t.Errorf("head of %d bytes with sniff_bytes %d: TOS %#x, process in %q; want %s (DSCP %d)", tc.size, limit, r.tos, h.placer.groupOf(r.pid), tc.want.Group, tc.want.DSCP)
				}
				found, fell := st.NamesFound.Load()-found0, st.NameFallbacks.Load()-fell0
				if tc.found && (found != 1 || fell != 0) || !tc.found && (found != 0 || fell != 1) {
					t.Errorf("head of %d bytes: names found %d, fallbacks %d", tc.size, found, fell)
				}
			}
			if n := h.sup.Stats().NameTimeouts.Load(); n != 0 {
				t.Errorf("%d waits for a name timed out; the byte bound should have decided", n)
			}
			if l := h.line(); l != "ok" {
				t.Fatal(l)
			}
		})
	}
}

// unacked is how many bytes c sent that its peer has not acknowledged:
// once 0, they are in the receiving socket's queue.
func unacked(t *testing.T, c net.Conn) int {
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ioctlErr error
	if err := raw.Control(func(fd uintptr) { n, ioctlErr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil || ioctlErr != nil {
		t.Fatalf("SIOCOUTQ: %v %v", err, ioctlErr)
	}
	return n
}

// sniff_timeout at its smallest, 10ms: a head already there when the
// server accepts is read at once, however short the wait; a client that
// sends nothing is given up on, not before 10ms, and served in the
// address's class.
func TestSniffTimeoutSmallest(t *testing.T) {
	const timeout = 10 * time.Millisecond
	h := startServerWith(t, "127.0.0.1:0", true, limitClassifier{newNameClassifier(t, timeout), 16384})

	c, _ := h.dial()
	head := headOf(t, 2000, "shop.example")
	send(t, c, [][]byte{head}, 0)
	// Wait until the server's socket holds the whole head, so that no
	// clock matters: the supervisor finds it on its first look.
	for deadline := time.Now().Add(10 * time.Second); unacked(t, c) > 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the server's socket never took the request")
		}
	}
	h.command("serve 1")
	r := readSum(t, c, 10*time.Second)
	if l := h.line(); l != "ok" {
		t.Fatal(l)
	}
	if r.tos != nameDecisions[0].DSCP<<2 || !h.placer.wasIn(r.pid, "shop") {
		t.Errorf("waiting head with sniff_timeout 10ms: TOS %#x, process in %q; want shop", r.tos, h.placer.groupOf(r.pid))
	}

	silent, _ := h.dial()
	silentAt := time.Now()
	h.command("serve 1")
	for deadline := time.Now().Add(10 * time.Second); h.sup.Stats().NameTimeouts.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the wait for a silent client's name never ended")
		}
	}
	if waited := time.Since(silentAt); waited < timeout {
		t.Errorf("a silent client was given up on after %v, before sniff_timeout %v", waited, timeout)
	}
	late := headOf(t, 100, "shop.example")
	send(t, silent, [][]byte{late}, 0)
	r = readSum(t, silent, 10*time.Second)
	if want := fmt.Sprintf("%x", sha256.Sum256(late)); r.sum != want {
		t.Errorf("silent client: the server received other bytes than the client sent")
	}
	if r.tos != defaultDecision.DSCP<<2 || !h.placer.wasIn(r.pid, "default") {
		t.Errorf("silent client: TOS %#x, process in %q; want the fallback, default", r.tos, h.placer.groupOf(r.pid))
	}
	if l := h.line(); l != "ok" {
		t.Fatal(l)
	}
}

// proxyClassifier is nameClassifier behind a proxy: connections to the
// test server's listener are trusted to start with a PROXY header, and an
// address rule gives 192.0.2.10:80 to "shop"; every other address is the
// default's.
type proxyClassifier struct {
	*nameClassifier
	trusted bool
}

var proxiedShop = netip.MustParseAddrPort("192.0.2.10:80")

func (c proxyClassifier) ClassifyAddr(local netip.AddrPort) Decision {
	if local == proxiedShop {
		return nameDecisions[0]
	}
	return defaultDecision
}

func (c proxyClassifier) ClassifyListener(netip.AddrPort) (Decision, bool) { return Decision{}, false }

func (c proxyClassifier) ClassifyName(host string, local netip.AddrPort) Decision {
	if i := c.m.MatchName(host, local); i >= 0 {
		return nameDecisions[i]
	}
	return c.ClassifyAddr(local)
}

func (c proxyClassifier) ProxyTrusted(netip.AddrPort) bool { return c.trusted }

// PROXY protocol headers (HAProxy's send-proxy and send-proxy-v2, as
// captured in vhost/testdata/fuzz/FuzzParseProxy) on real connections:
// where the listener is trusted the header's destination decides the
// address rules; elsewhere it is only skipped to find the name; the server
// reads every byte, the header included.
func TestProxyHeaders(t *testing.T) {
	v2 := func(cmd byte, dst [4]byte, dport uint16) string {
		h := "\r\n\r\n\x00\r\nQUIT\n" + string([]byte{0x20 | cmd, 0x11, 0, 12}) + "\xc6\x33\x64\x01" + string(dst[:]) + "\x15\xb3" + string([]byte{byte(dport >> 8), byte(dport)})
		return h
	}
	get := "GET / HTTP/1.1\r\nHost: nosuch.example\r\n\r\n"
	for _, tc := range []struct {
		name    string
		trusted bool
		send    string
		want    Decision
	}{
		{"v1, trusted: its destination decides", true, "PROXY TCP4 198.51.100.1 192.0.2.10 5555 80\r\n" + get, nameDecisions[0]},
		{"v1 to another address, trusted", true, "PROXY TCP4 198.51.100.1 192.0.2.11 5555 80\r\n" + get, defaultDecision},
		{"v2, trusted", true, v2(1, [4]byte{192, 0, 2, 10}, 80) + get, nameDecisions[0]},
		{"v2 LOCAL (a health check), trusted: the local address", true, v2(0, [4]byte{}, 0)[:16] + get, defaultDecision},
		{"garbage after a v1 header, trusted", true, "PROXY TCP4 198.51.100.1 192.0.2.10 5555 80\r\n\x00\xff garbage", nameDecisions[0]},
		{"no header on a trusted listener: the local address", true, get, defaultDecision},
		{"v1, not trusted: the destination is not believed", false, "PROXY TCP4 198.51.100.1 192.0.2.10 5555 80\r\n" + get, defaultDecision},
		{"v1 before a name, not trusted: skipped to find it", false, "PROXY TCP4 198.51.100.1 192.0.2.11 5555 80\r\nGET / HTTP/1.1\r\nHost: shop.example\r\n\r\n", nameDecisions[0]},
		{"v2 before a name, trusted", true, v2(1, [4]byte{192, 0, 2, 11}, 80) + "GET / HTTP/1.1\r\nHost: www.blog.example\r\n\r\n", nameDecisions[1]},
		{"a v1 header in 1-byte segments, trusted", true, "PROXY TCP4 198.51.100.1 192.0.2.10 5555 80\r\n", nameDecisions[0]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startServerWith(t, "127.0.0.1:0", false, proxyClassifier{newNameClassifier(t, 5*time.Second), tc.trusted})
			h.command("serve 1")
			c, _ := h.dial()
			var chunks [][]byte
			if strings.Contains(tc.name, "1-byte") {
				for i := range len(tc.send) {
					chunks = append(chunks, []byte{tc.send[i]})
				}
			} else {
				chunks = [][]byte{[]byte(tc.send)}
			}
			go func() {
				// Errors show in the checksum the server sends back.
				for i, ch := range chunks {
					if i > 0 {
						time.Sleep(time.Millisecond)
					}
					c.Write(ch)
				}
				c.(*net.TCPConn).CloseWrite()
			}()
			r := readSum(t, c, patience)
			if want := fmt.Sprintf("%x", sha256.Sum256([]byte(tc.send))); r.sum != want {
				t.Errorf("the server read other bytes than the client sent")
			}
			if r.tos != tc.want.DSCP<<2 || !h.placer.wasIn(r.pid, tc.want.Group) {
				t.Errorf("TOS %#x, process in %q; want %s (DSCP %d)", r.tos, h.placer.groupOf(r.pid), tc.want.Group, tc.want.DSCP)
			}
			if l := h.line(); l != "ok" {
				t.Fatal(l)
			}
		})
	}
}
