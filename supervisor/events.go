package supervisor

import (
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// sweepEvery is how often waiting accepts are checked for callers that went
// away and idle listener copies are closed.
const sweepEvery = time.Second

// eventLoop waits, in one goroutine, for the things that are not
// notifications: a listening socket with blocking accepts waiting on it
// became readable, or a server process exited (its pidfd became readable).
type eventLoop struct {
	epfd int
	wake int

	mu        sync.Mutex
	listeners map[int]*listener // by the supervisor's copy fd
	procs     map[int]*proc     // by pidfd
}

func newEventLoop() (*eventLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating the supervisor's epoll set: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("creating the supervisor's wake-up eventfd: %w", err)
	}
	e := &eventLoop{epfd: epfd, wake: wake, listeners: map[int]*listener{}, procs: map[int]*proc{}}
	if err := e.add(wake); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

func (e *eventLoop) add(fd int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
	if err := unix.EpollCtl(e.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("adding fd %d to the epoll set: %w", fd, err)
	}
	return nil
}

// watchListener makes the loop pump l when a connection arrives. Called
// with l.mu held.
func (e *eventLoop) watchListener(l *listener) {
	e.mu.Lock()
	e.listeners[l.fd] = l
	e.mu.Unlock()
	e.add(l.fd)
}

// unwatch stops watching a listener copy. Called with l.mu held.
func (e *eventLoop) unwatch(fd int) {
	e.mu.Lock()
	delete(e.listeners, fd)
	e.mu.Unlock()
	unix.EpollCtl(e.epfd, unix.EPOLL_CTL_DEL, fd, nil)
}

// watchExit makes the loop forget p when it exits.
func (e *eventLoop) watchExit(p *proc) {
	e.mu.Lock()
	e.procs[p.pidfd] = p
	e.mu.Unlock()
	e.add(p.pidfd)
}

// unwatchExit stops watching p's pidfd; it must run before the pidfd is
// closed, so that a reused fd number is never mistaken for p.
func (e *eventLoop) unwatchExit(p *proc) {
	e.mu.Lock()
	if e.procs[p.pidfd] == p {
		delete(e.procs, p.pidfd)
	}
	e.mu.Unlock()
	unix.EpollCtl(e.epfd, unix.EPOLL_CTL_DEL, p.pidfd, nil)
}

func (e *eventLoop) stop() {
	unix.Write(e.wake, []byte{1, 0, 0, 0, 0, 0, 0, 0})
}

func (e *eventLoop) close() {
	unix.Close(e.wake)
	unix.Close(e.epfd)
}

func (e *eventLoop) run(s *Supervisor) {
	events := make([]unix.EpollEvent, 64)
	nextSweep := time.Now().Add(sweepEvery)
	for {
		timeout := max(time.Until(nextSweep), 0)
		n, err := unix.EpollWait(e.epfd, events, int(timeout.Milliseconds())+1)
		if err != nil && err != unix.EINTR {
			s.log.Error("waiting for listener and process events", "err", err)
			return
		}
		for _, ev := range events[:max(n, 0)] {
			fd := int(ev.Fd)
			if fd == e.wake {
				return
			}
			e.mu.Lock()
			l := e.listeners[fd]
			p := e.procs[fd]
			e.mu.Unlock()
			switch {
			case l != nil:
				s.pump(l)
			case p != nil:
				s.forgetProc(p)
			}
		}
		if time.Now().After(nextSweep) {
			e.sweep(s)
			nextSweep = time.Now().Add(sweepEvery)
		}
	}
}

func (e *eventLoop) sweep(s *Supervisor) {
	e.mu.Lock()
	waiting := make([]*listener, 0, len(e.listeners))
	for _, l := range e.listeners {
		waiting = append(waiting, l)
	}
	e.mu.Unlock()
	for _, l := range waiting {
		s.dropStaleWaiters(l)
		s.pump(l)
	}
	s.listeners.expire(s.idle, e)
}
