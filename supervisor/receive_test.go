package supervisor

import (
	"bufio"
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

// receiversNow counts this process's threads blocked in NOTIF_RECV on
// notifyFd, from /proc/self/task/*/syscall ("16 0xFD 0xREQ ..." for an
// ioctl). The receiving goroutine is not locked to a thread, so one pass
// over the threads may see it in NOTIF_RECV on one thread and, a moment
// later, on the thread it moved to: threads seen in NOTIF_RECV are read
// again, and only those still there count.
func receiversNow(t *testing.T, notifyFd int) int {
	t.Helper()
	tasks, err := filepath.Glob("/proc/self/task/*/syscall")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%d 0x%x 0x%x ", unix.SYS_IOCTL, notifyFd, uint64(unix.SECCOMP_IOCTL_NOTIF_RECV))
	inRecv := func(task string) bool {
		data, err := os.ReadFile(task)
		return err == nil && strings.HasPrefix(string(data), want)
	}
	var seen []string
	for _, task := range tasks {
		if inRecv(task) {
			seen = append(seen, task)
		}
	}
	if len(seen) < 2 {
		return len(seen)
	}
	n := 0
	for _, task := range seen {
		if inRecv(task) {
			n++
		}
	}
	return n
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
			var most, samples atomic.Int64
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
					n := int64(receiversNow(t, h.sup.notifyFd))
					if n > most.Load() {
						most.Store(n)
					}
					samples.Add(1)
					time.Sleep(200 * time.Microsecond)
				}
			}()
			// Idle first: the moment a second receiver would sit beside the
			// first.
			waitFor(t, "the receiver waiting in NOTIF_RECV", func() bool { return receiversNow(t, h.sup.notifyFd) == 1 })
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
			close(stop)
			<-sampled
			if most.Load() != 1 {
				t.Errorf("at most %d threads waited in NOTIF_RECV at once (%d samples); want exactly 1", most.Load(), samples.Load())
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

// An emulated accept with no connection for seconds waits outside the
// receiver: accepts on other listeners are answered meanwhile.
func TestSlowEmulatedAcceptDoesNotDelayFastPath(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is needed (Debian: python3): %v", err)
	}
	placer := &recordingPlacer{group: map[int]string{}, everIn: map[int]map[string]bool{}}
	run := supervise(t, []string{python, "-c", twoListeners}, os.Environ(), []string{"accept", "accept4"}, nil,
		Options{Classifier: portClassifier{}, Placer: placer})
	sup := run.sup
	line, err := run.out.ReadString('\n')
	if err != nil {
		t.Fatalf("server did not start: %v", err)
	}
	ports := strings.Fields(line)
	if len(ports) != 2 {
		t.Fatalf("server said %q, want two ports", line)
	}
	fastAddr := "127.0.0.1:" + ports[1]
	if _, err := strconv.Atoi(ports[0]); err != nil {
		t.Fatalf("server said %q", line)
	}

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
	if n := sup.Stats().Continued.Load(); n < conns {
		t.Errorf("%d accepts left to the kernel, want at least %d: the fast listener did not take the fast path", n, conns)
	}
}
