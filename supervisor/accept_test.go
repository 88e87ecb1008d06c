package supervisor

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vhqos/vhqos/failopen"
)

// Tests of accept.go: the accept and accept4 calls of a real server under
// the filter, answered on both paths (acceptPaths) as the kernel would
// answer them.

func TestAcceptVariants(t *testing.T) {
	for _, path := range acceptPaths {
		t.Run(path.name, func(t *testing.T) { testAcceptVariants(t, path.emulate) })
	}
}

func testAcceptVariants(t *testing.T, emulate bool) {
	h := startServer(t, "127.0.0.1:0", emulate)
	const nb, ce = unix.SOCK_NONBLOCK, unix.SOCK_CLOEXEC
	tests := []struct {
		name                      string
		cmd                       string
		wantLen                   int
		wantNonblock, wantCloexec bool
		wantGuard                 string // untouched 0xAA bytes past the allowed length
	}{
		{name: "accept full buffer", cmd: "accept full", wantLen: 16, wantGuard: "aaaaaaaaaaaaaaaa"},
		{name: "accept4 no flags", cmd: "accept4 0 full", wantLen: 16},
		{name: "accept4 SOCK_NONBLOCK", cmd: fmt.Sprintf("accept4 %d full", nb), wantLen: 16, wantNonblock: true},
		{name: "accept4 SOCK_CLOEXEC", cmd: fmt.Sprintf("accept4 %d full", ce), wantLen: 16, wantCloexec: true},
		{name: "accept4 both flags", cmd: fmt.Sprintf("accept4 %d full", nb|ce), wantLen: 16, wantNonblock: true, wantCloexec: true},
		{name: "NULL address", cmd: "accept null", wantLen: 128},
		{name: "short buffer is truncated, length is the full one", cmd: "accept4 0 short", wantLen: 16, wantGuard: "aaaaaaaaaaaaaaaa"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h.command(tc.cmd)
			c, clientPort := h.dial()
			r := h.result()
			if r.Ret < 0 {
				t.Fatalf("accept failed: errno %d", r.Errno)
			}
			if got := servedBy(t, c); got != h.pid {
				t.Errorf("served by pid %d, want %d", got, h.pid)
			}
			if r.AddrLen != tc.wantLen {
				t.Errorf("addrlen = %d, want %d", r.AddrLen, tc.wantLen)
			}
			if strings.HasSuffix(tc.cmd, "full") && (r.Family != unix.AF_INET || r.Port != clientPort) {
				t.Errorf("peer = family %d port %d, want AF_INET port %d", r.Family, r.Port, clientPort)
			}
			if tc.wantGuard != "" && r.Guard != tc.wantGuard {
				t.Errorf("bytes past the buffer length were written: %s", r.Guard)
			}
			if r.Nonblock != tc.wantNonblock || r.Cloexec != tc.wantCloexec {
				t.Errorf("nonblock=%v cloexec=%v, want %v %v", r.Nonblock, r.Cloexec, tc.wantNonblock, tc.wantCloexec)
			}
			if r.TOS>>2 != 34 {
				t.Errorf("DSCP = %d, want 34 (AF41) set before the server saw the socket", r.TOS>>2)
			}
			if g := h.placer.groupOf(h.pid); g != "shop" {
				t.Errorf("serving process is in group %q, want shop", g)
			}
		})
	}
	st := h.sup.Stats()
	// The supervisor counts after the server already has the socket.
	within(func() bool { return st.Accepted.Load()+st.Continued.Load() >= uint64(len(tests)) })
	if emulate && (st.Accepted.Load() != uint64(len(tests)) || st.Continued.Load() != 0) {
		t.Errorf("emulated path: %d accepted, %d left to the kernel; want %d, 0", st.Accepted.Load(), st.Continued.Load(), len(tests))
	}
	// A connection queued before the listener was first marked is emulated
	// (and marked); every later one is left to the kernel.
	if !emulate && (st.Accepted.Load() > 1 || st.Accepted.Load()+st.Continued.Load() != uint64(len(tests))) {
		t.Errorf("kernel path: %d accepted, %d left to the kernel; want at most 1 and %d in all", st.Accepted.Load(), st.Continued.Load(), len(tests))
	}
}

func TestAcceptErrnos(t *testing.T) {
	for _, path := range acceptPaths {
		t.Run(path.name, func(t *testing.T) { testAcceptErrnos(t, path.emulate) })
	}
}

func testAcceptErrnos(t *testing.T, emulate bool) {
	h := startServer(t, "127.0.0.1:0", emulate)
	tests := []struct {
		cmd   string
		errno unix.Errno
	}{
		{"on badfd accept4 0", unix.EBADF},
		{"on pipe accept4 0", unix.ENOTSOCK},
		{"on unconnected accept4 0", unix.EINVAL},
		{"on udp accept4 0", unix.EOPNOTSUPP},
		{"accept4 1 full", unix.EINVAL}, // unknown flag
	}
	for _, tc := range tests {
		t.Run(tc.cmd, func(t *testing.T) {
			h.command(tc.cmd)
			r := h.result()
			if r.Ret != -1 || unix.Errno(r.Errno) != tc.errno {
				t.Errorf("got ret %d errno %v, want %v", r.Ret, unix.Errno(r.Errno), tc.errno)
			}
		})
	}
}

// A bad address buffer fails the call the way the kernel fails it, but the
// connection, unlike in the kernel, is not lost: the next accept gets it.
func TestBadBufferKeepsConnection(t *testing.T) {
	h := startServer(t, "127.0.0.1:0", true)
	for _, tc := range []struct {
		mode  string
		errno unix.Errno
	}{{"fault", unix.EFAULT}, {"neg", unix.EINVAL}} {
		t.Run(tc.mode, func(t *testing.T) {
			c, _ := h.dial()
			h.command("accept4 0 " + tc.mode)
			if r := h.result(); r.Ret != -1 || unix.Errno(r.Errno) != tc.errno {
				t.Fatalf("got ret %d errno %v, want %v", r.Ret, unix.Errno(r.Errno), tc.errno)
			}
			h.command("accept4 0 full")
			if r := h.result(); r.Ret < 0 {
				t.Fatalf("second accept failed: errno %d", r.Errno)
			}
			if servedBy(t, c) != h.pid {
				t.Errorf("connection served by the wrong process")
			}
		})
	}
}

func TestNonBlockingListener(t *testing.T) {
	for _, path := range acceptPaths {
		t.Run(path.name, func(t *testing.T) { testNonBlockingListener(t, path.emulate) })
	}
}

func testNonBlockingListener(t *testing.T, emulate bool) {
	h := startServer(t, "127.0.0.1:0", emulate)
	h.command("nonblock")
	h.line()
	h.command("accept4 0 full")
	if r := h.result(); r.Ret != -1 || unix.Errno(r.Errno) != unix.EAGAIN {
		t.Fatalf("empty non-blocking listener: ret %d errno %v, want EAGAIN", r.Ret, unix.Errno(r.Errno))
	}
	c, _ := h.dial()
	// The connection may need a moment to reach the accept queue.
	deadline := time.Now().Add(patience)
	for {
		h.command("accept4 0 full")
		r := h.result()
		if r.Ret >= 0 {
			break
		}
		if unix.Errno(r.Errno) != unix.EAGAIN || time.Now().After(deadline) {
			t.Fatalf("accept: errno %v", unix.Errno(r.Errno))
		}
		time.Sleep(10 * time.Millisecond)
	}
	servedBy(t, c)
}

func TestIPv6(t *testing.T) {
	if _, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	h := startServer(t, "[::1]:0", true)
	h.command("accept4 0 full")
	c, clientPort := h.dial()
	r := h.result()
	if r.Ret < 0 || r.Family != unix.AF_INET6 || r.AddrLen != 28 || r.Port != clientPort {
		t.Fatalf("IPv6 accept: %+v (client port %d)", r, clientPort)
	}
	if r.TOS>>2 != 34 {
		t.Errorf("traffic class DSCP = %d, want 34", r.TOS>>2)
	}
	servedBy(t, c)
}

// A blocked accept interrupted by a signal, while no connection is pending,
// leaves a stale waiter; the restarted accept must still get the next
// connection.
func TestSignalWhileWaiting(t *testing.T) {
	h := startServer(t, "127.0.0.1:0", true)
	h.command("tid")
	tid, _ := strconv.Atoi(h.line())
	h.command("accept4 0 full")
	var first uint64
	waitFor(t, "the accept waiting in the supervisor", func() bool {
		ids := h.sup.waitingAccepts()
		if len(ids) == 1 {
			first = ids[0]
		}
		return len(ids) == 1
	})
	if err := unix.Tgkill(h.pid, tid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	// The signal ends the first call; the restarted one is a new
	// notification, waiting beside the stale record of the first.
	waitFor(t, "the accept restarted after the signal waiting again", func() bool {
		ids := h.sup.waitingAccepts()
		return len(ids) == 1 && ids[0] != first
	})
	c, _ := h.dial()
	if r := h.result(); r.Ret < 0 {
		t.Fatalf("accept after the signal: errno %d", r.Errno)
	}
	servedBy(t, c)
}

// The hard case: the supervisor has already accepted a connection for a
// caller that a signal then interrupts. The connection must be handed to
// the restarted accept, not dropped.
func TestSignalAfterAccept(t *testing.T) {
	for _, tc := range []struct {
		mode string
		// capped classes are handed over by a goroutine of their own
		// (Decision.Quota), which must put the connection back as well.
		capped bool
	}{{"full", false}, {"null", false}, {"full", true}, {"null", true}} {
		name := tc.mode
		if tc.capped {
			name += ", class with a CPU quota"
		}
		mode := tc.mode
		t.Run(name, func(t *testing.T) {
			h := startServer(t, "127.0.0.1:0", true)
			if tc.capped {
				h.sup.SetClassifier(cappedClassifier{portClassifier{shopPort: uint16(h.port)}})
			}
			accepted, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			h.sup.setTestHookBeforeDeliver(func(int) {
				once.Do(func() {
					close(accepted)
					<-release
				})
			})
			var releaseOnce sync.Once
			releaseHook := func() { releaseOnce.Do(func() { close(release) }) }
			t.Cleanup(releaseHook) // a failing test must not leave the supervisor stuck
			h.command("tid")
			tid, _ := strconv.Atoi(h.line())
			h.command("accept4 0 " + mode)
			waitFor(t, "the accept waiting in the supervisor", func() bool { return len(h.sup.waitingAccepts()) == 1 })
			c, _ := h.dial()
			select {
			case <-accepted:
			case <-time.After(patience):
				t.Fatal("supervisor never accepted the connection")
			}
			if err := unix.Tgkill(h.pid, tid, unix.SIGUSR1); err != nil {
				t.Fatal(err)
			}
			// The accepted connection is held in the hook; the caller's
			// call is over once its restarted accept waits again.
			waitFor(t, "the accept restarted after the signal waiting again", func() bool { return len(h.sup.waitingAccepts()) == 1 })
			releaseHook()
			if r := h.result(); r.Ret < 0 {
				t.Fatalf("restarted accept: errno %d", r.Errno)
			}
			servedBy(t, c)
			if n := h.sup.Stats().Requeued.Load(); n != 1 {
				t.Errorf("requeued %d connections, want exactly the interrupted one", n)
			}
		})
	}
}

// Fifty processes block in accept on one socket, as prefork children do;
// every connection is served, by several of them, each placed in the
// connection's group before it answers.
func TestManyAcceptingProcesses(t *testing.T) {
	for _, path := range acceptPaths {
		t.Run(path.name, func(t *testing.T) { testManyAcceptingProcesses(t, path.emulate, false) })
	}
	// Connections of a class with a CPU quota are handed over from
	// goroutines of their own, concurrently.
	t.Run("emulated, class with a CPU quota", func(t *testing.T) { testManyAcceptingProcesses(t, true, true) })
}

func testManyAcceptingProcesses(t *testing.T, emulate, capped bool) {
	h := startServer(t, "127.0.0.1:0", emulate)
	if capped {
		h.sup.SetClassifier(cappedClassifier{portClassifier{shopPort: uint16(h.port)}})
	}
	h.command("children 50")
	if l := h.line(); l != "ok" {
		t.Fatal(l)
	}
	const conns = 300
	pids := make(chan int, conns)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := 0; i < conns; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.DialTimeout("tcp", h.addr, patience)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(patience))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				t.Errorf("connection not served: %v", err)
				return
			}
			pid, _ := strconv.Atoi(strings.TrimSpace(line))
			// It has gone home by now if it is waiting again.
			if !h.placer.wasIn(pid, "shop") {
				t.Errorf("pid %d served without being placed in shop", pid)
			}
			pids <- pid
		}()
	}
	wg.Wait()
	close(pids)
	distinct := map[int]bool{}
	n := 0
	for p := range pids {
		distinct[p] = true
		n++
	}
	if n != conns {
		t.Fatalf("%d of %d connections served", n, conns)
	}
	if len(distinct) < 2 {
		t.Errorf("all connections served by %d process(es); the accepts were not concurrent", len(distinct))
	}
	t.Logf("%d connections served by %d processes", n, len(distinct))
}

// A caller with no free fd gets EMFILE, as from the kernel, and the
// connection waits for its next accept instead of being lost.
func TestEMFILEKeepsConnection(t *testing.T) {
	for _, path := range acceptPaths {
		t.Run(path.name, func(t *testing.T) {
			h := startServer(t, "127.0.0.1:0", path.emulate)
			c, _ := h.dial()
			waitFor(t, "the connection queued before the accept", func() bool { return acceptQueue(t, h.addr) == 1 })
			h.command("nofile")
			if l := h.line(); l != "ok" {
				t.Fatal(l)
			}
			h.command("accept4 0 null")
			if r := h.result(); r.Ret != -1 || unix.Errno(r.Errno) != unix.EMFILE {
				t.Fatalf("accept with no free fd: ret %d errno %v, want EMFILE", r.Ret, unix.Errno(r.Errno))
			}
			h.command("nofile restore")
			h.line()
			h.command("accept4 0 full")
			if r := h.result(); r.Ret < 0 {
				t.Fatalf("accept after freeing: errno %v", unix.Errno(r.Errno))
			}
			if servedBy(t, c) != h.pid {
				t.Error("connection served by the wrong process")
			}
		})
	}
}

// The count of held connections a keeper reads after a crash is exact
// however many receivers change it at once: a stale count tells the
// operator fewer connections were lost than were.
func TestHeldCountConcurrent(t *testing.T) {
	fd, region, err := failopen.Create()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	table, err := failopen.Attach(region)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		table *failopen.Table
	}{{"shared with a keeper", table}, {"on its own", nil}} {
		t.Run(tc.name, func(t *testing.T) {
			h := heldCount{table: tc.table}
			const goroutines, rounds = 8, 20000
			var wg sync.WaitGroup
			for g := range goroutines {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range rounds {
						h.add(1)
						h.add(-1)
					}
					if g%2 == 0 {
						h.add(1) // half of them keep one
					}
				}()
			}
			wg.Wait()
			if got, want := h.n(), int64(goroutines/2); got != want {
				t.Errorf("held count %d after balanced adds, want %d", got, want)
			}
			if tc.table != nil {
				if _, _, held := tc.table.Pending(); held != goroutines/2 {
					t.Errorf("the keeper reads %d held, want %d", held, goroutines/2)
				}
			}
		})
	}
}
