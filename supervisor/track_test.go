package supervisor

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vhqos/vhqos/cgroup"
	"github.com/vhqos/vhqos/intercept"
)

// fdLab is a small Python program that runs under the real filter and does
// to its fd table what the test tells it, one command per line on stdin,
// answering one line each on stdout. Python, because it forks and execs
// plainly, which a Go test binary cannot.
const fdLab = `
import os, socket, sys, threading, time
lst = []
for _ in range(2):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    lst.append(s)
# The protocol runs on copies of stdin and stdout, so that the commands
# may replace fds 0, 1 and 2.
cmds = os.fdopen(os.dup(0), "r")
out = os.fdopen(os.dup(1), "w")
def say(*a):
    out.write(" ".join(str(x) for x in a) + "\n"); out.flush()
def do(cmd):
    f = cmd.split()
    if f[0] == "accept":
        c, _ = lst[int(f[1])].accept()
        fd = c.detach()
        os.set_inheritable(fd, True)
        return fd
    if f[0] == "dup2":
        os.dup2(int(f[1]), int(f[2])); return "ok"
    if f[0] == "close":
        os.close(int(f[1])); return "ok"
    if f[0] == "read":
        return os.read(int(f[1]), 1).decode()
    if f[0] == "readn":
        return len(os.read(int(f[1]), int(f[2])))
    if f[0] == "pid":
        return os.getpid()
    if f[0] == "sleep":
        time.sleep(float(f[1])); return "ok"
    return "unknown " + cmd
if len(sys.argv) > 1:
    # Exec'd again: the listeners are gone, fds named on the command line
    # are what the process was handed.
    lst = []
say("ready", *[s.getsockname()[1] for s in lst])
kids = []
for line in cmds:
    line = line.strip()
    if line.startswith("fork "):
        # fork CMD; CMD; ...: a child runs the commands, says "child PID
        # RESULT..." and lives as long as its parent (a pipe's EOF).
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(w)
            for _, w2 in kids:
                os.close(w2)
            res = [str(do(c.strip())) for c in line[5:].split(";")]
            say("child", os.getpid(), *res)
            os.read(r, 1)
            os._exit(0)
        os.close(r)
        kids.append((pid, w))
        say(pid)
    elif line == "reap":
        # The children see EOF on their pipes, exit, and are waited for.
        for pid, w in kids:
            os.close(w)
            os.waitpid(pid, 0)
        kids = []
        say("ok")
    elif line.startswith("thread "):
        r = []
        t = threading.Thread(target=lambda: r.append(do(line[7:])))
        t.start(); t.join()
        say(r[0])
    elif line == "exec":
        out.flush()
        os.execv(sys.executable, [sys.executable, sys.argv[0], "again"])
    else:
        say(do(line))
`

// labClassifier puts connections to the lab's first listener in "shop"
// and to its second in "blog"; with names, the host names shop.example
// and blog.example decide on both.
type labClassifier struct {
	shop, blog uint16
	names      bool
}

func (c *labClassifier) ClassifyAddr(local netip.AddrPort) Decision {
	switch local.Port() {
	case c.shop:
		return Decision{Group: "shop", DSCP: -1}
	case c.blog:
		return Decision{Group: "blog", DSCP: -1}
	}
	return Decision{Group: "default", DSCP: -1}
}
func (c *labClassifier) ClassifyListener(netip.AddrPort) (Decision, bool) { return Decision{}, false }
func (c *labClassifier) NamesApply(netip.AddrPort) bool                   { return c.names }
func (c *labClassifier) ClassifyName(host string, l netip.AddrPort) Decision {
	if c.names {
		switch host {
		case "shop.example":
			return Decision{Group: "shop", DSCP: -1}
		case "blog.example":
			return Decision{Group: "blog", DSCP: -1}
		}
	}
	return c.ClassifyAddr(l)
}
func (c *labClassifier) SniffLimits() (time.Duration, int)           { return time.Second, 16384 }
func (c *labClassifier) ProxyTrusted(netip.AddrPort) bool            { return false }
func (c *labClassifier) ClassifyPath(string) Decision                { return c.ClassifyAddr(netip.AddrPort{}) }
func (c *labClassifier) ListenerDecidesPath(string) (Decision, bool) { return Decision{}, false }
func (c *labClassifier) NamesApplyPath(string) bool                  { return false }
func (c *labClassifier) ClassifyNameOnPath(string, string) Decision {
	return c.ClassifyAddr(netip.AddrPort{})
}

type lab struct {
	t        *testing.T
	sup      *Supervisor
	placer   *recordingPlacer
	observed *observedCalls
	in       io.Writer
	out      *bufio.Reader
	pid      int
	ports    [2]int
}

// observedCalls counts the notifications the supervisor timed, by the
// label it gave them (Options.Observe, the metrics' latency histogram).
type observedCalls struct {
	mu sync.Mutex
	n  map[string]int
}

func (o *observedCalls) observe(syscall string, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.n[syscall]++
}

func (o *observedCalls) snapshot() map[string]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return maps.Clone(o.n)
}

func (o *observedCalls) count(syscall string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[syscall]
}

func startLab(t *testing.T, track intercept.Track) *lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: pidfd_getfd into the server and the seccomp filter without no_new_privs")
	}
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is needed (make deps installs it): %v", err)
	}
	script := filepath.Join(t.TempDir(), "fdlab.py")
	if err := os.WriteFile(script, []byte(fdLab), 0o644); err != nil {
		t.Fatal(err)
	}
	stdinR, stdinW, _ := os.Pipe()
	lb := &lab{t: t, in: stdinW}
	lb.placer = &recordingPlacer{group: map[int]string{}, everIn: map[int]map[string]bool{}}
	lb.observed = &observedCalls{n: map[string]int{}}
	run := supervise(t, []string{python, script}, os.Environ(), track.Syscalls(), stdinR,
		Options{Classifier: &labClassifier{}, Placer: lb.placer, Track: track, Observe: lb.observed.observe})
	stdinR.Close()
	t.Cleanup(func() { stdinW.Close() }) // runs before supervise's cleanup
	lb.sup, lb.pid, lb.out = run.sup, run.pid, run.out
	sup := run.sup
	f := strings.Fields(lb.line())
	if len(f) != 3 || f[0] != "ready" {
		t.Fatalf("lab did not start: %q", f)
	}
	lb.ports[0], _ = strconv.Atoi(f[1])
	lb.ports[1], _ = strconv.Atoi(f[2])
	// A new table, not a change to the one in force: the supervisor's
	// goroutines see it through SetClassifier's atomic store.
	sup.SetClassifier(&labClassifier{shop: uint16(lb.ports[0]), blog: uint16(lb.ports[1])})
	return lb
}

func (lb *lab) line() string {
	lb.t.Helper()
	ch := make(chan string, 1)
	go func() {
		s, _ := lb.out.ReadString('\n')
		ch <- strings.TrimSpace(s)
	}()
	select {
	case s := <-ch:
		return s
	case <-time.After(patience):
		lb.t.Fatalf("the lab did not answer in %v", patience)
	}
	return ""
}

// do sends one command and returns the answer.
func (lb *lab) do(cmd string) string {
	lb.t.Helper()
	fmt.Fprintln(lb.in, cmd)
	return lb.line()
}

// connect makes a connection to listener i, sends one byte on it (for the
// lab to read) and has the lab accept it; it returns the lab's fd.
func (lb *lab) connect(i int) int {
	lb.t.Helper()
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(lb.ports[i]))
	if err != nil {
		lb.t.Fatal(err)
	}
	lb.t.Cleanup(func() { c.Close() })
	c.Write([]byte("x"))
	fd, err := strconv.Atoi(lb.do("accept " + strconv.Itoa(i)))
	if err != nil {
		lb.t.Fatalf("accept: %v", err)
	}
	return fd
}

// expect checks which group the supervisor last put pid in.
func (lb *lab) expect(pid int, group, when string) {
	lb.t.Helper()
	if got := lb.placer.groupOf(pid); got != group {
		lb.t.Errorf("%s: process %d is in %q, want %q", when, pid, got, group)
	}
}

// The tables under full tracking: a connection dup2'd onto 0, 1 and 2 is
// held until the last of its fds closes; a reused fd number belongs to its
// new connection; a thread's calls count for its process.
func TestTrackFullFdTable(t *testing.T) {
	lb := startLab(t, intercept.TrackFull)
	fd := lb.connect(0)
	lb.expect(lb.pid, "shop", "after accept")
	for _, target := range []int{0, 1, 2} {
		lb.do(fmt.Sprintf("dup2 %d %d", fd, target))
	}
	lb.do(fmt.Sprintf("close %d", fd))
	lb.expect(lb.pid, "shop", "after closing the accepted fd, with copies on 0, 1, 2")
	lb.do("close 0")
	lb.do("close 1")
	lb.expect(lb.pid, "shop", "with the connection still on 2")
	lb.do("close 2")
	lb.expect(lb.pid, cgroup.HomeGroup, "after closing the last copy")

	// The same fd number, now for a blog connection.
	fd2 := lb.connect(1)
	lb.expect(lb.pid, "blog", "after accepting a blog connection")
	if got := lb.do(fmt.Sprintf("read %d", fd2)); got != "x" {
		t.Fatalf("read: %q", got)
	}
	lb.expect(lb.pid, "blog", "after reading the blog connection")

	// A thread closes it: the process goes home.
	lb.do(fmt.Sprintf("thread close %d", fd2))
	lb.expect(lb.pid, cgroup.HomeGroup, "after a thread closed the last connection")
	if _, _, conns := lb.sup.Tables(); conns > 2 {
		t.Errorf("%d connections followed", conns)
	}
}

// A child forked while its parent holds connections of two vhosts is born
// at home (the parent is moved there first) and follows the connection it
// reads from; one forked holding a single connection is born in its class.
// When the children exit, the process table returns to its size before.
func TestTrackFullFork(t *testing.T) {
	lb := startLab(t, intercept.TrackFull)
	procsBefore, _, _ := lb.sup.Tables()
	shop := lb.connect(0)
	blog := lb.connect(1)
	lb.expect(lb.pid, "blog", "after the second accept")
	fmt.Fprintf(lb.in, "fork read %d; sleep 0.2; read %d\n", shop, blog)
	var child int
	for range 2 {
		f := strings.Fields(lb.line())
		if f[0] == "child" {
			child, _ = strconv.Atoi(f[1])
		}
	}
	lb.expect(lb.pid, cgroup.HomeGroup, "parent, after forking with two vhosts' connections")
	if !lb.placer.wasIn(child, "shop") {
		t.Errorf("child %d was never placed in shop, where its first read went", child)
	}
	lb.expect(child, "blog", "child, after reading from blog last")

	// A single connection: the parent is in its class at the fork.
	lb.do(fmt.Sprintf("close %d", shop))
	lb.do(fmt.Sprintf("close %d", blog))
	lb.expect(lb.pid, cgroup.HomeGroup, "parent, after closing both")
	one := lb.connect(0)
	lb.do("fork sleep 0")
	lb.line()
	lb.expect(lb.pid, "shop", "parent forking with one shop connection (its child is born there)")
	lb.do(fmt.Sprintf("close %d", one))

	// When the children exit, the supervisor forgets them.
	if procs, _, _ := lb.sup.Tables(); procs <= procsBefore {
		t.Errorf("process table has %d entries with two children alive, %d before", procs, procsBefore)
	}
	lb.do("reap")
	var procs int
	within(func() bool { procs, _, _ = lb.sup.Tables(); return procs <= procsBefore })
	if procs != procsBefore {
		t.Errorf("process table has %d entries after the children exited, %d before", procs, procsBefore)
	}
}

// After exec the process keeps the connections its fds hold; the first
// read from one places it (the supervisor reads the fd from /proc, since
// exec closed others behind its back).
func TestTrackFullExec(t *testing.T) {
	lb := startLab(t, intercept.TrackFull)
	fd := lb.connect(1)
	lb.do(fmt.Sprintf("dup2 %d 20", fd))
	lb.do(fmt.Sprintf("close %d", fd))
	fmt.Fprintln(lb.in, "exec")
	if f := strings.Fields(lb.line()); len(f) == 0 || f[0] != "ready" {
		t.Fatalf("after exec: %q", f)
	}
	// Pretend it went elsewhere meanwhile: the read must put it back.
	lb.placer.Place(cgroup.HomeGroup, lb.pid)
	lb.sup.ForgetPlacements()
	if got := lb.do("read 20"); got != "x" {
		t.Fatalf("read after exec: %q", got)
	}
	lb.expect(lb.pid, "blog", "after exec and a read of the inherited connection")
}

// Fork tracking does not see close: a process that holds no connection
// goes home when it next waits in accept.
func TestTrackForkHomeAtAccept(t *testing.T) {
	lb := startLab(t, intercept.TrackFork)
	fd := lb.connect(0)
	lb.expect(lb.pid, "shop", "after accept")
	lb.do(fmt.Sprintf("close %d", fd))
	fmt.Fprintln(lb.in, "accept 0") // blocks: nobody connects yet
	within(func() bool { return lb.placer.groupOf(lb.pid) == cgroup.HomeGroup })
	lb.expect(lb.pid, cgroup.HomeGroup, "waiting in accept with nothing in hand")
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(lb.ports[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	lb.line()
	lb.expect(lb.pid, "shop", "after the next accept")
}

// The sweep lists the live sockets, then prunes the followed connections
// not among them; one accepted in between is not in the list and must
// stay (dropping it sent its process home: TestTrackFullFork saw the
// parent in home, not shop, under a CPU hog).
func TestTrackTablePruneSparesLaterAdds(t *testing.T) {
	tests := []struct {
		name      string
		live      map[uint64]bool
		wantKept  []uint64
		addedLate uint64
	}{
		{"gone before the list, added after it", map[uint64]bool{}, []uint64{2}, 2},
		{"live before, added after", map[uint64]bool{1: true}, []uint64{1, 2}, 2},
		{"nothing added after", map[uint64]bool{}, nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tt := newTrackTable()
			tt.add(&trackedConn{ino: 1})
			mark := tt.mark()
			if tc.addedLate != 0 {
				tt.add(&trackedConn{ino: tc.addedLate})
			}
			tt.prune(tc.live, mark)
			var kept []uint64
			for _, ino := range []uint64{1, 2} {
				if tt.get(ino) != nil {
					kept = append(kept, ino)
				}
			}
			if fmt.Sprint(kept) != fmt.Sprint(tc.wantKept) {
				t.Errorf("kept %v, want %v", kept, tc.wantKept)
			}
		})
	}
}

// Each intercepted call is timed under its own name, as the metrics'
// vhqos_notification_duration_seconds{syscall} shows it: a close, a dup2
// or a clone is not a fork.
func TestTrackFullLatencyLabels(t *testing.T) {
	lb := startLab(t, intercept.TrackFull)
	fd := lb.connect(0)
	lb.do(fmt.Sprintf("dup2 %d %d", fd, fd+10))
	lb.do(fmt.Sprintf("read %d", fd+10))
	lb.do(fmt.Sprintf("close %d", fd+10))
	// The C library's fork is the clone syscall.
	fmt.Fprintln(lb.in, "fork pid")
	lb.line()
	lb.line()
	lb.do("reap")
	// The supervisor times a call after answering it: wait for the report.
	want := []string{"dup2", "read", "close", "clone"}
	deadline := time.Now().Add(patience)
	for {
		missing := []string{}
		for _, name := range want {
			if lb.observed.count(name) == 0 {
				missing = append(missing, name)
			}
		}
		if accepts := lb.observed.count("accept") + lb.observed.count("accept4"); accepts == 0 {
			missing = append(missing, "accept or accept4")
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no notification timed as %q in %v; timed: %v", missing, patience, lb.observed.snapshot())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := lb.observed.count("other"); n != 0 {
		t.Errorf("%d notifications timed as \"other\": the filter sent a call intercept's table lacks", n)
	}
}

// A keep-alive connection whose server waits for the next request in a
// blocking read (php-fpm's way on a connection nginx keeps): the read is
// held until the request comes, and the process serves it in the class its
// host name asks for, not the previous request's. A request whose head
// comes in parts is waited for whole; bytes that start no request (a
// body) are read at once.
func TestTrackFullHeldRead(t *testing.T) {
	lb := startLab(t, intercept.TrackFull)
	lb.sup.SetClassifier(&labClassifier{shop: uint16(lb.ports[0]), blog: uint16(lb.ports[1]), names: true})
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(lb.ports[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	request := func(host string) string { return "GET / HTTP/1.1\r\nHost: " + host + "\r\n\r\n" }
	first := request("blog.example")
	c.Write([]byte(first))
	fd, err := strconv.Atoi(lb.do("accept 0"))
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	if got := lb.do(fmt.Sprintf("readn %d %d", fd, len(first))); got != strconv.Itoa(len(first)) {
		t.Fatalf("reading the first request: %q", got)
	}
	lb.expect(lb.pid, "blog", "serving the first request")
	for i, next := range []struct {
		what, bytes, group string
		// cuts are where the client's bytes are split, each part sent
		// 50 ms after the one before.
		cuts []int
	}{
		{"a request for shop", request("shop.example"), "shop", nil},
		{"a request for blog in parts", request("blog.example"), "blog", []int{17, 25}},
		{"a request for shop, its request line in parts", request("shop.example"), "shop", []int{4, 16}},
		// Not a request: read at once, nothing reclassified.
		{"a body", "name=value&more=1", "shop", nil},
	} {
		// The lab reads before the bytes are there, and blocks.
		fmt.Fprintf(lb.in, "read %d\n", fd)
		deadline := time.Now().Add(patience)
		for lb.sup.heldReads.Load() != 1 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the blocking read was not held", next.what)
			}
			time.Sleep(5 * time.Millisecond)
		}
		from := 0
		for _, cut := range append(next.cuts, len(next.bytes)) {
			if from > 0 {
				time.Sleep(50 * time.Millisecond)
				if lb.sup.heldReads.Load() != 1 {
					t.Fatalf("%s: the read went on with %q of it", next.what, next.bytes[:from])
				}
			}
			c.Write([]byte(next.bytes[from:cut]))
			from = cut
		}
		if got := lb.line(); got != next.bytes[:1] {
			t.Fatalf("%s: the held read returned %q", next.what, got)
		}
		lb.expect(lb.pid, next.group, fmt.Sprintf("request %d, %s", i, next.what))
		if rest := len(next.bytes) - 1; rest > 0 {
			if got := lb.do(fmt.Sprintf("readn %d %d", fd, rest)); got != strconv.Itoa(rest) {
				t.Fatalf("reading the rest of %s: %q", next.what, got)
			}
		}
	}
	// The client hangs up: the held read goes on and returns nothing.
	fmt.Fprintf(lb.in, "read %d\n", fd)
	time.Sleep(50 * time.Millisecond)
	c.Close()
	if got := lb.line(); got != "" {
		t.Fatalf("a read after the client closed returned %q", got)
	}
	if n := lb.sup.heldReads.Load(); n != 0 {
		t.Errorf("%d reads still held after the client closed", n)
	}
}
