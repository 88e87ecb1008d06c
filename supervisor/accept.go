package supervisor

import (
	"encoding/binary"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/vhqos/vhqos/cgroup"
	"github.com/vhqos/vhqos/intercept"
	"golang.org/x/sys/unix"
)

// acceptCall is one intercepted accept or accept4, waiting to be answered.
type acceptCall struct {
	id      uint64
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
	decision Decision
	// namesApply says a host name may classify the connection (so its
	// first bytes were looked at, and full tracking looks at later
	// requests too).
	namesApply bool
	// host is the name the client asked for, when one was found.
	host string
	// accepted and deadline bound the wait for the client's first bytes.
	accepted, deadline time.Time
}

func (c *conn) close() { unix.Close(c.fd) }

// fileKey identifies a socket independently of the fd numbers pointing to it.
type fileKey struct{ dev, ino uint64 }

// listener is the supervisor's copy of one listening socket, shared by every
// process and fd that refers to it (prefork children inherit one listener).
type listener struct {
	key fileKey
	fd  int

	mu sync.Mutex
	// stash holds classified connections no accept is waiting for: ones
	// accepted for a caller that went away before it could take them (a
	// signal interrupted it), and ones whose host name arrived after the
	// accept they were taken for had been answered. The next accept on
	// this socket gets them first, so no client is dropped.
	stash []*conn
	// pending are connections waiting for the first bytes that name
	// their host (see sniff.go).
	pending []*conn
	// waiters are blocking accepts with nothing to accept yet, oldest first.
	waiters []*acceptCall
	polling bool // in the event loop's epoll set
	closed  bool

	// bound is the listener's own address. When the table decides every
	// connection from it alone, fixed holds that decision for table
	// generation fixedGen, and accepts are left to the kernel.
	bound    netip.AddrPort
	family   uint16
	fixedGen uint64
	fixedOK  bool
	fixed    Decision
	// markedDSCP is the class DSCP vhqos set on the listener itself
	// (inherited by its connections and carried by the SYN-ACK), or -1
	// while it carries its own mark, ownDSCP.
	markedDSCP int
	ownDSCP    int
	everMarked bool
	// continued says an accept on this socket was ever left to the kernel.
	// It and the marks are remembered across expiry of the copy (in
	// listenerTable.remembered): the socket keeps its mark and its blocked
	// accepts when the supervisor's copy goes.
	continued bool
	// bell is the supervisor's own connection, queued on the listener to
	// make it readable for a server that polls before it accepts, after a
	// connection went to the stash (the kernel's queue no longer shows
	// it); nil when none (see doorbell.go). strays counts its doorbells
	// taken by other sockets since one was last answered here or timed out.
	bell   *doorbell
	strays int
	// drain counts the connections that were already queued when the
	// listener's mark changed: they were created with the old mark, so
	// that many accepts are emulated (and each connection marked).
	drain uint32

	lastUsed atomic.Int64 // unix nanoseconds
	// busy counts accepts and pumps under way, which may hold a
	// connection outside the stash: the copy is not expired under them,
	// or a connection they had to put back would be lost with it.
	busy atomic.Int32
}

func (l *listener) touch() { l.lastUsed.Store(time.Now().UnixNano()) }

// listenerTable holds every listening socket copy by identity.
type listenerTable struct {
	mu    sync.Mutex
	byKey map[fileKey]*listener
	// remembered keeps what an expired copy knew that the socket itself
	// does not say: that processes may still be blocked in accepts left
	// to the kernel, and which mark is vhqos's and which the server's own.
	// Entries go when the socket does (the sweep's sock_diag dump).
	remembered map[fileKey]listenerMemory
}

type listenerMemory struct {
	continued, everMarked bool
	markedDSCP, ownDSCP   int
}

func newListenerTable() *listenerTable {
	return &listenerTable{byKey: map[fileKey]*listener{}, remembered: map[fileKey]listenerMemory{}}
}

// adopt returns the listener for key, taking ownership of fd when it is the
// first copy and closing it otherwise.
func (t *listenerTable) adopt(key fileKey, fd int) *listener {
	t.mu.Lock()
	defer t.mu.Unlock()
	if l := t.byKey[key]; l != nil {
		unix.Close(fd)
		return l
	}
	l := &listener{key: key, fd: fd, fixedGen: ^uint64(0), markedDSCP: -1}
	if m, ok := t.remembered[key]; ok {
		l.continued, l.everMarked, l.markedDSCP, l.ownDSCP = m.continued, m.everMarked, m.markedDSCP, m.ownDSCP
		delete(t.remembered, key)
	}
	if sa, err := unix.Getsockname(fd); err == nil {
		l.bound, l.family = sockaddrAddrPort(sa)
	}
	l.touch()
	t.byKey[key] = l
	return l
}

// all returns the current copies.
func (t *listenerTable) all() []*listener {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Collect(maps.Values(t.byKey))
}

// forgetGone drops the memory of sockets that no longer exist.
func (t *listenerTable) forgetGone(live map[uint64]bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for key := range t.remembered {
		if !live[key.ino] {
			delete(t.remembered, key)
		}
	}
}

func (t *listenerTable) rememberedCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.remembered)
}

func (t *listenerTable) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byKey)
}

// expire closes copies unused for longer than idle that nobody waits on, so
// a socket the server closed is not kept open by vhqos. A doorbell still
// out is retired: it stays recognisable wherever it is accepted.
func (t *listenerTable) expire(idle time.Duration, ev *eventLoop, bells *bellTable) {
	cutoff := time.Now().Add(-idle).UnixNano()
	t.mu.Lock()
	defer t.mu.Unlock()
	for key, l := range t.byKey {
		if l.lastUsed.Load() > cutoff {
			continue
		}
		l.mu.Lock()
		if len(l.waiters) == 0 && len(l.stash) == 0 && len(l.pending) == 0 && l.busy.Load() == 0 {
			if l.polling {
				ev.unwatch(l.fd)
				l.polling = false
			}
			l.closed = true
			if l.bell != nil {
				bells.retire(l.bell)
				l.bell = nil
			}
			unix.Close(l.fd)
			delete(t.byKey, key)
			if l.continued || l.everMarked {
				t.remembered[key] = listenerMemory{continued: l.continued, everMarked: l.everMarked, markedDSCP: l.markedDSCP, ownDSCP: l.ownDSCP}
			}
		}
		l.mu.Unlock()
	}
}

func (t *listenerTable) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for key, l := range t.byKey {
		l.mu.Lock()
		for _, c := range l.stash {
			c.close()
		}
		for _, c := range l.pending {
			c.close()
		}
		l.stash, l.pending = nil, nil
		l.waiters = nil
		l.closed = true
		l.bell = nil // closed with the bell table
		unix.Close(l.fd)
		l.mu.Unlock()
		delete(t.byKey, key)
	}
}

func (s *Supervisor) handleAccept(n *notification, is4 bool) {
	call := acceptCall{
		id:      n.ID,
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
		// The copy was expired under us; look the socket up afresh.
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
	if l.closed || len(l.stash) > 0 || len(l.pending) > 0 || l.bell != nil || s.bells.toward(l.bound) {
		l.mu.Unlock()
		return false
	}
	if l.fixedGen != cl.gen {
		l.fixed, l.fixedOK = cl.ClassifyListener(l.bound)
		l.fixedGen = cl.gen
	}
	if !l.fixedOK {
		l.mu.Unlock()
		return false
	}
	d := l.fixed
	if d.DSCP != l.markedDSCP {
		s.markListener(l, d.DSCP)
	}
	if l.drain > 0 {
		l.drain--
		l.mu.Unlock()
		return false
	}
	l.continued = true
	l.touch()
	l.mu.Unlock()
	s.place(call.proc, d.Group)
	err := respondContinue(s.notifyFd, call.id)
	if err == nil {
		// Counted as calls: a non-blocking accept may still find nothing,
		// though servers that poll first rarely call it in vain.
		s.stats.Continued.Add(1)
		s.countConnection(d.Group)
	}
	s.respond(call.id, err)
	return true
}

// markListener gives the listener the class's DSCP, or back its own mark
// when the class has none (a vhost lost its dscp or left the table). Called
// with l.mu held.
func (s *Supervisor) markListener(l *listener, dscp int) {
	if !l.everMarked {
		l.ownDSCP = currentDSCP(l.fd, l.family)
		l.everMarked = true
	}
	target := dscp
	if target < 0 {
		target = l.ownDSCP
	}
	if err := markDSCP(l.fd, l.family, target); err != nil {
		s.log.Warn("setting DSCP on a listening socket", "addr", l.bound, "err", err)
		return
	}
	l.markedDSCP = dscp
	// Connections already queued were made with the old mark. Only a
	// non-blocking listener can be drained safely: on a blocking one a
	// process the kernel is already accepting for may win a queued
	// connection after our poll saw it, and our accept would block. Before
	// the first "continue" on it no kernel accept can be under way, so the
	// first marking always drains.
	if flags, err := unix.FcntlInt(uintptr(l.fd), unix.F_GETFL, 0); !l.continued || err == nil && flags&unix.O_NONBLOCK != 0 {
		l.drain = acceptQueueLen(l.fd)
	}
}

func currentDSCP(fd int, family uint16) int {
	level, opt := unix.IPPROTO_IP, unix.IP_TOS
	if family == unix.AF_INET6 {
		level, opt = unix.IPPROTO_IPV6, unix.IPV6_TCLASS
	}
	v, err := unix.GetsockoptInt(fd, level, opt)
	if err != nil {
		return 0
	}
	return v >> 2
}

func sockaddrAddrPort(sa unix.Sockaddr) (netip.AddrPort, uint16) {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)), unix.AF_INET
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port)), unix.AF_INET6
	}
	return netip.AddrPort{}, 0
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
	// must wait for its bytes does not keep the caller from the next.
	for range acceptBurst {
		if !readable(l.fd) {
			break
		}
		c, errno := acceptFrom(l.fd, call.flags&unix.SOCK_NONBLOCK != 0)
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
		} else if l.hasBlockingWaiter() && readable(l.fd) {
			var errno unix.Errno
			c, errno = acceptFrom(l.fd, false)
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
				continue // pending; the event loop settles it
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

// dropStaleWaiters forgets waiting accepts whose caller was interrupted or
// died, so the waiter list stays bounded with no traffic at all, and moves
// processes that have waited longer than goHome into the home cgroup.
func (s *Supervisor) dropStaleWaiters(l *listener) {
	l.mu.Lock()
	kept := l.waiters[:0]
	var idle []*proc
	cutoff := time.Now().Add(-goHome)
	for _, w := range l.waiters {
		if idValid(s.notifyFd, w.id) {
			kept = append(kept, w)
			if !w.waitingSince.IsZero() && w.waitingSince.Before(cutoff) {
				idle = append(idle, w.proc)
			}
		}
	}
	clear(l.waiters[len(kept):])
	l.waiters = kept
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
		if errno := writePeer(call, c); errno != 0 {
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

func (s *Supervisor) requeue(l *listener, c *conn) {
	s.stats.Requeued.Add(1)
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		c.close()
		return
	}
	l.stash = append([]*conn{c}, l.stash...)
	s.ringIfNeeded(l)
	l.mu.Unlock()
}

// acceptFrom accepts one connection from our copy of a listener. The copy
// is always close-on-exec on our side; O_NONBLOCK is the caller's choice.
func acceptFrom(lfd int, nonblock bool) (*conn, unix.Errno) {
	c := &conn{peerLen: unix.SizeofSockaddrAny, nonblock: nonblock}
	flags := unix.SOCK_CLOEXEC
	if nonblock {
		flags |= unix.SOCK_NONBLOCK
	}
	fd, _, e := unix.Syscall6(unix.SYS_ACCEPT4, uintptr(lfd), uintptr(unsafe.Pointer(&c.peer)), uintptr(unsafe.Pointer(&c.peerLen)), uintptr(flags), 0, 0)
	if e != 0 {
		return nil, e
	}
	c.fd = int(fd)
	return c, 0
}

// acceptQueueLen is how many connections wait in a listener's accept
// queue; for a listening socket TCP_INFO reports it as tcpi_unacked. On
// error it assumes the backlog is full, so that nothing escapes a drain.
func acceptQueueLen(fd int) uint32 {
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 1 << 16
	}
	return info.Unacked
}

// readable polls fd without waiting.
func readable(fd int) bool {
	pfd := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, _, e := unix.Syscall(unix.SYS_POLL, uintptr(unsafe.Pointer(&pfd[0])), 1, 0)
	return e == 0 && n > 0 && pfd[0].Revents != 0
}

// writePeer does what the kernel's move_addr_to_user does for accept: read
// the caller's buffer length, write as much of the address as fits, then
// store the address's full length.
func writePeer(call *acceptCall, c *conn) unix.Errno {
	pid := call.proc.tgid
	var lenBuf [4]byte
	local := []unix.Iovec{{Base: &lenBuf[0], Len: 4}}
	remote := []unix.RemoteIovec{{Base: uintptr(call.addrlen), Len: 4}}
	if n, err := unix.ProcessVMReadv(pid, local, remote, 0); err != nil || n != 4 {
		return unix.EFAULT
	}
	avail := int32(binary.NativeEndian.Uint32(lenBuf[:]))
	if avail < 0 {
		return unix.EINVAL
	}
	n := min(uint32(avail), c.peerLen)
	var full [4]byte
	binary.NativeEndian.PutUint32(full[:], c.peerLen)
	peer := (*[unix.SizeofSockaddrAny]byte)(unsafe.Pointer(&c.peer))
	local = local[:0]
	remoteW := make([]unix.RemoteIovec, 0, 2)
	if n > 0 {
		local = append(local, unix.Iovec{Base: &peer[0], Len: uint64(n)})
		remoteW = append(remoteW, unix.RemoteIovec{Base: uintptr(call.addr), Len: int(n)})
	}
	local = append(local, unix.Iovec{Base: &full[0], Len: 4})
	remoteW = append(remoteW, unix.RemoteIovec{Base: uintptr(call.addrlen), Len: 4})
	if w, err := unix.ProcessVMWritev(pid, local, remoteW, 0); err != nil || w != int(n)+4 {
		return unix.EFAULT
	}
	return 0
}

func sockaddrToAddrPort(sa *unix.RawSockaddrAny) netip.AddrPort {
	switch sa.Addr.Family {
	case unix.AF_INET:
		in := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&in.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom4(in.Addr), port)
	case unix.AF_INET6:
		in6 := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&in6.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom16(in6.Addr).Unmap(), port)
	}
	return netip.AddrPort{}
}

// sameFile asks kcmp(2) whether fd in process pid and ourFd here are the
// same open file.
func sameFile(pid, fd, self, ourFd int) bool {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid), uintptr(self), kcmpFile, uintptr(fd), uintptr(ourFd), 0)
	return e == 0 && r == 0
}

const kcmpFile = 0 // KCMP_FILE

func kcmpAvailable() bool {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return false
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	dup, err := unix.FcntlInt(uintptr(p[0]), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(dup)
	self := unix.Getpid()
	return sameFile(self, p[0], self, dup) && !sameFile(self, p[0], self, p[1])
}
