package supervisor

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vhqos/vhqos/intercept"
	"golang.org/x/sys/unix"
)

// Receiving notifications (the first step of the data path).
//
// Exactly one goroutine receives notifications per notification fd: in
// SECCOMP_IOCTL_NOTIF_RECV while they come close together, parked in the
// Go netpoller between sparse ones (netpoll.go). The kernel's wait for a
// notification is not exclusive (recv_wait_event in kernel/seccomp.c):
// every notification wakes every thread waiting in NOTIF_RECV and all but
// one go back to sleep, so each extra receiver costs a wake-up per accept
// and buys nothing. The receiver answers at once what can be answered at
// once (a listener whose address decides the class: place, mark,
// "continue"); what has to wait for something else (a connection that has
// not arrived, a client's first bytes, a process that may wait for CPU
// before it takes its fd) is left with the event loop or handed to a
// goroutine of its own, so that the receiver waits for the next
// notification without delay.

// minProcs is the fewest Ps (GOMAXPROCS) the supervisor runs with: under
// load the receiver and the event loop each wait in blocking system calls,
// and a P held by a thread in a system call is only handed to another
// goroutine when the runtime's sysmon retakes it, which also starts sysmon
// polling every 20 µs. Two spare Ps let other goroutines
// (status, metrics, a hand-over waiting on a throttled process) run at once.
const minProcs = 4

// yieldEvery is how often a busy receiver lets the Go scheduler run (see
// receive): below the runtime's forcePreemptNS (10 ms), with room for the
// gap between notifications under load. The receiver is locked to its
// thread, so each yield hands its P to another thread and back: two
// wake-ups.
const yieldEvery = 8 * time.Millisecond

// Run answers notifications until every process under the filter has exited
// (the notification fd hangs up) or ctx is done. Connections accepted but
// not yet handed over are closed on return. Stopped by ctx while processes
// remain, Run returns at once; the next notification is then answered
// "continue" (the kernel does the syscall), and the ones after it fail
// with ENOSYS unless another copy of the notification fd is answered.
func (s *Supervisor) Run(ctx context.Context) error {
	var ended *netpollWait // the watcher's wait for the filter's end
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.events.run(s)
	}()
	defer func() {
		s.events.stop()
		wg.Wait()
		s.handOvers.Wait()
		s.listeners.closeAll()
		s.bells.closeAll()
		s.procs.closeAll()
		s.events.close()
		if ended != nil {
			ended.close()
		}
		unix.Close(s.notifyFd)
	}()
	if runtime.GOMAXPROCS(0) < minProcs {
		runtime.GOMAXPROCS(minProcs)
	}

	// The watcher notices the end: ctx done, or no process left under the
	// filter (the notification fd hangs up: POLLHUP; POLLERR alone says
	// the kernel could not take the filter's lock for a look). Newer
	// kernels also end a blocked NOTIF_RECV then; older ones leave the
	// receiver waiting.
	ended, err := newNetpollWait(s.notifyFd, 0, "end of the seccomp filter")
	if err != nil {
		return err
	}
	hangUp := make(chan struct{})
	go func() {
		for {
			ev, err := ended.wait(time.Time{})
			if err != nil {
				return
			}
			if ev&unix.POLLHUP != 0 {
				close(hangUp)
				return
			}
		}
	}()

	// The receiver waits on a copy of the notification fd of its own,
	// which it closes when it returns: it may outlive Run (below).
	recvFd, err := unix.FcntlInt(uintptr(s.notifyFd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("copying the notification fd for the receiver: %w", err)
	}
	r := &s.recv
	done := make(chan error, 1)
	go func() {
		defer unix.Close(recvFd)
		done <- s.receive(recvFd, r)
	}()

	var result error
	select {
	case <-ctx.Done():
		result = ctx.Err()
	case err := <-done:
		return firstError(result, err)
	case <-hangUp:
	}
	r.stopping.Store(true)
	// Nothing ends a NOTIF_RECV early on current kernels: their wait
	// (recv_wait_event) restarts after a signal handler, and every handler
	// of the Go runtime asks for restarts (SA_RESTART). A receiver waiting
	// there is left to itself: it answers the one notification it gets
	// next with "continue", as if no supervisor were there, and returns,
	// or returns when no process is left. One still answering is waited
	// for, since it uses what Run closes.
	for {
		select {
		case err := <-done:
			return firstError(result, err)
		case <-time.After(time.Millisecond):
		}
		if r.inRecv.Load() {
			return result
		}
	}
}

// receiverState is what Run and the receiver share to stop it. Run sets
// stopping before it reads inRecv, and the receiver clears inRecv before
// it reads stopping (both sequentially consistent): a receiver Run saw in
// NOTIF_RECV sees stopping when its wait ends, and touches nothing of the
// supervisor's after that.
type receiverState struct {
	stopping atomic.Bool
	// inRecv says the receiver waits for a notification (in NOTIF_RECV
	// or parked in the netpoller), or is about to.
	inRecv atomic.Bool
	// draining (Drain) makes the receiver keep what it receives for a
	// successor instead of answering it, until Drain has collected it
	// (drained, under mu): what comes after is let through.
	draining atomic.Bool
	mu       sync.Mutex
	late     []HeldAccept // received while draining
	drained  bool
}

func firstError(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// receive is the receiving goroutine: it waits for a notification on
// notifyFd and dispatches each, until r.stopping is set or the filter has
// no process left. It runs on a quiet thread, except while parked in the
// netpoller (netpollWait.waitQuiet).
func (s *Supervisor) receive(notifyFd int, r *receiverState) error {
	restore, err := quietThread()
	if err != nil {
		return fmt.Errorf("preparing the receiving thread: %w", err)
	}
	defer func() { restore() }()
	// Between sparse notifications the receiver waits in the netpoller
	// (netpoll.go); without it, it always blocks in NOTIF_RECV.
	idle, err := newNetpollWait(notifyFd, unix.EPOLLIN, "seccomp notifications")
	if err != nil {
		s.log.Warn("the receiver waits in NOTIF_RECV even when idle, which costs the supervisor about sixty wake-ups per notification", "err", err)
	} else {
		defer idle.close()
	}
	var n notification
	lastYield := time.Now()
	var last time.Time // when the previous notification was received
	sparse := true
	for {
		r.inRecv.Store(true)
		if r.stopping.Load() {
			return nil
		}
		parked := idle != nil && sparse
		if parked {
			ev, err := idle.waitQuiet(time.Time{}, &restore)
			switch {
			case err != nil:
				dropNetpoll(s.log, &idle, "the receiver", err)
			case ev&unix.POLLIN != 0:
			case ev&unix.POLLHUP != 0:
				// No process is left under the filter.
				return nil
			default:
				// POLLERR: the kernel could not take the filter's lock
				// for a look (a signal was pending); look again.
				continue
			}
		} else if idle != nil {
			if err := idle.disarm(); err != nil {
				dropNetpoll(s.log, &idle, "the receiver", err)
			}
		}
		err := recvNotification(notifyFd, &n)
		r.inRecv.Store(false)
		if r.stopping.Load() {
			if err == nil {
				// Received but not to be handled: the kernel does the
				// syscall, as it would with no supervisor at all.
				s.respond(n.ID, respondContinue(notifyFd, n.ID))
			}
			return nil
		}
		switch err {
		case nil:
			if s.inFlight != nil {
				s.inFlight.Received(n.ID, s.stale)
			}
			if r.draining.Load() {
				s.keepForSuccessor(notifyFd, &n)
				continue
			}
			// One clock read per notification: it times the answer,
			// paces the yield and says whether notifications come
			// close enough together to wait for the next in NOTIF_RECV.
			now := time.Now()
			sparse = now.Sub(last) > busyGap
			last = now
			s.dispatch(&n, now)
			// The runtime's sysmon takes the P of a goroutine that has
			// not been rescheduled for 10 ms (forcePreemptNS) even while
			// it is in a short system call, and every P it takes makes it
			// poll every 20 µs for a while: a busy receiver that never
			// yields keeps sysmon spinning (17% of the supervisor's
			// samples under load, docs/benchmarks.md). Yielding every few
			// milliseconds costs a couple of wake-ups each time; the
			// spinning cost about fifty per retake. A wait in the
			// netpoller is a yield already.
			if parked {
				lastYield = now
			} else if now.Sub(lastYield) > yieldEvery {
				runtime.Gosched()
				lastYield = now
			}
		case unix.EINTR:
		case unix.ENOENT:
			// The caller was interrupted between the wake-up and the read,
			// or, on newer kernels, no process is left under the filter.
			if hungUp(notifyFd) {
				return nil
			}
		default:
			return fmt.Errorf("receiving a seccomp notification: %w", err)
		}
	}
}

// keepForSuccessor keeps an accept received on notifyFd while draining
// for the successor; any other notification (fork, close... of tracking)
// is let through, as a successor learns those processes anew.
func (s *Supervisor) keepForSuccessor(notifyFd int, n *notification) {
	s.recv.mu.Lock()
	keep := adoptable(n.Data.Nr) && !s.recv.drained
	if keep {
		flags := uint64(0)
		if n.Data.Nr == unix.SYS_ACCEPT4 {
			flags = n.Data.Args[3]
		}
		s.recv.late = append(s.recv.late, HeldAccept{ID: n.ID, Pid: n.Pid, Args: [4]uint64{n.Data.Args[0], n.Data.Args[1], n.Data.Args[2], flags}})
	}
	s.recv.mu.Unlock()
	if !keep {
		// Not an accept, or taken after Drain collected what it
		// hands on: let it through, as if no supervisor were there.
		s.respond(n.ID, respondContinue(notifyFd, n.ID))
	}
}

// hungUp reports whether the notification fd says no process is left
// under the filter.
func hungUp(fd int) bool {
	return pollNow(fd, 0)&unix.POLLHUP != 0
}

// dispatch answers one notification by the step intercept's table gives its
// syscall, and tells observe how long that took since start (when the
// notification was received) under the syscall's name.
func (s *Supervisor) dispatch(n *notification, start time.Time) {
	s.stats.Notifications.Add(1)
	sc, ok := intercept.ByNr(n.Data.Nr)
	name := sc.Name
	if !ok {
		name = "other"
	}
	switch sc.Step {
	case intercept.StepAccept:
		s.handleAccept(n, false)
	case intercept.StepAccept4:
		s.handleAccept(n, true)
	case intercept.StepRead:
		if s.track == intercept.TrackFull {
			s.handleTracked(n, sc.Step)
		} else {
			s.handleThreadRead(n)
		}
	case intercept.StepFork, intercept.StepClose, intercept.StepDup, intercept.StepDupTo:
		s.handleTracked(n, sc.Step)
	default:
		// Nothing the filter sends: let it through.
		s.respond(n.ID, respondContinue(s.notifyFd, n.ID))
	}
	if s.observe != nil {
		s.observe(name, time.Since(start))
	}
}

// respond logs a failed answer unless the caller simply went away.
func (s *Supervisor) respond(id uint64, err error) {
	if s.inFlight != nil && (err == nil || notificationGone(err)) {
		s.inFlight.Answered(id)
	}
	if err != nil && !notificationGone(err) {
		s.stats.Errors.Add(1)
		s.log.Error("answering a seccomp notification", "id", id, "err", err)
	}
}
