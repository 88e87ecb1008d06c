package supervisor

import (
	"container/heap"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// sweepEvery is how often waiting accepts are checked for callers that went
// away and idle listener copies are closed.
const sweepEvery = time.Second

// eventLoop waits, in one goroutine, for the things that are not
// notifications: a listening socket with blocking accepts waiting on it
// became readable, a connection whose host name is awaited sent more
// bytes, a server process exited (its pidfd became readable), a
// connection with a read held on it (heldread.go) got its next request, or
// a deadline passed.
type eventLoop struct {
	epfd     int
	wake     int
	stopping atomic.Bool

	mu        sync.Mutex
	listeners map[int]*listener // by the supervisor's copy fd
	procs     map[int]*proc     // by pidfd
	conns     map[int]*conn     // connections being sniffed, by fd
	refusals  map[int]*refusal  // connections being refused, by fd
	reads     map[int]*heldRead // keep-alive reads held, by copy fd
	timers    timerHeap
	// waitUntil is when the loop's current epoll_wait times out; a timer
	// due earlier wakes it.
	waitUntil time.Time
}

// timer asks the loop to look at a listener's deadlines (sniffing
// connections, short waits, its doorbell), or a refusal's, at when.
// Timers are never cancelled: one that finds nothing due does nothing.
type timer struct {
	when time.Time
	l    *listener
	r    *refusal
	hr   *heldRead
}

type timerHeap []timer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].when.Before(h[j].when) }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(timer)) }
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = timer{}
	*h = old[:len(old)-1]
	return t
}

// after makes the loop call s.checkDeadlines(l) at when.
func (e *eventLoop) after(when time.Time, l *listener) { e.push(timer{when: when, l: l}) }

// afterRefusal makes the loop call s.refusalDeadline(r) at when.
func (e *eventLoop) afterRefusal(when time.Time, r *refusal) { e.push(timer{when: when, r: r}) }

// afterRead makes the loop call s.readArrived(r) at when.
func (e *eventLoop) afterRead(when time.Time, r *heldRead) { e.push(timer{when: when, hr: r}) }

func (e *eventLoop) push(t timer) {
	when := t.when
	e.mu.Lock()
	heap.Push(&e.timers, t)
	early := when.Before(e.waitUntil)
	e.mu.Unlock()
	if early {
		unix.Write(e.wake, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	}
}

// due pops the timers that are due and returns when the next one is.
func (e *eventLoop) due(now time.Time) (due []*listener, refusals []*refusal, reads []*heldRead, next time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for len(e.timers) > 0 && !e.timers[0].when.After(now) {
		t := heap.Pop(&e.timers).(timer)
		switch {
		case t.r != nil:
			if e.refusals[t.r.c.fd] == t.r {
				refusals = append(refusals, t.r)
			}
		case t.hr != nil:
			if e.reads[t.hr.copyFd] == t.hr {
				reads = append(reads, t.hr)
			}
		case len(due) == 0 || due[len(due)-1] != t.l:
			due = append(due, t.l)
		}
	}
	if len(e.timers) > 0 {
		next = e.timers[0].when
	}
	return due, refusals, reads, next
}

// watchConn makes the loop look at c again whenever more bytes arrive (or the
// client hangs up). Edge-triggered: peeking leaves the bytes queued, so a
// level-triggered watch would fire without end.
func (e *eventLoop) watchConn(c *conn) error {
	e.mu.Lock()
	e.conns[c.fd] = c
	e.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(c.fd)}
	if err := unix.EpollCtl(e.epfd, unix.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
		e.mu.Lock()
		delete(e.conns, c.fd)
		e.mu.Unlock()
		return fmt.Errorf("watching a connection for its first bytes: %w", err)
	}
	return nil
}

// watchRefusal makes the loop step r whenever the client sent more (or
// hung up). Level-triggered: a refusal reads what it is woken for.
func (e *eventLoop) watchRefusal(r *refusal) error {
	e.mu.Lock()
	e.refusals[r.c.fd] = r
	e.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(r.c.fd)}
	if err := unix.EpollCtl(e.epfd, unix.EPOLL_CTL_ADD, r.c.fd, &ev); err != nil {
		e.mu.Lock()
		delete(e.refusals, r.c.fd)
		e.mu.Unlock()
		return fmt.Errorf("watching a refused connection: %w", err)
	}
	return nil
}

// unwatchRefusal forgets r; it must run before r's fd is closed, so that a
// reused fd number is never mistaken for r.
func (e *eventLoop) unwatchRefusal(r *refusal) {
	e.mu.Lock()
	watched := e.refusals[r.c.fd] == r
	if watched {
		delete(e.refusals, r.c.fd)
	}
	e.mu.Unlock()
	if watched {
		unix.EpollCtl(e.epfd, unix.EPOLL_CTL_DEL, r.c.fd, nil)
	}
}

// watchRead makes the loop look at r's connection whenever more bytes
// arrive (or the client hangs up). Edge-triggered, as for a connection
// being sniffed: peeking leaves the bytes queued. Bytes already there
// when it is added are reported at once.
func (e *eventLoop) watchRead(r *heldRead) error {
	e.mu.Lock()
	e.reads[r.copyFd] = r
	e.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(r.copyFd)}
	if err := unix.EpollCtl(e.epfd, unix.EPOLL_CTL_ADD, r.copyFd, &ev); err != nil {
		e.mu.Lock()
		delete(e.reads, r.copyFd)
		e.mu.Unlock()
		return fmt.Errorf("watching a kept connection for its next request: %w", err)
	}
	return nil
}

// unwatchRead forgets r and reports whether it was still watched; it must
// run before r's copy fd is closed, so that a reused fd number is never
// mistaken for r.
func (e *eventLoop) unwatchRead(r *heldRead) bool {
	e.mu.Lock()
	watched := e.reads[r.copyFd] == r
	if watched {
		delete(e.reads, r.copyFd)
	}
	e.mu.Unlock()
	if watched {
		unix.EpollCtl(e.epfd, unix.EPOLL_CTL_DEL, r.copyFd, nil)
	}
	return watched
}

// holdsRead reports whether r is still held.
func (e *eventLoop) holdsRead(r *heldRead) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.reads[r.copyFd] == r
}

// heldReads lists the reads held now.
func (e *eventLoop) heldReads() []*heldRead {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]*heldRead, 0, len(e.reads))
	for _, r := range e.reads {
		out = append(out, r)
	}
	return out
}

func (e *eventLoop) unwatchConn(c *conn) {
	e.mu.Lock()
	if e.conns[c.fd] == c {
		delete(e.conns, c.fd)
	}
	e.mu.Unlock()
	unix.EpollCtl(e.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
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
	e := &eventLoop{epfd: epfd, wake: wake, listeners: map[int]*listener{}, procs: map[int]*proc{}, conns: map[int]*conn{}, refusals: map[int]*refusal{}, reads: map[int]*heldRead{}}
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
	e.stopping.Store(true)
	unix.Write(e.wake, []byte{1, 0, 0, 0, 0, 0, 0, 0})
}

func (e *eventLoop) close() {
	unix.Close(e.wake)
	unix.Close(e.epfd)
}

// run is the event loop's goroutine, on a quiet thread (quietThread): it
// hands connections over.
func (e *eventLoop) run(s *Supervisor) {
	restore, err := quietThread()
	if err != nil {
		s.log.Error("the event loop's thread takes signals, which can lose a connection being handed over", "err", err)
	}
	defer func() { restore() }()
	events := make([]unix.EpollEvent, 64)
	nextSweep := time.Now().Add(sweepEvery)
	var drain [8]byte
	// While events are sparse the loop waits in the netpoller
	// (netpoll.go); without it, it always blocks in epoll_wait.
	idle, err := newNetpollWait(e.epfd, unix.EPOLLIN, "event loop's epoll set")
	if err != nil {
		s.log.Warn("the event loop blocks in epoll_wait even when idle, which costs the supervisor about sixty wake-ups per wait", "err", err)
	} else {
		defer idle.close()
	}
	sparse := true
	for {
		until := nextSweep
		e.mu.Lock()
		if len(e.timers) > 0 && e.timers[0].when.Before(until) {
			until = e.timers[0].when
		}
		e.waitUntil = until
		e.mu.Unlock()
		start := time.Now()
		var n int
		var err error
		if idle != nil && sparse {
			if _, err := idle.waitQuiet(until, &restore); err != nil {
				dropNetpoll(s.log, &idle, "the event loop", err)
				continue
			}
			n, err = epollWaitNow(e.epfd, events)
		} else {
			if idle != nil {
				if err := idle.disarm(); err != nil {
					dropNetpoll(s.log, &idle, "the event loop", err)
				}
			}
			// Milliseconds round down; waking a little late beats
			// spinning on a deadline not quite reached. A wait that
			// was to be short and is not (the end of a burst) goes on
			// in the netpoller after busyGap: left in epoll_wait, it
			// would wake sysmon some sixty times.
			timeout := min(max(until.Sub(start), 0), busyGap)
			n, err = unix.EpollWait(e.epfd, events, int((timeout+time.Millisecond-1)/time.Millisecond))
		}
		if err != nil && err != unix.EINTR {
			s.log.Error("waiting for listener and process events", "err", err)
			return
		}
		sparse = n <= 0 || time.Since(start) > busyGap
		for _, ev := range events[:max(n, 0)] {
			fd := int(ev.Fd)
			if fd == e.wake {
				if e.stopping.Load() {
					return
				}
				unix.Read(e.wake, drain[:])
				continue
			}
			e.mu.Lock()
			l := e.listeners[fd]
			p := e.procs[fd]
			c := e.conns[fd]
			r := e.refusals[fd]
			hr := e.reads[fd]
			e.mu.Unlock()
			switch {
			case c != nil:
				s.bytesArrived(c)
			case hr != nil:
				s.readArrived(hr, time.Now())
			case r != nil:
				s.refusalStep(r, false)
			case l != nil:
				s.pump(l)
			case p != nil:
				s.forgetProc(p)
			}
		}
		now := time.Now()
		due, refusals, reads, _ := e.due(now)
		for _, l := range due {
			s.checkDeadlines(l, now)
		}
		for _, r := range refusals {
			s.refusalDeadline(r, now)
		}
		for _, r := range reads {
			s.readArrived(r, now)
		}
		if now.After(nextSweep) {
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
	s.listeners.closeIdle(s.idle, e, &s.bells)
	for _, l := range s.bells.sweep() {
		s.checkDeadlines(l, time.Now())
	}
	s.dropGoneReads()
	s.pruneGone()
	s.leaseBackstop()
	s.sendIdleHome()
	if s.threadPlacer != nil {
		s.sweepThreads()
	}
	s.admissions.flushLog()
}
