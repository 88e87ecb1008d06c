package supervisor

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

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

// closeIdle closes a copy nobody has used for the idle time, unless
// something waits on it; what the copy knew about the socket's marks
// outlives it, and comes back when the socket is adopted again.
func TestCloseIdle(t *testing.T) {
	const idle = time.Minute
	for _, tc := range []struct {
		name     string
		recent   bool
		setup    func(*listener)
		closed   bool
		remember bool
	}{
		{"idle", false, func(*listener) {}, true, false},
		{"idle, polled by the event loop", false, func(l *listener) { l.polling = true }, true, false},
		{"idle, marked by vhqos", false, func(l *listener) { l.everMarked, l.markedDSCP, l.ownDSCP = true, 34, 8 }, true, true},
		{"idle, accepts left to the kernel", false, func(l *listener) { l.continued = true }, true, true},
		{"used recently", true, func(*listener) {}, false, false},
		{"an accept waits", false, func(l *listener) { l.waiters = []*acceptCall{{}} }, false, false},
		{"a connection stashed", false, func(l *listener) { l.stash = []*conn{{fd: -1}} }, false, false},
		{"a connection waits for its bytes", false, func(l *listener) { l.pending = []*conn{{fd: -1}} }, false, false},
		{"an accept under way", false, func(l *listener) { l.busy.Add(1) }, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := newEventLoop()
			if err != nil {
				t.Fatal(err)
			}
			defer ev.close()
			var bells bellTable
			table := newListenerTable()
			lfd, _ := kernelListener(t, "127.0.0.1:0")
			copyFd, err := unix.FcntlInt(uintptr(lfd), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			key := fileKey{ino: inodeOf(t, copyFd)}
			l := table.adopt(key, copyFd)
			tc.setup(l)
			if !tc.recent {
				l.lastUsed.Store(time.Now().Add(-2 * idle).UnixNano())
			}
			table.closeIdle(idle, ev, &bells)
			_, fdErr := unix.FcntlInt(uintptr(copyFd), unix.F_GETFD, 0)
			if l.closed != tc.closed || (fdErr == unix.EBADF) != tc.closed || (table.size() == 0) != tc.closed {
				t.Fatalf("closed %v, copy's fd closed %v, %d copies left; want closed %v", l.closed, fdErr == unix.EBADF, table.size(), tc.closed)
			}
			if !tc.closed {
				unix.Close(copyFd)
				return
			}
			if l.polling {
				t.Error("a closed copy still counted as polled")
			}
			want := 0
			if tc.remember {
				want = 1
			}
			if got := table.rememberedCount(); got != want {
				t.Fatalf("%d sockets remembered, want the copy remembered: %v", got, tc.remember)
			}
			if !tc.remember {
				return
			}
			// The socket comes back (a reload or an accept adopts it).
			again, err := unix.FcntlInt(uintptr(lfd), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			back := table.adopt(key, again)
			defer table.closeAll()
			if back == l || back.continued != l.continued || back.everMarked != l.everMarked ||
				back.markedDSCP != l.markedDSCP || back.ownDSCP != l.ownDSCP || table.rememberedCount() != 0 {
				t.Errorf("adopted again: continued %v, everMarked %v, marks %d/%d, %d still remembered; want what the closed copy knew: %v, %v, %d/%d",
					back.continued, back.everMarked, back.markedDSCP, back.ownDSCP, table.rememberedCount(), l.continued, l.everMarked, l.markedDSCP, l.ownDSCP)
			}
		})
	}
}

// What a closed copy knew is forgotten once the socket is gone.
func TestForgetGone(t *testing.T) {
	table := newListenerTable()
	table.remembered[fileKey{ino: 1}] = listenerMemory{continued: true}
	table.remembered[fileKey{ino: 2}] = listenerMemory{everMarked: true}
	table.forgetGone(map[uint64]bool{2: true})
	if _, ok := table.remembered[fileKey{ino: 2}]; !ok || table.rememberedCount() != 1 {
		t.Errorf("remembered %v, want only the live socket 2", table.remembered)
	}
}
