package supervisor

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
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
	"golang.org/x/sys/unix"
)

// threadLab is a threaded server in the style of Python's
// ThreadingHTTPServer: the main thread accepts, and a new thread per
// connection reads it, says so, and waits until told to let go: on an
// Event (a futex, as an idle pool thread waits), or asleep in short naps
// (as a handler serving a slow request does).
const threadLab = `
import os, socket, sys, threading, time
lst = []
for _ in range(2):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    lst.append(s)
out = sys.stdout
lock = threading.Lock()
def say(*a):
    with lock:
        out.write(" ".join(str(x) for x in a) + "\n"); out.flush()
release = {}
def serve(name, mode, c):
    c.recv(1)
    if mode == "close":
        fd = c.fileno()
        c.close()
        say("read", name, threading.get_native_id(), fd)
        return
    say("read", name, threading.get_native_id())
    if mode == "sleep":
        while not release[name].is_set():
            time.sleep(0.05)
    else:
        release[name].wait()
    c.close()
say("ready", os.getpid(), lst[0].getsockname()[1], lst[1].getsockname()[1])
for line in sys.stdin:
    f = line.split()
    if f[0] == "accept":
        c, _ = lst[int(f[1])].accept()
        release[f[2]] = threading.Event()
        threading.Thread(target=serve, args=(f[2], f[3], c)).start()
    elif f[0] == "release":
        release[f[1]].set()
    elif f[0] == "readfile":
        def readfile():
            fd = os.open("/proc/self/stat", os.O_RDONLY)
            os.read(fd, 64)
            say("readfile", threading.get_native_id(), fd)
            os.close(fd)
        threading.Thread(target=readfile).start()
`

// syncBuffer is a bytes.Buffer a logger may write from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

type threadLabRun struct {
	t      *testing.T
	sup    *Supervisor
	placer *recordingPlacer
	log    *syncBuffer
	in     io.Writer
	out    *bufio.Reader
	pid    int
	ports  [2]int
}

func startThreadLab(t *testing.T, placement intercept.Placement) *threadLabRun {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: pidfd_getfd into the server and the seccomp filter without no_new_privs")
	}
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is needed (make deps installs it): %v", err)
	}
	script := filepath.Join(t.TempDir(), "threadlab.py")
	if err := os.WriteFile(script, []byte(threadLab), 0o644); err != nil {
		t.Fatal(err)
	}
	stdinR, stdinW, _ := os.Pipe()
	lb := &threadLabRun{t: t, in: stdinW, log: &syncBuffer{}}
	lb.placer = &recordingPlacer{group: map[int]string{}, everIn: map[int]map[string]bool{}}
	logger := slog.New(slog.NewTextHandler(lb.log, &slog.HandlerOptions{Level: slog.LevelInfo}))
	run := supervise(t, []string{python, script}, os.Environ(), intercept.Syscalls(intercept.TrackAccept, placement), stdinR,
		Options{Classifier: &labClassifier{}, Placer: lb.placer, Placement: placement, Logger: logger})
	stdinR.Close()
	t.Cleanup(func() { stdinW.Close() })
	lb.sup, lb.out = run.sup, run.out
	f := strings.Fields(lb.line())
	if len(f) != 4 || f[0] != "ready" {
		t.Fatalf("thread lab did not start: %q", f)
	}
	lb.pid, _ = strconv.Atoi(f[1])
	lb.ports[0], _ = strconv.Atoi(f[2])
	lb.ports[1], _ = strconv.Atoi(f[3])
	lb.sup.SetClassifier(&labClassifier{shop: uint16(lb.ports[0]), blog: uint16(lb.ports[1])})
	return lb
}

func (lb *threadLabRun) line() string {
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
		lb.t.Fatalf("the thread lab did not answer in %v", patience)
	}
	return ""
}

// serve connects to listener i, sends a byte and has the lab accept the
// connection and read it on a new thread, named name, which then waits
// (mode "wait") or naps (mode "sleep"); it returns that thread's id.
func (lb *threadLabRun) serve(i int, name, mode string) int {
	lb.t.Helper()
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(lb.ports[i]))
	if err != nil {
		lb.t.Fatal(err)
	}
	lb.t.Cleanup(func() { c.Close() })
	c.Write([]byte("x"))
	fmt.Fprintf(lb.in, "accept %d %s %s\n", i, name, mode)
	f := strings.Fields(lb.line())
	if len(f) < 3 || f[0] != "read" || f[1] != name {
		lb.t.Fatalf("lab said %q, want read %s TID", f, name)
	}
	tid, _ := strconv.Atoi(f[2])
	return tid
}

func TestThreadPlacementPlacesTheReadingThread(t *testing.T) {
	lb := startThreadLab(t, intercept.PlaceThread)
	shop := lb.serve(0, "s1", "wait")
	blog := lb.serve(1, "b1", "wait")
	napping := lb.serve(0, "s2", "sleep")
	if shop == lb.pid || blog == lb.pid || shop == blog {
		t.Fatalf("the lab's threads are not distinct: main %d, shop %d, blog %d", lb.pid, shop, blog)
	}
	// The reading thread is placed before its read goes on, so before
	// the lab said it read.
	if g := lb.placer.threadGroup(shop); g != "shop" {
		t.Errorf("the thread reading the shop connection is in %q, want shop", g)
	}
	if g := lb.placer.threadGroup(blog); g != "blog" {
		t.Errorf("the thread reading the blog connection is in %q, want blog", g)
	}
	if lb.placer.threadWasIn(shop, "blog") || lb.placer.threadWasIn(blog, "shop") {
		t.Errorf("a thread was put in the other thread's class")
	}
	// The first accept came while the lab had one thread: it was placed
	// whole, and went home when it turned out threaded.
	if lb.placer.wasIn(lb.pid, "blog") {
		t.Errorf("the process was moved into blog as a whole")
	}
	if g := lb.placer.groupOf(lb.pid); g != cgroup.HomeGroup {
		t.Errorf("the process is in %q, want %q", g, cgroup.HomeGroup)
	}
	if n := lb.sup.Stats().ThreadPlacements.Load(); n < 2 {
		t.Errorf("%d thread placements counted, want at least 2", n)
	}
	// Two threads now wait for work as an idle pool thread does: the
	// sweep (every second) sends them home. The third, asleep in its
	// handler, still serves.
	waitFor(t, "both waiting threads sent home", func() bool {
		return lb.placer.threadGroup(shop) == cgroup.HomeGroup && lb.placer.threadGroup(blog) == cgroup.HomeGroup
	})
	if g := lb.placer.threadGroup(napping); g != "shop" {
		t.Errorf("the thread asleep in its handler is in %q, want shop", g)
	}
	if c := strings.Count(lb.log.String(), "the server is multi-threaded"); c != 1 {
		t.Errorf("the log says %d times that the server is multi-threaded, want once:\n%s", c, lb.log)
	}
}

// TestThreadPlacementStaleFd: close is not intercepted under thread
// placement, so the record of a connection's fd outlives the connection;
// a thread that reads a file which got the same fd number must not be
// moved into the closed connection's class.
func TestThreadPlacementStaleFd(t *testing.T) {
	lb := startThreadLab(t, intercept.PlaceThread)
	lb.serve(1, "b0", "wait") // the process is threaded from here on
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(lb.ports[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("x"))
	fmt.Fprintf(lb.in, "accept 0 s1 close\n")
	f := strings.Fields(lb.line())
	if len(f) != 4 || f[0] != "read" {
		t.Fatalf("lab said %q, want read s1 TID FD", f)
	}
	closedFd := f[3]
	fmt.Fprintf(lb.in, "readfile\n")
	f = strings.Fields(lb.line())
	if len(f) != 3 || f[0] != "readfile" {
		t.Fatalf("lab said %q, want readfile TID FD", f)
	}
	if f[2] != closedFd {
		t.Skipf("the file got fd %s, not the closed connection's %s: nothing to test (the lab's fd numbering changed)", f[2], closedFd)
	}
	tid, _ := strconv.Atoi(f[1])
	if lb.placer.threadWasIn(tid, "shop") {
		t.Errorf("a thread reading a file on fd %s was moved into the class of the connection that fd held before", closedFd)
	}
}

// TestThreadPlacementFailures: a thread that exited before its move
// (ESRCH) is no failure; any other error is counted and logged, and the
// read goes on either way.
func TestThreadPlacementFailures(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		failed uint64
	}{
		{"thread gone", unix.ESRCH, 0},
		{"cgroup refused", unix.EACCES, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lb := startThreadLab(t, intercept.PlaceThread)
			lb.placer.mu.Lock()
			lb.placer.threadErr = tc.err
			lb.placer.mu.Unlock()
			lb.serve(0, "s1", "wait") // the lab answers: the read went on
			st := lb.sup.Stats()
			if n := st.PlacementErrors.Load(); n != tc.failed {
				t.Errorf("%d placement errors counted, want %d", n, tc.failed)
			}
			if n := st.ThreadPlacements.Load(); n != 0 {
				t.Errorf("%d thread placements counted for moves that failed", n)
			}
			logged := strings.Contains(lb.log.String(), "moving a server thread into its cgroup")
			if logged != (tc.failed > 0) {
				t.Errorf("failure logged: %v, want %v:\n%s", logged, tc.failed > 0, lb.log)
			}
		})
	}
}

func TestProcessPlacementLeavesThreadedProcessHome(t *testing.T) {
	lb := startThreadLab(t, intercept.PlaceProcess)
	lb.serve(0, "s1", "wait")
	lb.serve(1, "b1", "wait")
	lb.serve(0, "s2", "wait")
	lb.serve(1, "b2", "wait")
	if lb.placer.wasIn(lb.pid, "blog") {
		t.Errorf("the threaded process was moved into blog as a whole")
	}
	if g := lb.placer.groupOf(lb.pid); g != cgroup.HomeGroup {
		t.Errorf("the threaded process is in %q, want %q (it was placed in shop while it had one thread)", g, cgroup.HomeGroup)
	}
	if lb.placer.thread != nil {
		t.Errorf("threads were placed under placement = process: %v", lb.placer.thread)
	}
	if n := lb.sup.Stats().UnplacedMultiThreaded.Load(); n < 3 {
		t.Errorf("%d connections of a threaded process counted as unplaced, want at least 3", n)
	}
	log := lb.log.String()
	if c := strings.Count(log, "the server is multi-threaded"); c != 1 {
		t.Errorf("the log says %d times that the server is multi-threaded, want once:\n%s", c, log)
	}
	if !strings.Contains(log, `placement = \"thread\"`) {
		t.Errorf("the log does not say what to do about it:\n%s", log)
	}
}

func TestWaitSyscall(t *testing.T) {
	for _, tc := range []struct {
		line string
		want bool
	}{
		{"202 0x7f3c 0x80 0x0 0x0 0x0 0x0 0x7ffd 0x7f3c", true}, // futex: a pool's condition variable
		{"232 0x4 0x7ffd 0x200 0xffffffff 0x0 0x0 0x7ffd 0x7f3c", true},
		{"281 0x4 0x7ffd 0x200 0xffffffff 0x0 0x8 0x7ffd 0x7f3c", true},
		{"230 0x0 0x0 0x7ffd 0x0 0x0 0x0 0x7ffd 0x7f3c", false},  // clock_nanosleep: a handler asleep serves
		{"7 0x7ffd 0x1 0x1388 0x0 0x0 0x0 0x7ffd 0x7f3c", false}, // poll on its connection (worker MPM keep-alive)
		{"0 0x9 0x55d0 0x2000 0x0 0x0 0x0 0x7ffd 0x7f3c", false},
		{"running", false},
		{"-1 0x7ffd 0x7f3c", false},
		{"", false},
	} {
		if got := waitSyscall([]byte(tc.line)); got != tc.want {
			t.Errorf("waitSyscall(%q) = %v, want %v", tc.line, got, tc.want)
		}
	}
}

func TestParseTaskStat(t *testing.T) {
	for _, tc := range []struct {
		name    string
		line    string
		running bool
		cpu     uint64
		ok      bool
	}{
		{"sleeping", "123 (python3) S 1 123 123 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 3 0", false, 12, true},
		{"running", "124 (apache2) R 1 123 123 0 -1 4194560 100 0 0 0 70 30 0 0 20 0 3 0", true, 100, true},
		{"name with spaces and parentheses", "125 (a b) c)) S 1 1 1 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0", false, 3, true},
		{"cut short", "126 (x) S 1 1", false, 0, false},
		{"no name", "garbage", false, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			running, cpu, ok := parseTaskStat([]byte(tc.line))
			if running != tc.running || cpu != tc.cpu || ok != tc.ok {
				t.Errorf("parseTaskStat(%q) = %v, %d, %v; want %v, %d, %v", tc.line, running, cpu, ok, tc.running, tc.cpu, tc.ok)
			}
		})
	}
}
