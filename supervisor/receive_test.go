package supervisor

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// receiversNow lists this process's threads blocked in NOTIF_RECV on
// notifyFd or a copy of it, from /proc/self/task/*/syscall ("16 0xFD
// 0xREQ ..." for an ioctl).
func receiversNow(t *testing.T, notifyFd int) []int {
	t.Helper()
	tasks, err := filepath.Glob("/proc/self/task/*/syscall")
	if err != nil {
		t.Fatal(err)
	}
	self := os.Getpid()
	var tids []int
	for _, task := range tasks {
		data, err := os.ReadFile(task)
		if err != nil {
			continue
		}
		f := strings.Fields(string(data))
		if len(f) < 3 || f[0] != strconv.Itoa(unix.SYS_IOCTL) || f[2] != fmt.Sprintf("0x%x", uint64(unix.SECCOMP_IOCTL_NOTIF_RECV)) {
			continue
		}
		fd, err := strconv.ParseInt(strings.TrimPrefix(f[1], "0x"), 16, 32)
		if err != nil || !sameFile(self, int(fd), self, notifyFd) {
			continue
		}
		tid, _ := strconv.Atoi(filepath.Base(filepath.Dir(task)))
		tids = append(tids, tid)
	}
	return tids
}

// The kernel wakes every thread waiting in NOTIF_RECV for each
// notification, so a second receiver only adds wake-ups: there is never
// more than one, idle or under a burst of accepts on either path.
func TestOneReceiver(t *testing.T) {
	for _, path := range acceptPaths {
		t.Run(path.name, func(t *testing.T) {
			h := startServer(t, "127.0.0.1:0", path.emulate)
			h.command("children 20")
			if l := h.line(); l != "ok" {
				t.Fatal(l)
			}
			var most, samples, seen atomic.Int64
			raise := func(n int64) {
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
			}
			stop := make(chan struct{})
			sampled := make(chan struct{})
			go func() {
				defer close(sampled)
				for {
					select {
					case <-stop:
						return
					default:
					}
					n := len(receiversNow(t, h.sup.notifyFd))
					if n == 1 {
						seen.Add(1)
					}
					raise(int64(n))
					samples.Add(1)
					time.Sleep(200 * time.Microsecond)
				}
			}()
			// Bursts until the receiver was seen in NOTIF_RECV (idle, it
			// waits in the netpoller; between notifications that come
			// close together, in NOTIF_RECV): a burst's first accept
			// and its last are when a second receiver would appear.
			burst := func() {
				var wg sync.WaitGroup
				for i := 0; i < 8; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for j := 0; j < 25; j++ {
							c, err := net.DialTimeout("tcp", h.addr, patience)
							if err != nil {
								t.Error(err)
								return
							}
							c.SetReadDeadline(time.Now().Add(patience))
							if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
								t.Errorf("connection not served: %v", err)
							}
							c.Close()
						}
					}()
				}
				wg.Wait()
			}
			waitFor(t, "the receiver seen in NOTIF_RECV", func() bool {
				burst()
				return most.Load() >= 1
			})
			close(stop)
			<-sampled
			if most.Load() != 1 {
				t.Errorf("%d threads waited in NOTIF_RECV at once (%d samples, %d with one); want one", most.Load(), samples.Load(), seen.Load())
			}
		})
	}
}

// twoListeners is a server with two listeners in two processes: the child
// blocks in accept on a wildcard listener (the supervisor emulates that
// accept, and no client ever comes), the parent serves a listener on
// 127.0.0.1, whose address decides the class (the kernel accepts there).
const twoListeners = `
import os, socket, sys
slow = socket.socket(); slow.bind(("0.0.0.0", 0)); slow.listen(8)
fast = socket.socket(); fast.bind(("127.0.0.1", 0)); fast.listen(64)
print(slow.getsockname()[1], fast.getsockname()[1], flush=True)
if os.fork() == 0:
    slow.accept()
    os._exit(0)
while True:
    c, _ = fast.accept()
    c.sendall(b"%d\n" % os.getpid())
    c.close()
`

// startTwoListeners runs twoListeners under the filter and returns it with
// the address of its fast listener.
func startTwoListeners(t *testing.T) (supervised, string) {
	t.Helper()
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is needed (Debian: python3): %v", err)
	}
	placer := &recordingPlacer{group: map[int]string{}, everIn: map[int]map[string]bool{}}
	run := supervise(t, []string{python, "-c", twoListeners}, os.Environ(), []string{"accept", "accept4"}, nil,
		Options{Classifier: portClassifier{}, Placer: placer})
	line, err := run.out.ReadString('\n')
	if err != nil {
		t.Fatalf("server did not start: %v", err)
	}
	ports := strings.Fields(line)
	if len(ports) != 2 {
		t.Fatalf("server said %q, want two ports", line)
	}
	if _, err := strconv.Atoi(ports[1]); err != nil {
		t.Fatalf("server said %q", line)
	}
	return run, "127.0.0.1:" + ports[1]
}

// An emulated accept with no connection for seconds waits outside the
// receiver: accepts on other listeners are answered meanwhile.
func TestSlowEmulatedAcceptDoesNotDelayFastPath(t *testing.T) {
	run, fastAddr := startTwoListeners(t)
	sup := run.sup

	waitFor(t, "the child's accept on the wildcard listener held by the supervisor", func() bool { return len(sup.waitingAccepts()) == 1 })
	const conns = 200
	for i := 0; i < conns; i++ {
		c, err := net.DialTimeout("tcp", fastAddr, patience)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(patience))
		if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
			t.Fatalf("connection %d to the fast listener not served while the slow accept waits: %v", i, err)
		}
		c.Close()
	}
	if held := sup.waitingAccepts(); len(held) != 1 {
		t.Errorf("the slow accept is no longer held (%d held); the test did not overlap it with the fast ones", len(held))
	}
	// The count goes up just after the answer that lets the kernel accept:
	// the server may have served that connection, and the client read it,
	// before the receiver's thread runs again on a busy machine.
	deadline := time.Now().Add(patience)
	for sup.Stats().Continued.Load() < conns && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := sup.Stats().Continued.Load(); n < conns {
		t.Errorf("%d accepts left to the kernel, want at least %d: the fast listener did not take the fast path", n, conns)
	}
}

// blockedSignals reads which signals thread tid of this process blocks
// (SigBlk in /proc/self/task/TID/status; bit n-1 is signal n).
func blockedSignals(t *testing.T, tid int) uint64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/status", tid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if hex, ok := strings.CutPrefix(line, "SigBlk:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			if err != nil {
				t.Fatalf("SigBlk of thread %d: %v", tid, err)
			}
			return mask
		}
	}
	t.Fatalf("no SigBlk for thread %d", tid)
	return 0
}

// threadsIn lists this process's threads blocked in system call nr (one
// of nrs) with fd as its first argument.
func threadsIn(fd int, nrs ...int) []int {
	var tids []int
	tasks, _ := filepath.Glob("/proc/self/task/*/syscall")
	for _, task := range tasks {
		data, err := os.ReadFile(task)
		if err != nil {
			continue
		}
		for _, nr := range nrs {
			if strings.HasPrefix(string(data), fmt.Sprintf("%d 0x%x ", nr, fd)) {
				tid, _ := strconv.Atoi(filepath.Base(filepath.Dir(task)))
				tids = append(tids, tid)
			}
		}
	}
	return tids
}

// eventLoopsWaiting lists the threads blocked in epoll_wait on the event
// loop's epoll set.
func eventLoopsWaiting(h *harness) []int {
	return threadsIn(h.sup.events.epfd, unix.SYS_EPOLL_WAIT, unix.SYS_EPOLL_PWAIT)
}

// serveBurst has the test server (told "serve N") serve n connections
// back to back, each one byte answered with its checksum.
func serveBurst(t *testing.T, h *harness, n int) {
	t.Helper()
	for range n {
		c, _ := h.dial()
		send(t, c, [][]byte{{'x'}}, 0)
		readSum(t, c, patience)
		c.Close()
	}
}

// Idle, neither the receiver nor the event loop waits in a blocking
// system call: they wait in the Go runtime's netpoller (netpoll.go). A
// goroutine entering a long blocking call wakes the runtime's sysmon,
// which then polls every 20 µs until it retakes the call's P 10 ms later:
// about sixty wake-ups each time, for an idle supervisor a hundred a
// second.
func TestIdleWaitsOffSystemCalls(t *testing.T) {
	for _, path := range acceptPaths {
		t.Run(path.name, func(t *testing.T) {
			h := startServer(t, "127.0.0.1:0", path.emulate)
			h.command("serve 1000")
			// A wait that follows a short one is made in the system call,
			// and one made there stays until it ends: after a burst, the
			// receiver's lasts until the next notification. One
			// connection after a pause makes the next waits long ones.
			serveBurst(t, h, 20)
			time.Sleep(10 * busyGap)
			serveBurst(t, h, 1)
			waitFor(t, "the receiver and the event loop waiting in the netpoller", func() bool {
				return len(receiversNow(t, h.sup.notifyFd)) == 0 && len(eventLoopsWaiting(h)) == 0
			})
			// A sweep and more: waking for the sweep, the event loop parks
			// again.
			for end := time.Now().Add(sweepEvery + sweepEvery/2); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
				if r, l := receiversNow(t, h.sup.notifyFd), eventLoopsWaiting(h); len(r)+len(l) > 0 {
					t.Fatalf("idle, threads %v wait in NOTIF_RECV and %v in the event loop's epoll_wait; want none", r, l)
				}
			}
			// And it still serves.
			serveBurst(t, h, 1)
		})
	}
}

// Under a burst of connections the receiver and the event loop wait in
// their system calls (one wake-up per notification, where the netpoller
// costs two or three), and no signal can end an ADDFD wait on the threads
// that hand connections over (sendFd): those threads block them all.
func TestBusyWaitsOnQuietThreads(t *testing.T) {
	h := startServer(t, "127.0.0.1:0", true)
	h.command("serve 100000")
	type waiter struct {
		name    string
		waiting func() []int
		tid     int
		blocked uint64 // its signal mask while it waited there
	}
	waiters := []*waiter{
		{name: "receiver", waiting: func() []int { return receiversNow(t, h.sup.notifyFd) }},
		{name: "event loop", waiting: func() []int { return eventLoopsWaiting(h) }},
	}
	// Under a stream of connections both wait in their system calls: the
	// receiver for the server's next accept, the event loop for a few
	// milliseconds. Four clients at once keep the accept queue from
	// running dry on a slow machine too (the race detector, a busy CI),
	// where one client's connections came more than busyGap apart and
	// both waited in the netpoller throughout. A thread's mask counts
	// only if it still waits there after it was read (a goroutine may
	// park in the netpoller between connections and leave its thread).
	stop := make(chan struct{})
	var clients sync.WaitGroup
	for range 4 {
		clients.Add(1)
		go func() {
			defer clients.Done()
			buf := make([]byte, 256)
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.DialTimeout("tcp", h.addr, patience)
				if err != nil {
					continue
				}
				c.SetDeadline(time.Now().Add(patience))
				// The server answers once it has read to EOF.
				if _, err := c.Write([]byte{'x'}); err == nil && c.(*net.TCPConn).CloseWrite() == nil {
					c.Read(buf)
				}
				c.Close()
			}
		}()
	}
	defer func() {
		close(stop)
		clients.Wait()
	}()
	waitFor(t, "the receiver in NOTIF_RECV and the event loop in epoll_wait under a stream of connections", func() bool {
		for _, w := range waiters {
			if w.tid != 0 {
				continue
			}
			if tids := w.waiting(); len(tids) == 1 {
				blocked := blockedSignals(t, tids[0])
				if again := w.waiting(); len(again) == 1 && again[0] == tids[0] {
					w.tid, w.blocked = tids[0], blocked
				}
			}
		}
		return waiters[0].tid != 0 && waiters[1].tid != 0
	})
	for _, w := range waiters {
		t.Run(w.name, func(t *testing.T) {
			for _, sig := range []unix.Signal{unix.SIGURG, unix.SIGCHLD, unix.SIGTERM, unix.SIGHUP, unix.SIGPROF, unix.SIGINT, unix.SIGUSR1} {
				if w.blocked&(1<<(sig-1)) == 0 {
					t.Errorf("thread %d takes %v", w.tid, sig)
				}
			}
		})
	}
}

// Told to stop while the server runs, with an accept held waiting for a
// connection and another blocked in the kernel, the supervisor stops at
// once and the server is not left hanging: its next accept is the
// kernel's.
func TestStopWhileServing(t *testing.T) {
	run, fastAddr := startTwoListeners(t)
	waitFor(t, "the child's accept held by the supervisor", func() bool { return len(run.sup.waitingAccepts()) == 1 })
	if err := run.stop(); err != context.Canceled {
		t.Fatalf("Run returned %v, want %v", err, context.Canceled)
	}
	// The parent was in the kernel's accept on the fast listener; the
	// accept after this connection is the one the receiver lets through.
	for i := range 2 {
		c, err := net.DialTimeout("tcp", fastAddr, patience)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(patience))
		if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
			t.Errorf("connection %d after the stop not served: %v", i, err)
		}
		c.Close()
	}
}

// An accept received after Drain collected what it hands on has no one to
// take it: the draining supervisor lets it through to the kernel, as if no
// supervisor were there, instead of keeping it unanswered.
func TestAcceptAfterDrainLetThrough(t *testing.T) {
	h := startServer(t, "127.0.0.1:0", true)
	if got := h.sup.Drain(time.Second); len(got.Accepts) != 0 {
		t.Fatalf("Drain handed on %d accepts; the server made none", len(got.Accepts))
	}
	h.command("accept4 0 keep")
	c, _ := h.dial()
	defer c.Close()
	if r := h.result(); r.Ret < 0 {
		t.Fatalf("the accept after the drain failed: errno %v", unix.Errno(r.Errno))
	}
	if n := h.sup.stats.Accepted.Load(); n != 0 {
		t.Errorf("a draining supervisor accepted %d connections itself; want the kernel's accept", n)
	}
}
