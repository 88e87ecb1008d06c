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
	"github.com/vhqos/vhqos/vhost"
	"golang.org/x/sys/unix"
)

// Helpers shared by the package's tests: the harness that runs the test
// server (testserver_test.go) under the real filter with a Supervisor, the
// classifiers the tests use, and waiting for conditions.

// TestMain lets the test binary, re-executed, play the shim and the test
// server's processes.
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
	// thread is where PlaceThread last put each thread, by thread id;
	// threadEverIn every group it put it in.
	thread       map[int]string
	threadEverIn map[int]map[string]bool
	// threadErr, when set, is what PlaceThread returns, placing nothing.
	threadErr error
}

// PlaceThread makes recordingPlacer a ThreadPlacer.
func (r *recordingPlacer) PlaceThread(group string, tgid, tid int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.threadErr != nil {
		return r.threadErr
	}
	if r.thread == nil {
		r.thread, r.threadEverIn = map[int]string{}, map[int]map[string]bool{}
	}
	r.thread[tid] = group
	if r.threadEverIn[tid] == nil {
		r.threadEverIn[tid] = map[string]bool{}
	}
	r.threadEverIn[tid][group] = true
	return nil
}

func (r *recordingPlacer) threadGroup(tid int) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.thread[tid]
}

func (r *recordingPlacer) threadWasIn(tid int, group string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.threadEverIn[tid][group]
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

func (portClassifier) ProxyTrusted(netip.AddrPort) bool { return false }

// The tests of portClassifier have no unix listeners: a path gets the
// defaults, connection by connection.
func (c portClassifier) ClassifyPath(string) Decision              { return c.ClassifyAddr(netip.AddrPort{}) }
func (portClassifier) ListenerDecidesPath(string) (Decision, bool) { return Decision{}, false }
func (portClassifier) NamesApplyPath(string) bool                  { return false }
func (c portClassifier) ClassifyNameOnPath(string, string) Decision {
	return c.ClassifyAddr(netip.AddrPort{})
}

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
			if s.callerWaits(w) {
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

// supervised is a process run under the real filter with a Supervisor
// answering it.
type supervised struct {
	sup *Supervisor
	pid int
	// out reads the process's stdout.
	out *bufio.Reader
	// stop ends the supervisor's Run with the process still running and
	// returns Run's error, or an error if it did not return in patience.
	stop func() error
}

// supervise starts argv (env, stdin) under the real filter for syscalls,
// with this test binary as the shim, and a Supervisor made from opts (its
// NotifyFd filled in) answering it. The test fails if either cannot start;
// at cleanup the process's group is killed and the supervisor must stop.
func supervise(t *testing.T, argv, env, syscalls []string, stdin *os.File, opts Options) supervised {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: pidfd_getfd into the server and the seccomp filter without no_new_privs")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	stdoutR, stdoutW, _ := os.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	p, err := shim.Start(ctx, shim.Config{Self: self, Argv: argv, Syscalls: syscalls, Env: env,
		Stdin: stdin, Stdout: stdoutW, Stderr: os.Stderr})
	stdoutW.Close()
	if err != nil {
		cancel()
		t.Fatalf("starting %s under the filter: %v", argv[0], err)
	}
	opts.NotifyFd = p.NotifyFd
	sup, err := New(opts)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	// The Go test server has several threads whatever it does; the
	// tests of multi-threaded servers run another (threads_test.go).
	sup.testOneThreaded = argv[0] == self
	done := make(chan error, 1)
	go func() { done <- sup.Run(ctx) }()
	if err := p.Exec(); err != nil {
		t.Fatalf("exec of %s: %v", argv[0], err)
	}
	var stopped error
	var stopOnce sync.Once
	wait := func(why string) error {
		stopOnce.Do(func() {
			select {
			case stopped = <-done:
			case <-time.After(patience):
				stopped = fmt.Errorf("supervisor did not stop %s", why)
			}
		})
		return stopped
	}
	t.Cleanup(func() {
		// The process runs in a process group of its own, with its
		// children.
		unix.Kill(-p.Pid(), unix.SIGKILL)
		p.Cmd.Wait()
		if err := wait("after the server exited"); err != nil && err != context.Canceled {
			t.Errorf("supervisor: %v", err)
		}
		cancel()
	})
	stop := func() error {
		cancel()
		return wait("when told to")
	}
	return supervised{sup: sup, pid: p.Pid(), out: bufio.NewReader(stdoutR), stop: stop}
}

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
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	stdinR, stdinW, _ := os.Pipe()
	placer := &recordingPlacer{group: map[int]string{}, everIn: map[int]map[string]bool{}}
	h := &harness{t: t, placer: placer, in: stdinW, names: names}
	run := supervise(t, []string{self}, append(os.Environ(), testServerEnv+"=server", "VHQOS_TESTSERVER_ADDR="+listenAddr),
		[]string{"accept", "accept4"}, stdinR,
		Options{Classifier: &lateClassifier{h: h}, Placer: placer, EmulateAlways: emulate, ListenerIdle: 300 * time.Millisecond})
	stdinR.Close()
	t.Cleanup(func() { stdinW.Close() }) // runs before supervise's cleanup
	h.sup, h.pid, h.out = run.sup, run.pid, run.out
	line, err := h.out.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready ") {
		t.Fatalf("test server did not start: %q %v", line, err)
	}
	h.port, _ = strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "ready ")))
	// Installed again now that the port is known, so that the supervisor's
	// goroutines read it after this write (SetClassifier is an atomic store).
	h.sup.SetClassifier(&lateClassifier{h: h})
	if strings.HasPrefix(listenAddr, "unix:") {
		h.addr = listenAddr
		return h
	}
	host := strings.TrimSuffix(strings.TrimPrefix(listenAddr[:strings.LastIndex(listenAddr, ":")], "["), "]")
	h.addr = net.JoinHostPort(host, strconv.Itoa(h.port))
	return h
}

// cappedClassifier is c with a CPU quota on every class, so that hand-overs
// run aside from the receiver (Decision.Quota).
type cappedClassifier struct{ Classifier }

func (c cappedClassifier) ClassifyAddr(local netip.AddrPort) Decision {
	d := c.Classifier.ClassifyAddr(local)
	d.Quota = true
	return d
}

func (c cappedClassifier) ClassifyListener(bound netip.AddrPort) (Decision, bool) {
	d, ok := c.Classifier.ClassifyListener(bound)
	d.Quota = true
	return d, ok
}

func (c cappedClassifier) ClassifyName(host string, local netip.AddrPort) Decision {
	d := c.Classifier.ClassifyName(host, local)
	d.Quota = true
	return d
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

// NameMatches and NameMatchesOnPath pass the names classifier's answer on
// when it is a NameMatcher; otherwise no rule claims a name.
func (c *lateClassifier) NameMatches(host string, local netip.AddrPort) bool {
	m, ok := c.h.names.(NameMatcher)
	return ok && m.NameMatches(host, local)
}

func (c *lateClassifier) NameMatchesOnPath(host, path string) bool {
	m, ok := c.h.names.(NameMatcher)
	return ok && m.NameMatchesOnPath(host, path)
}

func (c *lateClassifier) SniffLimits() (time.Duration, int) {
	if c.h.names == nil {
		return time.Second, 16384
	}
	return c.h.names.SniffLimits()
}

func (c *lateClassifier) ProxyTrusted(local netip.AddrPort) bool {
	if c.h.names != nil {
		return c.h.names.ProxyTrusted(local)
	}
	return false
}

func (c *lateClassifier) ClassifyPath(path string) Decision {
	if c.h.names != nil {
		return c.h.names.ClassifyPath(path)
	}
	return portClassifier{}.ClassifyPath(path)
}

func (c *lateClassifier) ListenerDecidesPath(path string) (Decision, bool) {
	if c.h.names != nil {
		return c.h.names.ListenerDecidesPath(path)
	}
	return portClassifier{}.ListenerDecidesPath(path)
}

func (c *lateClassifier) NamesApplyPath(path string) bool {
	return c.h.names != nil && c.h.names.NamesApplyPath(path)
}

func (c *lateClassifier) ClassifyNameOnPath(host, path string) Decision {
	if c.h.names != nil {
		return c.h.names.ClassifyNameOnPath(host, path)
	}
	return c.ClassifyPath(path)
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

// dial connects a client and returns it with its local port (0 on a
// Unix-domain socket, h.addr "unix:/path" or "unix:@name").
func (h *harness) dial() (net.Conn, int) {
	h.t.Helper()
	network, addr := "tcp", h.addr
	if path, ok := strings.CutPrefix(h.addr, "unix:"); ok {
		network, addr = "unix", path // Go dials "@name" as abstract
	}
	c, err := net.DialTimeout(network, addr, patience)
	if err != nil {
		h.t.Fatalf("connecting to the test server: %v", err)
	}
	h.t.Cleanup(func() { c.Close() })
	if tc, ok := c.LocalAddr().(*net.TCPAddr); ok {
		return c, tc.Port
	}
	return c, 0
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

func (s *Supervisor) setTestHookBeforeDeliver(f func(callerPid int)) {
	s.testHookBeforeDeliver.Store(&f)
}

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

func (c *nameClassifier) ProxyTrusted(netip.AddrPort) bool { return false }

// On a unix listener the names apply as on an address; a path has no
// class of its own here.
func (c *nameClassifier) ClassifyPath(string) Decision { return defaultDecision }

func (c *nameClassifier) ListenerDecidesPath(path string) (Decision, bool) {
	if _, ok := c.m.ListenerDecidesPath(path); !ok {
		return Decision{}, false
	}
	return defaultDecision, true
}

func (c *nameClassifier) NamesApplyPath(path string) bool { return c.m.NamesApplyPath(path) }

func (c *nameClassifier) ClassifyNameOnPath(host, path string) Decision {
	if i := c.m.MatchNameOnPath(host, path); i >= 0 {
		return nameDecisions[i]
	}
	return c.ClassifyPath(path)
}

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
// its own TCP segment (or unix socket message), then closes the sending
// side.
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
	c.(interface{ CloseWrite() error }).CloseWrite()
}
