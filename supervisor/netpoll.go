package supervisor

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Waiting without waking the Go runtime's sysmon.
//
// A goroutine that enters a system call wakes the runtime's sysmon
// thread if it sleeps (runtime.reentersyscall), and sysmon then polls
// every 20 µs (fifty times before it starts backing off) for as long as a
// P is busy or held in a system call; it retakes a P held in a system call
// after 10 ms (runtime.retake). Each long wait in NOTIF_RECV or
// epoll_wait therefore cost about sixty wake-ups of sysmon: measured
// here, an idle supervisor woke about a hundred times a second and one
// serving ten connections a second about eight hundred times.
//
// A goroutine parked in the runtime's netpoller holds no P and enters no
// system call, so sysmon sleeps on. The waits that may last (the receiver
// between notifications, the event loop between events) therefore park
// there when traffic is sparse; under load, when the next notification
// comes within a few milliseconds, they block in the system call as
// before, which costs one wake-up where the netpoller costs three or four
// (its thread, a thread to poll in its place, and sysmon, woken by the
// system call that follows).

// busyGap is the gap between two wake-ups under which the next wait blocks
// in its system call rather than in the netpoller: half the 10 ms after
// which sysmon retakes a P held in a system call, so that a wait predicted
// short from the last one rarely outlasts that.
const busyGap = 5 * time.Millisecond

// netpollWait parks a goroutine in the Go netpoller until one fd (the
// notification fd, the event loop's epoll set) is ready. The fd is watched
// through a private epoll set of its own, registered with the netpoller:
// the netpoller registers what it is given edge-triggered for reading and
// writing, and the notification fd reports writable whenever a
// notification has been received and not yet answered, which under load
// would wake the netpoller's thread for nothing. The private set watches
// only for readability, and only while armed.
type netpollWait struct {
	fd     int    // the fd waited for, not owned
	events uint32 // EPOLLIN, or 0 to wait for a hang-up only
	ep     int    // the private epoll set, owned by file
	file   *os.File
	rc     syscall.RawConn
	armed  bool
}

// newNetpollWait prepares waits for fd to become ready for events (EPOLLIN,
// or 0 for a hang-up or an error only, which epoll always reports). The
// wait starts armed. It fails when the kernel or the runtime cannot poll
// fd; the caller then blocks in its system call as before.
func newNetpollWait(fd int, events uint32, name string) (*netpollWait, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating an epoll set to wait for the %s: %w", name, err)
	}
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		unix.Close(ep)
		return nil, fmt.Errorf("watching the %s: %w", name, err)
	}
	// Non-blocking, so that os.NewFile hands it to the netpoller.
	if err := unix.SetNonblock(ep, true); err != nil {
		unix.Close(ep)
		return nil, fmt.Errorf("preparing to wait for the %s: %w", name, err)
	}
	w := &netpollWait{fd: fd, events: events, ep: ep, file: os.NewFile(uintptr(ep), name), armed: true}
	// Only a file the netpoller took can have a deadline.
	if err := w.file.SetReadDeadline(time.Time{}); err != nil {
		w.file.Close()
		return nil, fmt.Errorf("waiting for the %s in the netpoller: %w", name, err)
	}
	if w.rc, err = w.file.SyscallConn(); err != nil {
		w.file.Close()
		return nil, fmt.Errorf("waiting for the %s in the netpoller: %w", name, err)
	}
	return w, nil
}

// disarm stops watching for readiness while the owner blocks in the fd's
// own system call: a readable fd then wakes nothing but the owner.
// Hang-ups are still seen by the next wait.
func (w *netpollWait) disarm() error {
	if !w.armed {
		return nil
	}
	if err := w.modify(0); err != nil {
		return err
	}
	w.armed = false
	return nil
}

func (w *netpollWait) modify(events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(w.fd)}
	if err := unix.EpollCtl(w.ep, unix.EPOLL_CTL_MOD, w.fd, &ev); err != nil {
		return fmt.Errorf("changing what is waited for on fd %d: %w", w.fd, err)
	}
	return nil
}

// wait parks until the fd is ready, or until deadline (none when zero). It
// returns the fd's poll(2) events (POLLIN, POLLHUP, POLLERR...), 0 when
// the deadline passed first, and an error when the wait was closed.
// Readiness is read from the fd itself before parking (after the
// netpoller forgot any earlier wake-up), and a wake-up that comes after
// that look ends the park: none is lost.
func (w *netpollWait) wait(deadline time.Time) (int16, error) {
	if !w.armed {
		if err := w.modify(w.events); err != nil {
			return 0, err
		}
		w.armed = true
	}
	if err := w.file.SetReadDeadline(deadline); err != nil {
		return 0, fmt.Errorf("setting a deadline to wait for fd %d: %w", w.fd, err)
	}
	pollFor := int16(0)
	if w.events&unix.EPOLLIN != 0 {
		pollFor = unix.POLLIN
	}
	var revents int16
	err := w.rc.Read(func(uintptr) bool {
		revents = pollNow(w.fd, pollFor)
		return revents != 0
	})
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("waiting for fd %d: %w", w.fd, err)
	}
	return revents, nil
}

// waitQuiet is wait for a goroutine on a quiet thread (quietThread). It
// lets the thread go while parked, so that whichever thread the netpoller
// wakes runs the goroutine (a goroutine locked to its thread needs that
// thread woken as well: two wake-ups more per wait), and takes a quiet
// thread again before it returns, replacing *restore with that thread's.
func (w *netpollWait) waitQuiet(deadline time.Time, restore *func()) (int16, error) {
	(*restore)()
	ev, err := w.wait(deadline)
	r, quietErr := quietThread()
	*restore = r
	if quietErr != nil {
		return 0, fmt.Errorf("taking a quiet thread again after a wait: %w", quietErr)
	}
	return ev, err
}

// dropNetpoll gives up waiting in the netpoller after *w failed: owner
// (the receiver, the event loop) waits in its system call from then on,
// which costs wake-ups, not connections.
func dropNetpoll(log *slog.Logger, w **netpollWait, owner string, err error) {
	log.Error(owner+" waits in its system call from now on, even when idle", "err", err)
	(*w).close()
	*w = nil
}

// close ends the wait; a goroutine parked in wait returns an error.
func (w *netpollWait) close() {
	w.file.Close()
}

// pollNow is poll(2) on fd with no timeout: the events of the fd now
// (hang-ups and errors always, POLLIN if asked for), 0 for none. It never
// blocks, so it is made as a raw system call, which leaves sysmon asleep.
func pollNow(fd int, events int16) int16 {
	p := unix.PollFd{Fd: int32(fd), Events: events}
	var zero unix.Timespec
	n, _, errno := unix.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&p)), 1, uintptr(unsafe.Pointer(&zero)), 0, 0, 0)
	if errno != 0 || n == 0 {
		return 0
	}
	return p.Revents
}

// epollWaitNow is epoll_wait(2) with no timeout, raw as pollNow is.
func epollWaitNow(epfd int, events []unix.EpollEvent) (int, error) {
	n, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_WAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
