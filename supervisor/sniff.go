package supervisor

import (
	"slices"
	"sync"
	"time"
	"unsafe"

	"github.com/vhqos/vhqos/vhost"
	"golang.org/x/sys/unix"
)

// How connections whose host name may decide their vhost are handled.
//
// The supervisor accepts such a connection and looks at the client's first
// bytes with MSG_PEEK, so the server later reads every byte exactly as the
// client sent it. When the bytes are not all there yet the connection waits
// in the listener's pending list, watched by the event loop, while the
// server is handed other connections: a client that sends nothing delays
// nobody but itself. When the name is found, or the bytes show there is
// none, or the limits in bytes or time are reached, the connection is
// classified, marked, and handed to a waiting accept or kept in the stash,
// with the doorbell rung for a server that polls.
const (
	// shortWait is how long a non-blocking accept may be held when a
	// connection was accepted for it just now whose bytes are still on
	// their way: usually they follow within microseconds, and answering
	// EAGAIN would cost the server a trip back to poll() and the
	// supervisor a doorbell. Older pending connections never hold an
	// accept up.
	shortWait = 2 * time.Millisecond
	// maxPending bounds the connections waiting for their first bytes;
	// beyond it new ones are classified by address at once, so a flood of
	// silent clients cannot exhaust the supervisor's fds.
	maxPending = 4096
	// doorbellTimeout is how long a doorbell may stay queued before
	// another is rung. A process that accepts without asking the
	// supervisor (one that was already blocked in the kernel's accept when
	// a reload changed how its listener is handled) can take it; shutting
	// its sending side then lets that process read EOF at once instead of
	// waiting for a request that never comes.
	doorbellTimeout = time.Second
)

// peekBuffers are reused for peeking: a buffer per pending connection
// would cost 16 KiB for every silent client.
type peekBuffers struct{ pool sync.Pool }

func (b *peekBuffers) get(n int) *[]byte {
	if p, ok := b.pool.Get().(*[]byte); ok && cap(*p) >= n {
		*p = (*p)[:n]
		return p
	}
	buf := make([]byte, n)
	return &buf
}

func (b *peekBuffers) put(p *[]byte) { b.pool.Put(p) }

// prepare classifies a connection the supervisor just accepted from l: by
// its local address, or by the host name in its first bytes when a name
// may decide. It reports whether c is ready to hand over; if not, c waits
// in l.pending and the event loop finishes it.
func (s *Supervisor) prepare(l *listener, c *conn) bool {
	var sa unix.RawSockaddrAny
	salen := uint32(unix.SizeofSockaddrAny)
	if _, _, e := unix.RawSyscall(unix.SYS_GETSOCKNAME, uintptr(c.fd), uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&salen))); e == 0 {
		c.local = sockaddrToAddrPort(&sa)
		c.family = sa.Addr.Family
	}
	cl := s.classifier.Load()
	c.namesApply = cl.NamesApply(c.local)
	if !c.namesApply {
		s.finish(c, cl.ClassifyAddr(c.local))
		return true
	}
	if s.sniff(c, cl) {
		return true
	}
	if s.pendingCount.Load() >= maxPending {
		s.stats.NameFallbacks.Add(1)
		s.finish(c, cl.ClassifyAddr(c.local))
		return true
	}
	timeout, _ := cl.SniffLimits()
	now := time.Now()
	c.accepted = now
	c.deadline = now.Add(timeout)
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		s.finish(c, cl.ClassifyAddr(c.local))
		return true
	}
	if err := s.events.watchConn(c); err != nil {
		l.mu.Unlock()
		s.log.Warn("cannot wait for a client's first bytes; classifying by address", "local", c.local, "err", err)
		s.stats.NameFallbacks.Add(1)
		s.finish(c, cl.ClassifyAddr(c.local))
		return true
	}
	l.pending = append(l.pending, c)
	s.pendingCount.Add(1)
	l.mu.Unlock()
	s.events.after(c.deadline, l)
	return false
}

// sniff peeks at c's first bytes and classifies c if they decide: a name
// found, no name to be found (not HTTP/1.x or TLS, or no Host/SNI), the
// client closed its side, or the byte limit reached. It reports whether c
// was classified.
func (s *Supervisor) sniff(c *conn, cl *classifierGen) bool {
	_, limit := cl.SniffLimits()
	bufp := s.peekBufs.get(limit)
	defer s.peekBufs.put(bufp)
	buf := *bufp
	n, _, err := unix.Recvfrom(c.fd, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		n = 0
	case err != nil:
		// A reset or the like: the server will see the error when it
		// reads; what class serves it hardly matters.
		s.stats.NameFallbacks.Add(1)
		s.finishAddr(c, cl)
		return true
	case n == 0:
		s.stats.NameFallbacks.Add(1) // closed before sending anything
		s.finishAddr(c, cl)
		return true
	}
	name, res := vhost.SniffName(buf[:n])
	switch res {
	case vhost.Found:
		s.stats.NamesFound.Add(1)
		c.host = name
		s.finish(c, cl.ClassifyName(name, c.local))
		return true
	case vhost.NoName:
		s.stats.NameFallbacks.Add(1)
		s.finishAddr(c, cl)
		return true
	}
	if n >= limit || peerClosed(c.fd) {
		s.stats.NameFallbacks.Add(1)
		s.finishAddr(c, cl)
		return true
	}
	return false
}

func (s *Supervisor) finishAddr(c *conn, cl *classifierGen) {
	s.finish(c, cl.ClassifyAddr(c.local))
}

// peerClosed reports whether the client shut down its sending side, so no
// more bytes will come.
func peerClosed(fd int) bool {
	pfd := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
	n, _, e := unix.Syscall(unix.SYS_POLL, uintptr(unsafe.Pointer(&pfd[0])), 1, 0)
	return e == 0 && n > 0 && pfd[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
}

// sniffMore runs in the event loop when a pending connection got bytes.
func (s *Supervisor) sniffMore(c *conn) {
	l := c.l
	l.mu.Lock()
	if !slices.Contains(l.pending, c) {
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	if !s.sniff(c, s.classifier.Load()) {
		return
	}
	s.settle(l, c)
}

// settle takes a classified connection out of l's pending list and hands it
// to the first waiting accept, or stashes it and rings the doorbell.
func (s *Supervisor) settle(l *listener, c *conn) {
	s.events.unwatchConn(c)
	l.mu.Lock()
	if i := slices.Index(l.pending, c); i >= 0 {
		l.pending = slices.Delete(l.pending, i, i+1)
		s.pendingCount.Add(-1)
	}
	if l.closed {
		l.mu.Unlock()
		c.close()
		return
	}
	l.stash = append(l.stash, c)
	if len(l.waiters) > 0 {
		l.mu.Unlock()
		s.pump(l)
		return
	}
	s.ringIfNeeded(l)
	l.mu.Unlock()
}

// expire runs in the event loop when one of l's deadlines may have passed:
// connections that sent no name in time get the address's class, short
// waits end with EAGAIN, an old doorbell is taken back, and one that
// another socket took is rung again.
func (s *Supervisor) expire(l *listener, now time.Time) {
	l.mu.Lock()
	var late []*conn
	for _, c := range l.pending {
		if !c.deadline.After(now) {
			late = append(late, c)
		}
	}
	var ended []*acceptCall
	kept := l.waiters[:0]
	for _, w := range l.waiters {
		if !w.deadline.IsZero() && !w.deadline.After(now) {
			ended = append(ended, w)
		} else {
			kept = append(kept, w)
		}
	}
	clear(l.waiters[len(kept):])
	l.waiters = kept
	s.checkDoorbell(l, now)
	l.mu.Unlock()
	for _, w := range ended {
		s.respond(w.id, respondErrno(s.notifyFd, w.id, 0, unix.EAGAIN))
	}
	cl := s.classifier.Load()
	for _, c := range late {
		// Bytes that came while the loop was busy still count: look once
		// more before falling back.
		if !s.sniff(c, cl) {
			s.stats.NameTimeouts.Add(1)
			s.finishAddr(c, cl)
		}
		s.settle(l, c)
	}
}

// youngestPending returns when the newest pending connection of l was
// accepted. Called with l.mu held.
func (l *listener) youngestPending() time.Time {
	var t time.Time
	for _, c := range l.pending {
		if c.accepted.After(t) {
			t = c.accepted
		}
	}
	return t
}

// finish records c's class and gives its socket the class's mark; a class
// without a mark gets the listener's own. Called without c.l.mu held.
func (s *Supervisor) finish(c *conn, d Decision) {
	c.decision = d
	dscp := d.DSCP
	if dscp < 0 {
		// No mark of its own: the connection keeps the listener's. If
		// vhqos ever marked the listener, the connection may have been
		// made with a class's mark since taken back: give it the
		// listener's own.
		l := c.l
		l.mu.Lock()
		if l.everMarked {
			dscp = l.ownDSCP
		}
		l.mu.Unlock()
	}
	if dscp >= 0 {
		if err := markDSCP(c.fd, c.family, dscp); err != nil {
			s.stats.Errors.Add(1)
			s.log.Warn("setting DSCP on a connection", "local", c.local, "dscp", d.DSCP, "err", err)
		}
	}
}
