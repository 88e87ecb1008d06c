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
)

// nameClassifier decides by host name as a QoS table with two name-based
// vhosts does: shop.example (AF41) and *.blog.example (AF11); everything
// else, by address, gets the defaults, marked CS1 so that a fallback is
// visible on the socket too.
type nameClassifier struct {
	m       *vhost.Matcher
	timeout time.Duration
}

var nameDecisions = []Decision{{Group: "shop", DSCP: 34}, {Group: "blog", DSCP: 10}}

var defaultDecision = Decision{Group: "default", DSCP: 8}

func newNameClassifier(t *testing.T, timeout time.Duration) *nameClassifier {
	var rules []vhost.Rule
	for i, s := range []string{"shop.example", "*.blog.example"} {
		p, err := vhost.ParsePattern(s)
		if err != nil {
			t.Fatal(err)
		}
		rules = append(rules, vhost.Rule{VHost: i, Pattern: p})
	}
	return &nameClassifier{m: vhost.NewMatcher(rules), timeout: timeout}
}

func (c *nameClassifier) ClassifyAddr(netip.AddrPort) Decision { return defaultDecision }

func (c *nameClassifier) ClassifyListener(bound netip.AddrPort) (Decision, bool) {
	if _, ok := c.m.ListenerDecides(bound); !ok {
		return Decision{}, false
	}
	return defaultDecision, true
}

func (c *nameClassifier) NamesApply(local netip.AddrPort) bool { return c.m.NamesApply(local) }

func (c *nameClassifier) ClassifyName(host string, local netip.AddrPort) Decision {
	if i := c.m.MatchName(host, local); i >= 0 {
		return nameDecisions[i]
	}
	return c.ClassifyAddr(local)
}

func (c *nameClassifier) SniffLimits() (time.Duration, int) { return c.timeout, 16384 }

// sumReply is what serveSum answers.
type sumReply struct {
	pid int
	sum string
	tos int
}

func readSum(t *testing.T, c net.Conn, within time.Duration) sumReply {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(within))
	buf := make([]byte, 256)
	var got []byte
	for !strings.Contains(string(got), "\n") {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("reading the server's answer (got %q): %v", got, err)
		}
	}
	f := strings.Fields(string(got))
	if len(f) != 3 {
		t.Fatalf("server answered %q", got)
	}
	var r sumReply
	r.pid, _ = strconv.Atoi(f[0])
	r.sum = f[1]
	r.tos, _ = strconv.Atoi(f[2])
	return r
}

// send writes chunks with pauses between them, so that each goes out as
// its own TCP segment, then closes the sending side.
func send(t *testing.T, c net.Conn, chunks [][]byte, pause time.Duration) {
	t.Helper()
	for i, ch := range chunks {
		if i > 0 {
			time.Sleep(pause)
		}
		if _, err := c.Write(ch); err != nil {
			t.Fatalf("sending: %v", err)
		}
	}
	c.(*net.TCPConn).CloseWrite()
}

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
