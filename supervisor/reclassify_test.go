package supervisor

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fixedClassifier is a table with no vhost names in which every address
// gets one class.
type fixedClassifier struct{ d Decision }

func (c fixedClassifier) ClassifyAddr(netip.AddrPort) Decision { return c.d }
func (c fixedClassifier) ClassifyListener(bound netip.AddrPort) (Decision, bool) {
	return c.d, !bound.Addr().IsUnspecified()
}
func (fixedClassifier) NamesApply(netip.AddrPort) bool                 { return false }
func (c fixedClassifier) ClassifyName(string, netip.AddrPort) Decision { return c.d }
func (fixedClassifier) SniffLimits() (time.Duration, int)              { return time.Second, 16384 }
func (fixedClassifier) ProxyTrusted(netip.AddrPort) bool               { return false }
func (c fixedClassifier) ClassifyPath(string) Decision                 { return c.d }
func (c fixedClassifier) ListenerDecidesPath(string) (Decision, bool)  { return c.d, true }
func (fixedClassifier) NamesApplyPath(string) bool                     { return false }
func (c fixedClassifier) ClassifyNameOnPath(string, string) Decision   { return c.d }

// renamedClassifier is nameClassifier's table after an edit: the same
// names, other classes for them and for the fallback.
type renamedClassifier struct {
	*nameClassifier
	names    []Decision
	fallback Decision
}

func (c renamedClassifier) ClassifyAddr(netip.AddrPort) Decision { return c.fallback }

func (c renamedClassifier) ClassifyListener(bound netip.AddrPort) (Decision, bool) {
	if _, ok := c.m.ListenerDecides(bound); !ok {
		return Decision{}, false
	}
	return c.fallback, true
}

func (c renamedClassifier) ClassifyName(host string, local netip.AddrPort) Decision {
	if i := c.m.MatchName(host, local); i >= 0 {
		return c.names[i]
	}
	return c.fallback
}

// tosOf reads the TOS byte of the socket at fd in process pid.
func tosOf(t *testing.T, pid, fd int) int {
	t.Helper()
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open(%d): %v", pid, err)
	}
	defer unix.Close(pidfd)
	copyFd, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		t.Fatalf("pidfd_getfd(%d, %d): %v", pid, fd, err)
	}
	defer unix.Close(copyFd)
	tos, err := unix.GetsockoptInt(copyFd, unix.IPPROTO_IP, unix.IP_TOS)
	if err != nil {
		t.Fatal(err)
	}
	return tos
}

// waitBlockedInAccept waits until thread tid of pid sleeps in accept.
func waitBlockedInAccept(t *testing.T, pid, tid int) {
	t.Helper()
	path := filepath.Join("/proc", strconv.Itoa(pid), "task", strconv.Itoa(tid), "syscall")
	if !within(func() bool { _, ok := blockedAcceptFd(path); return ok }) {
		b, _ := os.ReadFile(path)
		t.Fatalf("thread %d never blocked in accept (syscall: %q)", tid, b)
	}
}

// A prefork child blocked in the kernel's accept when the table changes
// serves its next connection in the new class, with the new mark: the
// listener and the process are updated at the reload, not at the next
// accept, which for that child comes only after the connection.
func TestReclassifyBlockedAccept(t *testing.T) {
	h := startServer(t, "127.0.0.1:0", false)
	h.command("tid")
	tid, _ := strconv.Atoi(h.line())
	// Two more processes share the listener, as prefork children do.
	h.command("children 2")
	if l := h.line(); l != "ok" {
		t.Fatal(l)
	}
	h.command("accept4 0 full")
	// The accept shows in /proc from the moment the filter stops it; the
	// supervisor has let it into the kernel when it counts it. A process
	// let in but not yet asleep in the kernel's accept (runnable, on a
	// busy machine) is not one the reload can find blocked.
	waitFor(t, "the three accepts left to the kernel", func() bool { return h.sup.Stats().Continued.Load() >= 3 })
	waitBlockedInAccept(t, h.pid, tid)
	waitFor(t, "both children asleep in accept", func() bool {
		kids := childrenOf(t, h.pid)
		return len(kids) == 2 && sleepsIn(kids[0], unix.SYS_ACCEPT, unix.SYS_ACCEPT4) && sleepsIn(kids[1], unix.SYS_ACCEPT, unix.SYS_ACCEPT4)
	})
	if g := h.placer.groupOf(h.pid); g != "shop" {
		t.Fatalf("before the change the accepting process is in %q, want shop", g)
	}

	blog := Decision{Group: "blog", DSCP: 10}
	h.sup.SetClassifier(fixedClassifier{blog})
	got := h.sup.Reclassify()
	if got.Listeners != 1 || got.Processes != 3 {
		t.Errorf("reclassified %+v, want the one listener and the three blocked processes", got)
	}
	h.placer.mu.Lock()
	for pid, g := range h.placer.group {
		if g != "blog" {
			t.Errorf("after the change blocked process %d is in %q, want blog", pid, g)
		}
	}
	h.placer.mu.Unlock()
	// The kernel hands each connection to the process that has waited
	// longest, and a child that served one waits again behind the others:
	// of three connections, one reaches the test server's own accept,
	// whichever order the three started waiting in.
	for i := 0; i < 3; i++ {
		c, _ := h.dial()
		servedBy(t, c)
	}
	r := h.result()
	if r.Ret < 0 {
		t.Fatalf("accept: errno %v", unix.Errno(r.Errno))
	}
	if r.TOS != blog.DSCP<<2 {
		t.Errorf("connection made after the change: TOS %#x, want DSCP %d", r.TOS, blog.DSCP)
	}
}

// Established connections take the mark their class has under the new
// table: one decided by its host name is decided again by that name (its
// address alone would give the fallback), and one whose new class has no
// mark gets the listener's own back.
func TestReclassifyEstablished(t *testing.T) {
	// Each client sends its request at once; the generous wait for it only
	// keeps a busy machine from turning a name into a fallback.
	cl := newNameClassifier(t, 20*time.Second)
	h := startServerWith(t, "127.0.0.1:0", true, cl)
	accept := func(request string) (fd int) {
		t.Helper()
		h.command("accept4 0 keep")
		c, _ := h.dial()
		send(t, c, [][]byte{[]byte(request)}, 0)
		r := h.result()
		if r.Ret < 0 {
			t.Fatalf("accept: errno %v", unix.Errno(r.Errno))
		}
		servedBy(t, c)
		return r.Ret
	}
	shop := accept("GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n")
	nameless := accept("GET / HTTP/1.0\r\n\r\n")
	if got := tosOf(t, h.pid, shop); got != nameDecisions[0].DSCP<<2 {
		t.Fatalf("shop before the change: TOS %#x, want DSCP %d", got, nameDecisions[0].DSCP)
	}
	if got := tosOf(t, h.pid, nameless); got != defaultDecision.DSCP<<2 {
		t.Fatalf("nameless before the change: TOS %#x, want DSCP %d", got, defaultDecision.DSCP)
	}
	// Status counts the connection by its name too, not by its address.
	if live := h.sup.LiveConnections(); live["shop"] != 1 || live["default"] != 1 {
		t.Errorf("live connections %v, want one in shop and one in default", live)
	}

	newShop := Decision{Group: "shop", DSCP: 26}
	h.sup.SetClassifier(renamedClassifier{nameClassifier: cl,
		names: []Decision{newShop, nameDecisions[1]}, fallback: Decision{Group: "default", DSCP: -1}})
	got := h.sup.Reclassify()
	if got.Connections != 2 {
		t.Errorf("re-marked %d connections, want 2", got.Connections)
	}
	if got := tosOf(t, h.pid, shop); got != newShop.DSCP<<2 {
		t.Errorf("shop after the change: TOS %#x, want DSCP %d (decided again by its name)", got, newShop.DSCP)
	}
	if got := tosOf(t, h.pid, nameless); got != 0 {
		t.Errorf("nameless after the change: TOS %#x, want the listener's own 0", got)
	}
}

// The supervisor's copy of an idle listener expires, but the socket keeps
// the mark vhqos gave it; when the table then drops the mark, the listener
// gets its own back, not the class's mark taken for its own.
func TestReclassifyExpiredListener(t *testing.T) {
	h := startServer(t, "127.0.0.1:0", false)
	h.command("accept4 0 full")
	// Connected only once the accept was left to the kernel, which marks
	// the listener first: a client racing the first accept could be
	// queued under the listener's old mark.
	waitFor(t, "the first accept left to the kernel", func() bool { return h.sup.Stats().Continued.Load() > 0 })
	c, _ := h.dial()
	if r := h.result(); r.TOS != 34<<2 {
		t.Fatalf("first connection: TOS %#x, want DSCP 34", r.TOS)
	}
	servedBy(t, c)
	waitFor(t, "the idle listener's copy expired", func() bool { _, listeners, _ := h.sup.Tables(); return listeners == 0 })

	h.sup.SetClassifier(fixedClassifier{Decision{Group: "default", DSCP: -1}})
	if got := h.sup.Reclassify(); got.Listeners != 1 {
		t.Errorf("re-marked %d listeners, want the one whose copy had expired", got.Listeners)
	}
	h.command("accept4 0 full")
	c, _ = h.dial()
	if r := h.result(); r.TOS != 0 {
		t.Errorf("connection after the mark was dropped: TOS %#x, want the listener's own 0", r.TOS)
	}
	servedBy(t, c)
}

// A connection the server opened itself (to a database, say) is not a
// virtual host's: a reload leaves its mark alone, while the server's
// accepted connections take their class's new one.
func TestReclassifyLeavesOwnConnections(t *testing.T) {
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	h := startServer(t, "127.0.0.1:0", true)
	h.command("accept4 0 keep")
	c, _ := h.dial()
	r := h.result()
	if r.Ret < 0 {
		t.Fatalf("accept: errno %v", unix.Errno(r.Errno))
	}
	servedBy(t, c)
	h.command("connect " + backend.Addr().String())
	own, err := strconv.Atoi(h.line())
	if err != nil {
		t.Fatalf("the server could not connect to the backend: %v", err)
	}

	blog := Decision{Group: "blog", DSCP: 10}
	h.sup.SetClassifier(fixedClassifier{blog})
	if got := h.sup.Reclassify(); got.Connections != 1 {
		t.Errorf("re-marked %d connections, want only the accepted one", got.Connections)
	}
	if got := tosOf(t, h.pid, r.Ret); got != blog.DSCP<<2 {
		t.Errorf("accepted connection: TOS %#x, want DSCP %d", got, blog.DSCP)
	}
	if got := tosOf(t, h.pid, own); got != 0 {
		t.Errorf("the server's own connection: TOS %#x, want it untouched (0)", got)
	}
}
