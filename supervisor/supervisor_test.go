package supervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
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

	"github.com/vhqos/vhqos/shim"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == shim.Arg {
		os.Exit(shim.Main(os.Args[2:]))
	}
	switch os.Getenv(testServerEnv) {
	case "server":
		os.Exit(testServerMain())
	case "child":
		os.Exit(testChildMain())
	case "pollchild":
		os.Exit(testPollChildMain())
	case "pollsumchild":
		os.Exit(testPollSumChildMain())
	}
	os.Exit(m.Run())
}

// recordingPlacer stands in for the cgroup manager in these tests, which are
// about accept semantics; the real cgroups are exercised by package cgroup
// and by the integration tests. It remembers where each process was put.
type recordingPlacer struct {
	mu     sync.Mutex
	group  map[int]string
	everIn map[int]map[string]bool
}

func (r *recordingPlacer) Place(group string, pid int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.group[pid] = group
	if r.everIn[pid] == nil {
		r.everIn[pid] = map[string]bool{}
	}
	r.everIn[pid][group] = true
	return nil
}

func (r *recordingPlacer) wasIn(pid int, group string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.everIn[pid][group]
}

func (r *recordingPlacer) groupOf(pid int) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.group[pid]
}

// portClassifier puts connections to one port in "shop" with DSCP 34
// (AF41) and everything else in "default", unmarked.
type portClassifier struct{ shopPort uint16 }

func (c portClassifier) ClassifyAddr(local netip.AddrPort) Decision {
	if local.Port() == c.shopPort {
		return Decision{Group: "shop", DSCP: 34}
	}
	return Decision{Group: "default", DSCP: -1}
}

// ClassifyListener lets a listener on a specific address decide, as an
// address-only table does.
func (c portClassifier) ClassifyListener(bound netip.AddrPort) (Decision, bool) {
	if bound.Addr().IsUnspecified() {
		return Decision{}, false
	}
	return c.ClassifyAddr(bound), true
}

func (portClassifier) NamesApply(netip.AddrPort) bool { return false }

func (c portClassifier) ClassifyName(_ string, local netip.AddrPort) Decision {
	return c.ClassifyAddr(local)
}

func (portClassifier) SniffLimits() (time.Duration, int) { return time.Second, 16384 }

// patience bounds every wait for something that must happen. It is
// generous because these tests run beside other packages' tests, under the
// race detector and on busy CI machines: a passing test never waits it
// out, so only a failing one pays for it.
const patience = 60 * time.Second

// within polls cond until it holds or patience runs out, and reports
// whether it held.
func within(cond func() bool) bool {
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// waitFor polls cond until it holds; the test fails if it does not within
// patience.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	if !within(cond) {
		t.Fatalf("not within %v: %s", patience, what)
	}
}

// waitingAccepts returns the notification ids of the blocking accepts the
// supervisor holds for want of a connection, whose callers are still in
// the call (a signal ends a caller's wait, not the supervisor's record).
func (s *Supervisor) waitingAccepts() []uint64 {
	var ids []uint64
	for _, l := range s.listeners.all() {
		l.mu.Lock()
		for _, w := range l.waiters {
			if idValid(s.notifyFd, w.id) {
				ids = append(ids, w.id)
			}
		}
		l.mu.Unlock()
	}
	return ids
}

// childrenOf lists the child processes of pid (each thread lists the
// children it started).
func childrenOf(t testing.TB, pid int) []int {
	t.Helper()
	files, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	if err != nil || len(files) == 0 {
		t.Fatalf("listing the threads of %d: %v", pid, err)
	}
	var kids []int
	for _, f := range files {
		data, _ := os.ReadFile(f)
		for _, field := range strings.Fields(string(data)) {
			if k, err := strconv.Atoi(field); err == nil {
				kids = append(kids, k)
			}
		}
	}
	return kids
}

// sleepsIn reports whether a thread of pid is asleep in one of the system
// calls nrs: /proc/PID/task/TID/syscall names the call only while the
// thread is blocked ("running" otherwise), so a thread that was woken, or
// has not got there yet, does not count.
func sleepsIn(pid int, nrs ...int) bool {
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/syscall", pid))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		fields := strings.Fields(string(data))
		if len(fields) < 2 {
			continue
		}
		if nr, err := strconv.Atoi(fields[0]); err == nil && slices.Contains(nrs, nr) {
			return true
		}
	}
	return false
}

// acceptQueue is how many connections wait in the accept queue of the
// IPv4 listener at addr, as /proc/net/tcp shows it (a listener's rx_queue
// is its accept backlog), or -1 if there is no such listener.
func acceptQueue(t testing.TB, addr string) int {
	t.Helper()
	ap := netip.MustParseAddrPort(addr)
	b := ap.Addr().As4()
	// The address as the kernel stores it, printed as a host-order
	// (little-endian) word; the port in plain hex.
	local := fmt.Sprintf("%02X%02X%02X%02X:%04X", b[3], b[2], b[1], b[0], ap.Port())
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n")[1:] {
		// sl local_address rem_address st tx_queue:rx_queue ...
		f := strings.Fields(line)
		if len(f) < 5 || f[1] != local || f[3] != "0A" { // TCP_LISTEN
			continue
		}
		_, rx, _ := strings.Cut(f[4], ":")
		n, _ := strconv.ParseUint(rx, 16, 32)
		return int(n)
	}
	return -1
}

type harness struct {
	t      *testing.T
	sup    *Supervisor
	placer *recordingPlacer
	port   int
	addr   string
	in     io.Writer
	out    *bufio.Reader
	pid    int
	// names, when set before the first connection, classifies by host
	// name too.
	names Classifier
}

// The two ways an accept is answered: emulated by the supervisor, or left
// to the kernel after placing the process and marking the listener, when
// the listener's address alone decides the class.
var acceptPaths = []struct {
	name    string
	emulate bool
}{{"emulated", true}, {"kernel", false}}

// startServer runs the test server under the real filter and a Supervisor
// whose classifier marks this server's port as "shop"; emulate turns the
// listener shortcut off.
func startServer(t *testing.T, listenAddr string, emulate bool) *harness {
	t.Helper()
	return startServerWith(t, listenAddr, emulate, nil)
}

// startServerWith is startServer with a classifier that also decides by
// host name.
func startServerWith(t *testing.T, listenAddr string, emulate bool, names Classifier) *harness {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: pidfd_getfd into the server and the seccomp filter without no_new_privs")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	stdinR, stdinW, _ := os.Pipe()
	stdoutR, stdoutW, _ := os.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	p, err := shim.Start(ctx, shim.Config{
		Self:     self,
		Argv:     []string{self},
		Syscalls: []string{"accept", "accept4"},
		Env:      append(os.Environ(), testServerEnv+"=server", "VHQOS_TESTSERVER_ADDR="+listenAddr),
		Stdin:    stdinR,
		Stdout:   stdoutW,
		Stderr:   os.Stderr,
	})
	stdinR.Close()
	stdoutW.Close()
	if err != nil {
		cancel()
		t.Fatalf("starting the test server: %v", err)
	}
	placer := &recordingPlacer{group: map[int]string{}, everIn: map[int]map[string]bool{}}
	h := &harness{t: t, placer: placer, in: stdinW, out: bufio.NewReader(stdoutR), pid: p.Pid(), names: names}
	sup, err := New(Options{NotifyFd: p.NotifyFd, Classifier: &lateClassifier{h: h}, Placer: placer, EmulateAlways: emulate, ListenerIdle: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	h.sup = sup
	done := make(chan error, 1)
	go func() { done <- sup.Run(ctx) }()
	if err := p.Exec(); err != nil {
		t.Fatalf("exec of the test server: %v", err)
	}
	t.Cleanup(func() {
		stdinW.Close()
		// The server runs in a process group of its own, with its children.
		unix.Kill(-p.Pid(), unix.SIGKILL)
		p.Cmd.Wait()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("supervisor: %v", err)
			}
		case <-time.After(patience):
			t.Errorf("supervisor did not stop after the server exited")
			cancel()
		}
		cancel()
	})
	line, err := h.out.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready ") {
		t.Fatalf("test server did not start: %q %v", line, err)
	}
	h.port, _ = strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "ready ")))
	// Installed again now that the port is known, so that the supervisor's
	// goroutines read it after this write (SetClassifier is an atomic store).
	sup.SetClassifier(&lateClassifier{h: h})
	host := strings.TrimSuffix(strings.TrimPrefix(listenAddr[:strings.LastIndex(listenAddr, ":")], "["), "]")
	h.addr = net.JoinHostPort(host, strconv.Itoa(h.port))
	return h
}

// lateClassifier knows the port only once the server has said it.
type lateClassifier struct{ h *harness }

func (c *lateClassifier) ClassifyAddr(local netip.AddrPort) Decision {
	if c.h.names != nil {
		return c.h.names.ClassifyAddr(local)
	}
	return portClassifier{shopPort: uint16(c.h.port)}.ClassifyAddr(local)
}

func (c *lateClassifier) ClassifyListener(bound netip.AddrPort) (Decision, bool) {
	if c.h.names != nil {
		return c.h.names.ClassifyListener(bound)
	}
	return portClassifier{shopPort: uint16(c.h.port)}.ClassifyListener(bound)
}

func (c *lateClassifier) NamesApply(local netip.AddrPort) bool {
	if c.h.names == nil {
		return false
	}
	return c.h.names.NamesApply(local)
}

func (c *lateClassifier) ClassifyName(host string, local netip.AddrPort) Decision {
	if c.h.names == nil {
		return c.ClassifyAddr(local)
	}
	return c.h.names.ClassifyName(host, local)
}

func (c *lateClassifier) SniffLimits() (time.Duration, int) {
	if c.h.names == nil {
		return time.Second, 16384
	}
	return c.h.names.SniffLimits()
}

func (h *harness) command(cmd string) {
	h.t.Helper()
	if _, err := fmt.Fprintln(h.in, cmd); err != nil {
		h.t.Fatalf("sending %q to the test server: %v", cmd, err)
	}
}

func (h *harness) line() string {
	h.t.Helper()
	type result struct {
		s   string
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := h.out.ReadString('\n')
		ch <- result{s, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			h.t.Fatalf("reading from the test server: %v", r.err)
		}
		return strings.TrimSpace(r.s)
	case <-time.After(patience):
		h.t.Fatalf("test server did not answer in %v", patience)
	}
	return ""
}

func (h *harness) result() acceptResult {
	h.t.Helper()
	var r acceptResult
	s := h.line()
	if err := json.Unmarshal([]byte(s), &r); err != nil {
		h.t.Fatalf("bad result %q: %v", s, err)
	}
	return r
}

// dial connects a client and returns it with its local port.
func (h *harness) dial() (net.Conn, int) {
	h.t.Helper()
	c, err := net.DialTimeout("tcp", h.addr, patience)
	if err != nil {
		h.t.Fatalf("connecting to the test server: %v", err)
	}
	h.t.Cleanup(func() { c.Close() })
	return c, c.LocalAddr().(*net.TCPAddr).Port
}

// servedBy reads the pid the server wrote on the connection.
func servedBy(t *testing.T, c net.Conn) int {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(patience))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("connection was not served: %v", err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}

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
	for _, mode := range []string{"full", "null"} {
		t.Run(mode, func(t *testing.T) {
			h := startServer(t, "127.0.0.1:0", true)
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
		t.Run(path.name, func(t *testing.T) { testManyAcceptingProcesses(t, path.emulate) })
	}
}

func testManyAcceptingProcesses(t *testing.T, emulate bool) {
	h := startServer(t, "127.0.0.1:0", emulate)
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

// vhqos's copy of a listening socket must not keep the port: a server that
// closes a listener and binds the same port again (a Listen dropped and
// re-added on reload) succeeds within the idle time of the copy.
func TestClosedListenerReleased(t *testing.T) {
	for _, path := range acceptPaths {
		t.Run(path.name, func(t *testing.T) {
			h := startServer(t, "127.0.0.1:0", path.emulate)
			h.command("accept4 0 full")
			c, _ := h.dial()
			h.result()
			servedBy(t, c)
			start := time.Now()
			h.command("relisten")
			if l := h.line(); l != "ok" {
				t.Fatalf("binding the port again: %s", l)
			}
			t.Logf("port free again after %v", time.Since(start).Round(10*time.Millisecond))
			h.command("accept4 0 full")
			c2, _ := h.dial()
			if r := h.result(); r.Ret < 0 {
				t.Fatalf("accept on the new listener: errno %d", r.Errno)
			}
			servedBy(t, c2)
		})
	}
}

// A server that polls its listener before accepting cannot see a
// connection vhqos kept for it after the process it was accepted for went
// away: the kernel's queue no longer holds it. vhqos then queues a
// connection of its own to make the listener readable, and drops it when it
// is accepted. Here the process vhqos accepted for is killed before it gets
// the connection; the other one must serve it.
func TestStashedConnectionWakesPollingServer(t *testing.T) {
	h := startServer(t, "127.0.0.1:0", true)
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

func (s *Supervisor) setTestHookBeforeDeliver(f func(callerPid int)) {
	s.testHookBeforeDeliver.Store(&f)
}
