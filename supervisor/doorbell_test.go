package supervisor

import (
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A client's connection that comes from the address and port of a
// doorbell (possible: to another local address of a wildcard listener) is a
// client's, not the doorbell: both ends must match. A doorbell is known on
// every listener: whichever copy accepts it drops it.
func TestDoorbellNeedsBothEnds(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	f, _ := server.(*net.TCPConn).File()
	defer f.Close()
	c := &conn{fd: int(f.Fd()), peerLen: unix.SizeofSockaddrAny}
	from := client.LocalAddr().(*net.TCPAddr).AddrPort()
	c.peer = *rawSockaddr(t, from, unix.AF_INET)
	listenAddr := ln.Addr().(*net.TCPAddr).AddrPort()
	other := netip.MustParseAddrPort("127.0.0.9:" + strconv.Itoa(int(listenAddr.Port())))
	for _, tc := range []struct {
		name     string
		from, to netip.AddrPort
		retired  bool
		want     bool
	}{
		{"both ends", from, listenAddr, false, true},
		{"both ends, retired", from, listenAddr, true, true},
		{"another local address", from, other, false, false},
		{"another port", netip.AddrPortFrom(from.Addr(), from.Port()+1), listenAddr, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var bells bellTable
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			b := &doorbell{fd: fd, from: tc.from, to: tc.to, owner: &listener{}}
			bells.bells = append(bells.bells, b)
			bells.n.Store(1)
			if tc.retired {
				bells.retire(b)
			}
			got, current := bells.take(c)
			if (got != nil) != tc.want || tc.want && (got != b || current == tc.retired) {
				t.Fatalf("take = %p, current %v; want %p: %v, current %v", got, current, b, tc.want, !tc.retired)
			}
			_, fdErr := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
			if tc.want && (bells.size() != 0 || fdErr != unix.EBADF || !b.answered.Load()) {
				t.Errorf("a doorbell taken: %d left in the table, its socket open: %v, answered: %v", bells.size(), fdErr == nil, b.answered.Load())
			}
			if !tc.want && (bells.size() != 1 || fdErr != nil) {
				t.Errorf("not the doorbell, yet %d left in the table, its socket: %v", bells.size(), fdErr)
			}
			bells.closeAll()
		})
	}
}

// On a unix-domain listener (a php-fpm pool's socket) a doorbell binds to
// an abstract name of the kernel's choosing, and a connection accepted
// there is the doorbell when its peer has that name: a client's
// connection, unnamed or named otherwise, is not. toward sees a doorbell
// queued on the listener by its path.
func TestUnixDoorbell(t *testing.T) {
	for _, path := range []string{filepath.Join(t.TempDir(), "pool.sock"), "@vhqos-unix-doorbell-" + strconv.Itoa(os.Getpid())} {
		t.Run(path, func(t *testing.T) {
			lfd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(lfd)
			if err := unix.Bind(lfd, &unix.SockaddrUnix{Name: path}); err != nil {
				t.Fatal(err)
			}
			if err := unix.Listen(lfd, 8); err != nil {
				t.Fatal(err)
			}
			l := &listener{fd: lfd, path: path}
			other := &listener{path: path + ".other"}
			var bells bellTable
			defer bells.closeAll()
			// A client first, then the doorbell: both queued.
			client, err := net.Dial("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			b, err := bells.connect(fd, &unix.SockaddrUnix{Name: path}, netip.AddrPort{}, path, l)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(b.fromPath, "@") {
				t.Fatalf("the doorbell's own name is %q, want an abstract one", b.fromPath)
			}
			if !bells.toward(l) || bells.toward(other) {
				t.Errorf("toward: its listener %v, another %v; want true, false", bells.toward(l), bells.toward(other))
			}
			for i, want := range []*doorbell{nil, b} {
				c, errno := acceptFrom(lfd, false)
				if errno != 0 {
					t.Fatalf("accept %d: %v", i, errno)
				}
				got, current := bells.take(c)
				c.close()
				if got != want || want != nil && !current {
					t.Fatalf("accept %d: take = %p (current %v), want %p", i, got, current, want)
				}
			}
			if bells.size() != 0 || !b.answered.Load() {
				t.Errorf("after the doorbell was accepted: %d left, answered %v", bells.size(), b.answered.Load())
			}
		})
	}
}

// nginx's "listen ... reuseport": two sockets on one address, a process
// polling each, the kernel spreading connections over them. A client slow
// to send its request has its accept answered empty and its connection
// kept for the next accept on its socket, so vhqos rings that socket's
// doorbell, which the kernel queues on either socket. Whichever process's
// accept takes it, it is vhqos's own: handed to no server, counted
// nowhere. Every client is served once and counted once, in its vhost.
func TestDoorbellInReuseportGroup(t *testing.T) {
	h := startServerWith(t, "127.0.0.1:0", true, newNameClassifier(t, patience))
	h.command("reuseport 2")
	if l := h.line(); l != "ok" {
		t.Fatal(l)
	}
	const clients = 40
	request := []byte("GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n")
	wantSum := fmt.Sprintf("%x", sha256.Sum256(request))
	served := map[int]int{}
	start := time.Now()
	for range clients {
		c, _ := h.dial()
		// Longer than shortWait, the most an accept is held for a
		// connection whose first bytes are on their way: the process
		// goes back to poll() empty-handed, and the connection waits in
		// the stash for a doorbell to wake it. (On a busy machine some
		// requests arrive before the accept and ring no doorbell: fewer
		// doorbells are tested, nothing else changes.)
		time.Sleep(20 * time.Millisecond)
		send(t, c, [][]byte{request}, 0)
		r := readSum(t, c, patience)
		if r.sum != wantSum || r.tos != nameDecisions[0].DSCP<<2 {
			t.Errorf("served by %d: sha256 %s, TOS %#x; want %s and DSCP %d", r.pid, r.sum, r.tos, wantSum, nameDecisions[0].DSCP)
		}
		served[r.pid]++
		c.Close()
	}
	took := time.Since(start)
	// Once no connection to the server is open anywhere (a client's, one
	// the supervisor keeps, a doorbell queued or accepted), nothing more
	// can be counted.
	waitFor(t, "every connection to the test server closed", func() bool { return len(openTCPConnections(t, h.port)) == 0 })
	if got := h.sup.GroupConnections(); len(got) != 1 || got["shop"] != clients {
		t.Errorf("connections counted %v; want %d in shop, none elsewhere", got, clients)
	}
	// Counted just after the hand-over, which may wake the server first.
	deadline := time.Now().Add(patience)
	for h.sup.Stats().Accepted.Load() < clients && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := h.sup.Stats().Accepted.Load(); got != clients {
		t.Errorf("%d connections handed to the server, %d clients", got, clients)
	}
	if len(served) != 2 {
		t.Errorf("clients served by %v, want both sockets' processes", served)
	}
	t.Logf("%d clients in %v, served by %v", clients, took.Round(time.Millisecond), served)
}

// openTCPConnections lists the TCP sockets, other than listeners and
// TIME_WAIT, with 127.0.0.1:port at either end.
func openTCPConnections(t *testing.T, port int) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	end := fmt.Sprintf("0100007F:%04X", port)
	var open []string
	for _, line := range strings.Split(string(data), "\n")[1:] {
		// sl local_address rem_address st ...
		f := strings.Fields(line)
		if len(f) > 3 && f[3] != "0A" && f[3] != "06" && (f[1] == end || f[2] == end) {
			open = append(open, strings.Join(f[1:4], " "))
		}
	}
	return open
}

// A doorbell the kernel queued on another socket than its listener's is
// dropped by whichever listener accepts it. Its own listener, whose server
// it did not wake, is rung for again: at once when the other socket is of
// its reuseport group (the next doorbell may reach it), after
// doorbellTimeout when the other is bound more specifically (127.0.0.1
// beside a wildcard: it would take the next one too), or when it was rung
// again at once maxStrays times already.
func TestDoorbellTakenElsewhere(t *testing.T) {
	for _, tc := range []struct {
		name      string
		bound     string // the other socket's address; "" for the same
		strays    int    // doorbells taken elsewhere before
		called    bool   // its own listener is called back at once
		rungAgain bool   // ... and rung for again then
	}{
		{"reuseport sibling", "", 0, true, true},
		{"reuseport sibling, again", "", maxStrays - 1, true, true},
		{"reuseport sibling, too often", "", maxStrays, true, false},
		{"more specific address", "127.0.0.1", 0, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) { testDoorbellTakenElsewhere(t, tc.bound, tc.strays, tc.called, tc.rungAgain) })
	}
}

func testDoorbellTakenElsewhere(t *testing.T, otherAddr string, strays int, called, rungAgain bool) {
	s, err := New(Options{NotifyFd: -1, Classifier: portClassifier{}, Placer: &recordingPlacer{group: map[int]string{}, everIn: map[int]map[string]bool{}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.events.close()
	defer s.bells.closeAll()
	// The doorbell is rung to 127.0.0.1 and accepted here, whichever
	// listener plays the one that took it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, _ := ln.(*net.TCPListener).File()
	defer f.Close()
	own := &listener{fd: int(f.Fd()), bound: ln.Addr().(*net.TCPAddr).AddrPort(), family: unix.AF_INET}
	other := &listener{bound: own.bound, family: unix.AF_INET}
	if otherAddr != "" {
		own.bound = netip.AddrPortFrom(netip.IPv4Unspecified(), own.bound.Port())
		other.bound = netip.AddrPortFrom(netip.MustParseAddr(otherAddr), own.bound.Port())
	}
	own.stash = []*conn{{fd: -1}} // a connection kept for the next accept
	own.strays = strays
	accept := func() *conn {
		t.Helper()
		pfd := []unix.PollFd{{Fd: int32(own.fd), Events: unix.POLLIN}}
		if n, err := unix.Poll(pfd, int(patience/time.Millisecond)); n != 1 || err != nil {
			t.Fatalf("no doorbell queued: %v", err)
		}
		c, errno := acceptFrom(own.fd, false)
		if errno != 0 {
			t.Fatalf("accepting the doorbell: %v", errno)
		}
		return c
	}
	bell := func() *doorbell {
		own.mu.Lock()
		defer own.mu.Unlock()
		return own.bell
	}

	own.mu.Lock()
	s.ringIfNeeded(own)
	own.mu.Unlock()
	first := bell()
	if first == nil {
		t.Fatal("no doorbell rung for a kept connection")
	}
	c := accept()
	other.mu.Lock()
	taken := s.isDoorbell(other, c)
	other.mu.Unlock()
	if !taken || !first.answered.Load() || s.bells.size() != 0 {
		t.Fatalf("a doorbell accepted on another listener: recognised %v, answered %v, %d left", taken, first.answered.Load(), s.bells.size())
	}
	now := time.Now()
	due, _, _, _ := s.events.due(now)
	if slices.Contains(due, own) != called {
		t.Fatalf("its own listener called back at once: %v, want %v", !called, called)
	}
	if called {
		s.checkDeadlines(own, now)
		if again := bell() != first; again != rungAgain {
			t.Fatalf("rung for again at once: %v, want %v", again, rungAgain)
		}
	}
	if !rungAgain {
		// The doorbell's timer.
		s.checkDeadlines(own, first.rung.Add(doorbellTimeout))
	}
	second := bell()
	if second == nil || second == first {
		t.Fatalf("not rung again: bell %p, first %p", second, first)
	}
	// This one its own listener accepts, and drops.
	c = accept()
	own.mu.Lock()
	taken = s.isDoorbell(own, c)
	own.mu.Unlock()
	if left := bell(); !taken || left != nil || s.bells.size() != 0 {
		t.Errorf("a doorbell accepted on its own listener: recognised %v, still current %p, %d left", taken, left, s.bells.size())
	}
}

// sweep reads the count without the lock; a doorbell counted while it
// connects may have failed (and be gone) by the time sweep holds the lock.
// Seen as a panic that took the supervisor down in a soak under load.
func TestSweepAfterFailedConnect(t *testing.T) {
	var bells bellTable
	bells.n.Store(1) // as connect counts before it connects
	if owners := bells.sweep(); owners != nil {
		t.Errorf("sweep of an empty table returned %v", owners)
	}
}

// A server that polls its listener before accepting cannot see a
// connection vhqos kept for it after the process it was accepted for went
// away: the kernel's queue no longer holds it. vhqos then queues a
// connection of its own to make the listener readable, and drops it when it
// is accepted. Here the process vhqos accepted for is killed before it gets
// the connection; the other one must serve it. On a unix-domain listener
// (a php-fpm pool's socket) the doorbell is a unix connection, recognised
// by the abstract name the kernel gave it.
func TestStashedConnectionWakesPollingServer(t *testing.T) {
	for _, tc := range []struct{ name, addr string }{
		{"TCP", "127.0.0.1:0"},
		{"unix path", "unix:" + filepath.Join(t.TempDir(), "pool.sock")},
		{"unix abstract", "unix:@vhqos-doorbell-test-" + strconv.Itoa(os.Getpid())},
	} {
		t.Run(tc.name, func(t *testing.T) { testStashedConnectionWakesPollingServer(t, tc.addr) })
	}
}

func testStashedConnectionWakesPollingServer(t *testing.T, addr string) {
	h := startServer(t, addr, true)
	var once sync.Once
	killed := make(chan int, 1)
	h.sup.setTestHookBeforeDeliver(func(pid int) {
		once.Do(func() {
			// Gone for good, not just signalled, before the supervisor
			// tries to hand it the connection: its exit is what a pidfd
			// reports readable.
			pidfd, err := unix.PidfdOpen(pid, 0)
			unix.Kill(pid, unix.SIGKILL)
			if err == nil {
				unix.Poll([]unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}, int(patience.Milliseconds()))
				unix.Close(pidfd)
			}
			killed <- pid
		})
	})
	h.command("pollchildren 2")
	if l := h.line(); l != "ok" {
		t.Fatal(l)
	}
	waitFor(t, "both children waiting in poll()", func() bool {
		kids := childrenOf(t, h.pid)
		return len(kids) == 2 && sleepsIn(kids[0], unix.SYS_POLL, unix.SYS_PPOLL) && sleepsIn(kids[1], unix.SYS_POLL, unix.SYS_PPOLL)
	})
	c, _ := h.dial()
	pid := servedBy(t, c)
	var dead int
	select {
	case dead = <-killed:
	case <-time.After(patience):
		t.Fatal("the supervisor never accepted a connection for a child")
	}
	if pid == dead {
		t.Fatalf("served by the killed process %d", pid)
	}
	if n := h.sup.Stats().Requeued.Load(); n != 1 {
		t.Errorf("requeued %d connections, want 1", n)
	}
	// The wake-up connection is dropped, not served: the next client is
	// served normally.
	c2, _ := h.dial()
	servedBy(t, c2)
}
