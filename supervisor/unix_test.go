package supervisor

import (
	"crypto/sha256"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/vhqos/vhqos/vhost"
)

// Unix-domain listeners (a php-fpm pool's socket) on a real server under
// the filter: their connections have no local address, so they are
// decided by the listener's path, or by the host name in their first
// bytes where a name rule applies on that socket.

// pathClassifier answers as a QoS table whose rules (patterns[i] belong to
// vhost i, whose decision is decisions[i]) may name unix sockets; listen,
// when set, is every name vhost's listen list.
type pathClassifier struct {
	m         *vhost.Matcher
	decisions []Decision
}

func newPathClassifier(t *testing.T, decisions []Decision, listen []string, patterns ...[]string) *pathClassifier {
	t.Helper()
	parse := func(list []string) []vhost.Pattern {
		var out []vhost.Pattern
		for _, s := range list {
			p, err := vhost.ParsePattern(s)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, p)
		}
		return out
	}
	var rules []vhost.Rule
	for i, list := range patterns {
		for _, p := range parse(list) {
			r := vhost.Rule{VHost: i, Pattern: p}
			if p.IsName() {
				r.Listen = parse(listen)
			}
			rules = append(rules, r)
		}
	}
	return &pathClassifier{m: vhost.NewMatcher(rules), decisions: decisions}
}

func (c *pathClassifier) of(i int) Decision {
	if i < 0 {
		return defaultDecision
	}
	return c.decisions[i]
}

func (c *pathClassifier) ClassifyAddr(local netip.AddrPort) Decision {
	return c.of(c.m.MatchAddr(local))
}

func (c *pathClassifier) ClassifyListener(bound netip.AddrPort) (Decision, bool) {
	i, ok := c.m.ListenerDecides(bound)
	return c.of(i), ok
}

func (c *pathClassifier) NamesApply(local netip.AddrPort) bool { return c.m.NamesApply(local) }

func (c *pathClassifier) ClassifyName(host string, local netip.AddrPort) Decision {
	if i := c.m.MatchName(host, local); i >= 0 {
		return c.of(i)
	}
	return c.ClassifyAddr(local)
}

func (c *pathClassifier) SniffLimits() (time.Duration, int) { return patience, 16384 }

func (c *pathClassifier) ProxyTrusted(netip.AddrPort) bool { return false }

func (c *pathClassifier) ClassifyPath(path string) Decision { return c.of(c.m.MatchPath(path)) }

func (c *pathClassifier) ListenerDecidesPath(path string) (Decision, bool) {
	i, ok := c.m.ListenerDecidesPath(path)
	return c.of(i), ok
}

func (c *pathClassifier) NamesApplyPath(path string) bool { return c.m.NamesApplyPath(path) }

func (c *pathClassifier) ClassifyNameOnPath(host, path string) Decision {
	if i := c.m.MatchNameOnPath(host, path); i >= 0 {
		return c.of(i)
	}
	return c.ClassifyPath(path)
}

// NameMatches and NameMatchesOnPath make pathClassifier a NameMatcher, as
// the table is: a FastCGI SERVER_NAME stands in for an HTTP_HOST no rule
// claims.
func (c *pathClassifier) NameMatches(host string, local netip.AddrPort) bool {
	return c.m.MatchName(host, local) >= 0
}

func (c *pathClassifier) NameMatchesOnPath(host, path string) bool {
	return c.m.MatchNameOnPath(host, path) >= 0
}

var poolDecision = Decision{Group: "pool", DSCP: -1}

// fcgiRequest is a FastCGI request head as nginx sends one: an
// FCGI_BEGIN_REQUEST record, the params in one FCGI_PARAMS record (names
// and values under 128 bytes) in the order given, and the empty record
// that ends them.
func fcgiRequest(params ...[2]string) []byte {
	var body []byte
	for _, kv := range params {
		body = append(body, byte(len(kv[0])), byte(len(kv[1])))
		body = append(body, kv[0]...)
		body = append(body, kv[1]...)
	}
	out := []byte{1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0} // BEGIN_REQUEST, id 1, responder
	out = append(out, 1, 4, 0, 1, byte(len(body)>>8), byte(len(body)), 0, 0)
	out = append(out, body...)
	return append(out, 1, 4, 0, 1, 0, 0, 0, 0)
}

// A unix listener that a unix: rule names puts the process accepting on
// it in that vhost, by its filesystem path or its abstract name; one no
// rule names gets the defaults. Where no name applies, the listener decides
// alone and the kernel does the accept (Stats.Continued); emulated, the
// supervisor does.
func TestUnixListenerByPath(t *testing.T) {
	for _, path := range acceptPaths {
		t.Run(path.name, func(t *testing.T) {
			dir := t.TempDir()
			abstract := fmt.Sprintf("@vhqos-test-%d-%s", os.Getpid(), path.name)
			for _, tc := range []struct {
				name, listen, rule string
				want               Decision
			}{
				{"filesystem path", filepath.Join(dir, "shop.sock"), "unix:" + filepath.Join(dir, "shop.sock"), nameDecisions[0]},
				{"abstract name", abstract, "unix:" + abstract, nameDecisions[0]},
				{"no rule for the path", filepath.Join(dir, "other.sock"), "unix:" + filepath.Join(dir, "shop.sock"), defaultDecision},
			} {
				t.Run(tc.name, func(t *testing.T) {
					cl := newPathClassifier(t, []Decision{nameDecisions[0]}, nil, []string{tc.rule, "192.0.2.10"})
					h := startServerWith(t, "unix:"+tc.listen, path.emulate, cl)
					c, _ := h.dial()
					h.command("accept full")
					r := h.result()
					if r.Ret < 0 {
						t.Fatalf("accept failed: errno %d", r.Errno)
					}
					if got := servedBy(t, c); got != r.Pid {
						t.Errorf("the client was served by %d, the accept ran in %d", got, r.Pid)
					}
					if r.Family != 1 { // AF_UNIX: the peer address the caller got
						t.Errorf("peer address family %d, want AF_UNIX", r.Family)
					}
					if g := h.placer.groupOf(r.Pid); g != tc.want.Group {
						t.Errorf("server placed in %q, want %q", g, tc.want.Group)
					}
					// The supervisor counts an accept after answering it,
					// so the server may report first.
					st := h.sup.Stats()
					counted := func() bool { return st.Continued.Load()+st.Accepted.Load() > 0 }
					if !within(counted) {
						t.Errorf("the accept was never counted")
					}
					continued, accepted := st.Continued.Load(), st.Accepted.Load()
					if path.emulate && (continued != 0 || accepted != 1) || !path.emulate && (continued != 1 || accepted != 0) {
						t.Errorf("accepts left to the kernel %d, emulated %d; want the %s path", continued, accepted, path.name)
					}
				})
			}
		})
	}
}

// On a unix listener where host names apply (its path in their listen
// list), the name in the first bytes decides, FastCGI (nginx's
// fastcgi_pass: HTTP_HOST) or HTTP, and a connection without a known name
// gets the path's class; the server reads every byte the client sent.
// Where the names listen elsewhere, the path alone decides, on the fast
// path.
func TestUnixListenerNames(t *testing.T) {
	fcgi, err := os.ReadFile(filepath.Join("..", "vhost", "testdata", "fastcgi", "nginx-get.bin")) // shop.example.com
	if err != nil {
		t.Fatal(err)
	}
	http := func(host string) []byte {
		return []byte("GET / HTTP/1.1\r\nHost: " + host + "\r\n\r\n")
	}
	decisions := []Decision{nameDecisions[0], nameDecisions[1], poolDecision}
	type sendCase struct {
		name   string
		chunks [][]byte
		want   Decision
	}
	for _, tc := range []struct {
		name       string
		listenElse bool // the names' listen list names another socket
		sends      []sendCase
		found      uint64
	}{
		{"names listen on the socket", false, []sendCase{
			{"fastcgi HTTP_HOST", [][]byte{fcgi}, nameDecisions[0]},
			{"fastcgi in pieces", splitInto(fcgi, 9), nameDecisions[0]},
			{"http Host", [][]byte{http("a.blog.example")}, nameDecisions[1]},
			{"unknown name: the path", [][]byte{http("nobody.example")}, poolDecision},
			{"no name: the path", [][]byte{[]byte("\x00\x01 not a request\r\n\r\n")}, poolDecision},
			// nginx's SERVER_NAME (its server block) where the client's
			// Host is no site's.
			{"fastcgi unknown HTTP_HOST: SERVER_NAME", [][]byte{fcgiRequest([2]string{"SERVER_NAME", "shop.example.com"}, [2]string{"HTTP_HOST", "unknown.example"})}, nameDecisions[0]},
			{"fastcgi IP HTTP_HOST: SERVER_NAME", [][]byte{fcgiRequest([2]string{"SERVER_NAME", "x.blog.example"}, [2]string{"HTTP_HOST", "192.0.2.1"})}, nameDecisions[1]},
			{"fastcgi known HTTP_HOST beats SERVER_NAME", [][]byte{fcgiRequest([2]string{"SERVER_NAME", "shop.example.com"}, [2]string{"HTTP_HOST", "a.blog.example"})}, nameDecisions[1]},
			{"fastcgi neither known: the path", [][]byte{fcgiRequest([2]string{"SERVER_NAME", "x.example"}, [2]string{"HTTP_HOST", "y.example"})}, poolDecision},
		}, 8},
		{"names listen elsewhere", true, []sendCase{
			{"fastcgi HTTP_HOST", [][]byte{fcgi}, poolDecision},
			{"http Host", [][]byte{http("a.blog.example")}, poolDecision},
		}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "pool.sock")
			listen := "unix:" + sock
			if tc.listenElse {
				listen = "unix:" + sock + ".other"
			}
			cl := newPathClassifier(t, decisions, []string{listen}, []string{"shop.example.com"}, []string{"*.blog.example"}, []string{"unix:" + sock})
			h := startServerWith(t, "unix:"+sock, false, cl)
			h.command("serve " + strconv.Itoa(len(tc.sends)))
			for _, s := range tc.sends {
				c, _ := h.dial()
				var sent []byte
				for _, ch := range s.chunks {
					sent = append(sent, ch...)
				}
				send(t, c, s.chunks, 5*time.Millisecond)
				r := readSum(t, c, patience)
				if want := fmt.Sprintf("%x", sha256.Sum256(sent)); r.sum != want {
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
				t.Errorf("names found %d, want %d", found, tc.found)
			}
			// Names that may apply need the client's bytes: every accept
			// emulated. Otherwise the path decides on the fast path.
			wantContinued := uint64(0)
			if tc.listenElse {
				wantContinued = uint64(len(tc.sends))
			}
			within(func() bool { return st.Continued.Load() >= wantContinued }) // counted after the answer
			if got := st.Continued.Load(); got != wantContinued {
				t.Errorf("accepts left to the kernel: %d, want %d", got, wantContinued)
			}
		})
	}
}
