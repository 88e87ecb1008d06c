package supervisor

import (
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/vhqos/vhqos/cgroup"
	"github.com/vhqos/vhqos/failopen"
	"github.com/vhqos/vhqos/intercept"
	"github.com/vhqos/vhqos/vhost"
	"golang.org/x/sys/unix"
)

// Answering an accept (the handler step of the data path).
//
// handleAccept finds the listening socket behind the caller's fd
// (listenerFor; the copies are kept in listeners.go). When the listener's
// address alone decides the class, the process is placed, the listener
// marked and the accept left to the kernel (leaveToKernel). Otherwise the
// accept is emulated: a connection is taken from the supervisor's copy
// (acceptOn), classified (prepare, pending.go) and handed over (deliver,
// complete). With no connection ready, a blocking accept waits among the
// listener's waiters until the event loop pumps one to it (pump), and a
// non-blocking one gets EAGAIN (waitOrAgain).

// acceptCall is one intercepted accept or accept4, waiting to be answered.
type acceptCall struct {
	id      uint64
	tid     int // the calling thread
	proc    *proc
	fd      int    // the listening fd in the caller
	addr    uint64 // caller's sockaddr buffer, or 0
	addrlen uint64 // caller's socklen_t, read only when addr != 0
	flags   int    // accept4 flags: SOCK_NONBLOCK, SOCK_CLOEXEC
	// deadline, for a non-blocking accept held while a connection's first
	// bytes arrive, is when it gets EAGAIN; zero for a blocking wait.
	deadline time.Time
	// waitingSince is when a blocking accept began to wait; one that
	// waits long is moved home (see goHome).
	waitingSince time.Time
}

// conn is a connection the supervisor accepted and has not yet handed over.
type conn struct {
	fd       int
	l        *listener
	nonblock bool
	peer     unix.RawSockaddrAny
	peerLen  uint32
	local    netip.AddrPort
	family   uint16
	// path is the path of c's Unix-domain listener (listener.path), which
	// stands for its local address: "" for a TCP connection.
	path     string
	decision Decision
	// namesApply says a host name may classify the connection (so its
	// first bytes were looked at, and full tracking looks at later
	// requests too).
	namesApply bool
	// host is the name the client asked for, when one was found.
	host string
	// trusted says connections to local come from a trusted proxy
	// (Classifier.ProxyTrusted); proxy is the PROXY protocol header the
	// connection's first bytes carried (Len 0: none).
	trusted bool
	proxy   vhost.ProxyHeader
	// cgidServer is the address a mod_cgid request on c names
	// (SERVER_ADDR:SERVER_PORT, cgid.go), which stands for its local
	// address as a trusted proxy's does; path is "" then.
	cgidServer netip.AddrPort
	// accepted and deadline bound the wait for the client's first bytes.
	accepted, deadline time.Time
	// held counts c until it is closed (Supervisor.held).
	held *heldCount
	// refusal, set when a cap refused c, says how (admission.go): c is
	// then answered by the supervisor, never handed over.
	refusal *Admission
}

func (c *conn) close() {
	unix.Close(c.fd)
	if c.held != nil {
		c.held.add(-1)
		c.held = nil
	}
}

// heldCount counts the connections the supervisor holds, accepted and not
// yet handed over or closed: the ones lost if it dies. A keeper watching
// (Options.InFlight) reads the count in the shared table, so the count
// lives there: receivers and the event loop change it at once, and a copy
// stored after each change could be overwritten by an older value.
//
// The count is an upper bound, never short: a connection counts from just
// before the accept that takes it (acceptHeld) until its fd here is closed,
// just after the server has it, and a supervisor killed on either side of
// those steps overstates the loss by that connection.
type heldCount struct {
	own   atomic.Int64
	table *failopen.Table
}

func (h *heldCount) add(d int64) {
	if h.table != nil {
		h.table.AddHeld(d)
		return
	}
	h.own.Add(d)
}

// n returns the count.
func (h *heldCount) n() int64 {
	if h.table != nil {
		return h.table.HeldNow()
	}
	return h.own.Load()
}

// handleAccept answers the accept (or, is4, accept4) notification n.
func (s *Supervisor) handleAccept(n *notification, is4 bool) {
	s.admissions.returned(int(n.Pid))
	call := acceptCall{
		id:      n.ID,
		tid:     int(n.Pid),
		fd:      int(int32(n.Data.Args[0])),
		addr:    n.Data.Args[1],
		addrlen: n.Data.Args[2],
	}
	if is4 {
		call.flags = int(int32(n.Data.Args[3]))
		if call.flags&^(unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC) != 0 {
			s.respond(call.id, respondErrno(s.notifyFd, call.id, 0, unix.EINVAL))
			return
		}
	}
	p, isNew, err := s.procs.lookup(s.notifyFd, int(n.Pid), n.ID)
	if err != nil {
		if err != unix.ENOENT {
			// Without the process there is nothing to emulate with; the
			// kernel can still do the accept, just without QoS.
			s.stats.Errors.Add(1)
			s.log.Warn("cannot emulate accept, letting the kernel do it", "tid", n.Pid, "err", err)
			s.respond(call.id, respondContinue(s.notifyFd, call.id))
		}
		return
	}
	if isNew {
		s.events.watchExit(p)
		// A threaded server says so at its first accept, not at its
		// first move (which under process placement never comes).
		p.mu.Lock()
		s.multiThreaded(p)
		p.mu.Unlock()
	}
	call.proc = p
	for attempt := 0; attempt < 3; attempt++ {
		l, errno, fallback := s.listenerFor(p, call.fd)
		if fallback {
			s.respond(call.id, respondContinue(s.notifyFd, call.id))
			return
		}
		if errno != 0 {
			s.respond(call.id, respondErrno(s.notifyFd, call.id, 0, errno))
			return
		}
		if s.shortcut && s.leaveToKernel(l, &call) {
			return
		}
		if s.acceptOn(l, &call) {
			return
		}
		// The copy was closed as idle under us; look the socket up afresh.
		p.mu.Lock()
		delete(p.listeners, call.fd)
		p.mu.Unlock()
	}
	s.respond(call.id, respondContinue(s.notifyFd, call.id))
}

// listenerFor finds the listening socket behind fd in p. The fast path is a
// single kcmp(2) confirming that fd still refers to the socket it referred
// to last time; otherwise the socket is copied with pidfd_getfd. Sockets that
// are not listening are not kept (a copy would hold the connection open):
// accept is tried on the copy to return the kernel's own errno.
func (s *Supervisor) listenerFor(p *proc, fd int) (l *listener, errno unix.Errno, fallback bool) {
	p.mu.Lock()
	l = p.listeners[fd]
	p.mu.Unlock()
	if l != nil && s.kcmpWorks && sameFile(p.tgid, fd, s.selfPid, l.fd) {
		return l, 0, false
	}
	copyFd, err := p.copyFd(fd)
	if err != nil {
		switch err {
		case unix.EBADF:
			return nil, unix.EBADF, false
		case unix.ESRCH:
			// The process is gone; so is its notification.
			s.forgetProc(p)
			return nil, unix.ESRCH, false
		default:
			s.log.Warn("cannot copy the listening socket, letting the kernel accept", "pid", p.tgid, "fd", fd, "err", err)
			return nil, 0, true
		}
	}
	var st unix.Stat_t
	if err := unix.Fstat(copyFd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		unix.Close(copyFd)
		return nil, unix.ENOTSOCK, false
	}
	if listening, err := unix.GetsockoptInt(copyFd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || listening == 0 {
		// accept on a socket that is not listening fails at once with the
		// kernel's own errno (EINVAL, EOPNOTSUPP); never blocks.
		nfd, _, e := unix.Syscall6(unix.SYS_ACCEPT4, uintptr(copyFd), 0, 0, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0, 0)
		if e == 0 {
			unix.Close(int(nfd))
			e = unix.EINVAL
		}
		unix.Close(copyFd)
		return nil, e, false
	}
	l = s.listeners.adopt(fileKey{dev: st.Dev, ino: st.Ino}, copyFd)
	p.mu.Lock()
	p.listeners[fd] = l
	p.mu.Unlock()
	return l, 0, false
}

// leaveToKernel answers call with "continue" when l's address alone
// decides the class of every connection it will produce: the process is
// placed and the listener marked (accepted sockets inherit its DSCP) before
// the kernel accepts, which costs a fraction of emulating the accept and
// keeps the kernel's own blocking and signal semantics.
func (s *Supervisor) leaveToKernel(l *listener, call *acceptCall) bool {
	cl := s.classifier.Load()
	l.mu.Lock()
	// A doorbell queued on this socket, its own or one rung for another
	// socket of its reuseport group, must not reach the server through a
	// kernel accept: the supervisor accepts while one is out.
	if l.closed || len(l.stash) > 0 || len(l.pending) > 0 || l.bell != nil || s.bells.toward(l) {
		l.mu.Unlock()
		return false
	}
	if l.fixedGen != cl.gen {
		l.fixed, l.fixedOK = listenerDecision(cl, l)
		l.fixedGen = cl.gen
	}
	if !l.fixedOK {
		l.mu.Unlock()
		return false
	}
	d := l.fixed
	if l.path != "" {
		// A unix socket carries no IP packets to mark, and the caps count
		// TCP connections only (sock_diag): nothing to do but place.
		l.continued = true
		l.touch()
		l.mu.Unlock()
		s.continueAccept(call, d)
		return true
	}
	if !l.fastNoted {
		l.fastNoted = true
		s.admissions.noteFast(l.bound)
	}
	if d.DSCP != l.markedDSCP || d.shaping() != l.shaped {
		s.markListener(l, d)
	}
	if l.drain > 0 {
		l.drain--
		l.mu.Unlock()
		return false
	}
	if d.Admission != nil && !s.admissions.reserve(call.tid, call.proc.tgid, call.fd, d) {
		// Near its cap a class counts each connection it admits, which
		// takes the connection in hand (admission.go).
		l.mu.Unlock()
		return false
	}
	l.continued = true
	l.touch()
	l.mu.Unlock()
	s.continueAccept(call, d)
	return true
}

// continueAccept places call's process in d's class and lets the kernel
// perform the accept.
func (s *Supervisor) continueAccept(call *acceptCall, d Decision) {
	s.place(call.proc, d.Group)
	err := respondContinue(s.notifyFd, call.id)
	if err == nil {
		// Counted as calls: a non-blocking accept may still find nothing,
		// though servers that poll first rarely call it in vain.
		s.stats.Continued.Add(1)
		s.countConnection(d.Group)
	}
	s.respond(call.id, err)
}

// listenerDecision is the Decision for every connection of l, when its
// address (or a Unix-domain listener's path) alone decides them.
func listenerDecision(cl Classifier, l *listener) (Decision, bool) {
	if l.cgid != nil {
		return Decision{}, false // each request names its vhost (cgid.go)
	}
	if l.path != "" {
		return cl.ListenerDecidesPath(l.path)
	}
	return cl.ClassifyListener(l.bound)
}

// acceptOn answers call from l: a stashed connection first, then one from
// the kernel's queue that is ready to hand over (connections whose host name
// has not arrived yet go to l.pending); with none, EAGAIN for a
// non-blocking listener, else the call waits in l until a connection is
// ready. It returns false if l was closed under it.
func (s *Supervisor) acceptOn(l *listener, call *acceptCall) bool {
	l.busy.Add(1)
	defer l.busy.Add(-1)
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	l.touch()
	if len(l.stash) > 0 {
		c := l.stash[0]
		l.stash = l.stash[1:]
		l.mu.Unlock()
		s.deliverOrRequeue(l, c, call)
		return true
	}
	// Each pass takes one connection from the kernel's queue; one that
	// must wait for its bytes does not keep the caller from the next,
	// except on mod_cgid's socket (inOrder).
	for range acceptBurst {
		if !readable(l.fd) || l.inOrder() {
			break
		}
		c, errno := s.acceptHeld(l, call.flags&unix.SOCK_NONBLOCK != 0)
		if errno == 0 && s.isDoorbell(l, c) {
			// Our own wake-up call: it did its job; look again.
			continue
		}
		l.mu.Unlock()
		switch errno {
		case 0:
			c.l = l
			if s.prepare(l, c) {
				s.deliverOrRequeue(l, c, call)
				return true
			}
		case unix.EAGAIN:
			// Taken by someone outside the filter; behave as if empty.
			return s.waitOrAgain(l, call)
		default:
			s.respond(call.id, respondErrno(s.notifyFd, call.id, 0, errno))
			return true
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return false
		}
	}
	l.mu.Unlock()
	return s.waitOrAgain(l, call)
}

// acceptHeld takes a connection from l's queue and counts it as held
// (Supervisor.held) until it is handed over or closed. It counts from
// before the accept: once the kernel has done it the connection is this
// process's, and a supervisor killed before it could count it would lose it
// unreported.
func (s *Supervisor) acceptHeld(l *listener, nonblock bool) (*conn, unix.Errno) {
	s.held.add(1)
	c, errno := acceptFrom(l.fd, nonblock)
	if errno != 0 {
		s.held.add(-1)
		return nil, errno
	}
	c.held = &s.held
	return c, 0
}

// acceptBurst bounds how many connections one accept takes from the
// kernel's queue while looking for one that is ready.
const acceptBurst = 16

// waitOrAgain handles an accept with nothing to accept.
func (s *Supervisor) waitOrAgain(l *listener, call *acceptCall) bool {
	flags, err := unix.FcntlInt(uintptr(l.fd), unix.F_GETFL, 0)
	if err == nil && flags&unix.O_NONBLOCK != 0 {
		l.mu.Lock()
		young := l.youngestPending().Add(shortWait)
		if l.closed || !time.Now().Before(young) {
			l.mu.Unlock()
			// A forking parent going back to poll() with nothing in hand
			// goes home in the sweep: checking here would read /proc for
			// every EAGAIN, which prefork servers racing for one
			// connection produce by the dozen.
			s.respond(call.id, respondErrno(s.notifyFd, call.id, 0, unix.EAGAIN))
			return true
		}
		// A connection taken for this caller a moment ago awaits its
		// first bytes: hold the call briefly rather than send the server
		// back to poll() for a connection it will then need a doorbell
		// to see.
		waiting := *call // the call itself lives on the receiver's stack
		waiting.deadline = young
		l.waiters = append(l.waiters, &waiting)
		l.mu.Unlock()
		s.events.after(young, l)
		return true
	}
	// A process waiting for a connection serves nobody, but it stays
	// where it is for now: a busy server's next connection comes within
	// moments, and moving home and back costs two cgroup migrations per
	// connection. The sweep moves long waiters home (goHome); a blocked
	// process uses no CPU where it sits.
	waiting := *call // the call itself lives on the receiver's stack
	waiting.waitingSince = time.Now()
	if s.track >= intercept.TrackFork {
		s.goHomeIfIdle(call.proc)
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	l.waiters = append(l.waiters, &waiting)
	if !l.polling {
		s.events.watchListener(l)
		l.polling = true
	}
	l.mu.Unlock()
	// A connection may have arrived between the check and the wait.
	s.pump(l)
	return true
}

// pump hands pending connections, stashed ones first, to waiting accepts
// until one side runs out. The event loop calls it when l is readable.
func (s *Supervisor) pump(l *listener) {
	l.busy.Add(1)
	defer l.busy.Add(-1)
	for {
		l.mu.Lock()
		if len(l.waiters) == 0 || l.closed {
			if l.polling && !l.closed {
				s.events.unwatch(l.fd)
				l.polling = false
			}
			l.mu.Unlock()
			return
		}
		var c *conn
		if len(l.stash) > 0 {
			c = l.stash[0]
			l.stash = l.stash[1:]
		} else if l.inOrder() {
			// Taken again when the pending one is ready (pendingReady).
			if l.polling {
				s.events.unwatch(l.fd)
				l.polling = false
			}
			l.mu.Unlock()
			return
		} else if l.hasBlockingWaiter() && readable(l.fd) {
			var errno unix.Errno
			c, errno = s.acceptHeld(l, false)
			if errno == unix.EAGAIN {
				l.mu.Unlock()
				return
			}
			if errno == 0 && s.isDoorbell(l, c) {
				l.mu.Unlock()
				continue
			}
			if errno != 0 {
				w := l.waiters[0]
				l.waiters = l.waiters[1:]
				l.mu.Unlock()
				s.respond(w.id, respondErrno(s.notifyFd, w.id, 0, errno))
				continue
			}
			c.l = l
			l.mu.Unlock()
			if !s.prepare(l, c) {
				continue // pending; the event loop hands it on (pendingReady)
			}
			l.mu.Lock()
			if len(l.waiters) == 0 || l.closed {
				// The waiter went while c was classified; keep c.
				l.mu.Unlock()
				s.requeue(l, c)
				return
			}
		} else {
			l.mu.Unlock()
			return
		}
		w := l.waiters[0]
		l.waiters = l.waiters[1:]
		l.touch()
		l.mu.Unlock()
		s.deliver(l, c, w)
	}
}

// hasBlockingWaiter reports whether some waiting accept may block: only
// those make the supervisor take connections from the kernel's queue on
// its own (a held non-blocking accept only waits for pending ones).
// Called with l.mu held.
func (l *listener) hasBlockingWaiter() bool {
	for _, w := range l.waiters {
		if w.deadline.IsZero() {
			return true
		}
	}
	return false
}

// dropWaiters takes the waiting accepts drop picks out of l's waiters,
// keeping the others in order, and returns them. Called with l.mu held.
func (l *listener) dropWaiters(drop func(*acceptCall) bool) (dropped []*acceptCall) {
	kept := l.waiters[:0]
	for _, w := range l.waiters {
		if drop(w) {
			dropped = append(dropped, w)
		} else {
			kept = append(kept, w)
		}
	}
	clear(l.waiters[len(kept):])
	l.waiters = kept
	return dropped
}

// callerWaits reports whether the caller of w is still in its accept: a
// signal or its death ends the call, not the supervisor's record of it.
func (s *Supervisor) callerWaits(w *acceptCall) bool { return idValid(s.notifyFd, w.id) }

// dropStaleWaiters forgets waiting accepts whose caller was interrupted or
// died, so the waiter list stays bounded with no traffic at all, and moves
// processes that have waited longer than goHome into the home cgroup.
func (s *Supervisor) dropStaleWaiters(l *listener) {
	l.mu.Lock()
	l.dropWaiters(func(w *acceptCall) bool { return !s.callerWaits(w) })
	var idle []*proc
	cutoff := time.Now().Add(-goHome)
	for _, w := range l.waiters {
		if !w.waitingSince.IsZero() && w.waitingSince.Before(cutoff) {
			idle = append(idle, w.proc)
		}
	}
	// Under l.mu: a waiter cannot be handed a connection (and placed in
	// its vhost) between the check and the move.
	for _, p := range idle {
		s.place(p, cgroup.HomeGroup)
	}
	l.mu.Unlock()
}

// goHome is how long a process waits in an emulated accept before it is
// moved to the home cgroup: an idle process should not count as the
// vhost's, a busy one should not pay two migrations per connection.
const goHome = time.Second

// deliverOrRequeue delivers c to call; if call went away, c goes to the next
// waiter or the stash.
func (s *Supervisor) deliverOrRequeue(l *listener, c *conn, call *acceptCall) {
	if !s.deliver(l, c, call) {
		s.pump(l)
	}
}

// deliver hands c to call: classify it once, put the caller's process in
// the class's cgroup, mark the socket, write the peer address into the
// caller and install the fd as the syscall's result. If the caller cannot
// take it (interrupted, died, no fd slot), c is put back at the head of the
// stash and deliver returns false.
func (s *Supervisor) deliver(l *listener, c *conn, call *acceptCall) bool {
	if hook := s.testHookBeforeDeliver.Load(); hook != nil {
		(*hook)(call.proc.tgid)
	}
	if s.track == intercept.TrackAccept {
		// Followed connections place their process in handOver, with the
		// record (see there).
		s.place(call.proc, c.decision.Group)
	}
	if want := call.flags&unix.SOCK_NONBLOCK != 0; want != c.nonblock {
		if err := unix.SetNonblock(c.fd, want); err == nil {
			c.nonblock = want
		}
	}
	if call.addr != 0 {
		// Writing into a thread that has left the syscall would corrupt
		// memory it now uses for something else.
		if !idValid(s.notifyFd, call.id) {
			s.requeue(l, c)
			return false
		}
		if errno := writePeer(call.proc.tgid, call.addr, call.addrlen, &c.peer, c.peerLen); errno != 0 {
			// The kernel would drop the connection here; keep it for the
			// next accept instead and report what the kernel reports.
			s.respond(call.id, respondErrno(s.notifyFd, call.id, 0, errno))
			s.requeue(l, c)
			return false
		}
	}
	if c.decision.Quota {
		// The caller now sits in a cgroup with a CPU quota: installing the
		// fd completes only when it runs, which may be most of a quota
		// period away, and the receiver must not wait for that.
		callCopy := *call
		l.busy.Add(1)
		s.handOvers.Add(1)
		go func() {
			defer s.handOvers.Done()
			defer l.busy.Add(-1)
			restore, err := quietThread()
			if err != nil {
				s.log.Warn("handing a connection over on a thread that takes signals", "err", err)
			}
			defer restore()
			if !s.complete(l, c, &callCopy) {
				s.pump(l)
			}
		}()
		return true
	}
	return s.complete(l, c, call)
}

// complete installs c in the caller as the result of its accept and counts
// it. If the caller cannot take it (interrupted, died, no fd slot), c is
// put back at the head of the stash and complete returns false.
func (s *Supervisor) complete(l *listener, c *conn, call *acceptCall) bool {
	err := s.handOver(call, c)
	if s.inFlight != nil && (err == nil || notificationGone(err)) {
		s.inFlight.Answered(call.id)
	}
	if err == nil {
		c.close()
		s.stats.Accepted.Add(1)
		s.countConnection(c.decision.Group)
		return true
	}
	if !notificationGone(err) {
		// EMFILE and the like: the caller's own accept would have failed
		// the same way before taking the connection.
		if errno, ok := err.(unix.Errno); ok {
			s.respond(call.id, respondErrno(s.notifyFd, call.id, 0, errno))
		}
	}
	s.requeue(l, c)
	return false
}

// requeue keeps c, accepted for a caller that could not take it, for the
// next accept on l: at the head of the stash, since it has waited longest,
// counted in Stats.Requeued. Unlike pendingReady it does not pump: every
// path that requeues pumps l itself afterwards (deliverOrRequeue, pump's
// own loop, the hand-over goroutine) or has just found no accept waiting.
func (s *Supervisor) requeue(l *listener, c *conn) {
	s.stats.Requeued.Add(1)
	l.mu.Lock()
	if !l.stashLocked(c, true) {
		l.mu.Unlock()
		c.close()
		return
	}
	s.ringIfNeeded(l)
	l.mu.Unlock()
}

// stashLocked puts c, classified and ready to hand over, in l's stash for
// the next accept: at the head when first, else at the tail. It reports
// false, keeping nothing, when l is closed. Called with l.mu held.
func (l *listener) stashLocked(c *conn, first bool) bool {
	if l.closed {
		return false
	}
	if first {
		l.stash = append([]*conn{c}, l.stash...)
	} else {
		l.stash = append(l.stash, c)
	}
	return true
}
