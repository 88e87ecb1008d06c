package supervisor

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Doorbells.
//
// A server that polls its listener before it accepts cannot see a
// connection the supervisor keeps for it (in the listener's stash): the
// kernel's queue no longer holds it. The supervisor then rings a doorbell:
// it connects to the listener's address itself, which makes the listener
// readable, and drops that connection when an accept takes it from a queue.
//
// The kernel decides which socket gets a connection to an address, and
// with SO_REUSEPORT several sockets share one address (nginx's "listen ...
// reuseport" gives each worker its own): the doorbell rung for one may be
// queued on another, where another process accepts it. So doorbells are
// known supervisor-wide, by both ends, and recognised on whichever
// listener they are accepted; one the kernel gave to another socket did
// not wake its own listener's server, which is rung for again at once.
// Counting a doorbell as a client's connection, or handing it to a server
// as one, is what this prevents.

// doorbell is one wake-up connection of the supervisor's own.
type doorbell struct {
	fd int // the supervisor's end; owned by the bellTable
	// from is the doorbell's own address and port, to the listener's
	// address it connected to: a connection with both is this doorbell.
	from, to netip.AddrPort
	// fromPath and toPath are the same for a unix-domain listener: the
	// doorbell's own abstract name, which the kernel chose (autobind)
	// and no other socket has while it is open, and the listener's path.
	fromPath, toPath string
	owner            *listener // the listener it was rung for
	rung             time.Time
	// retired says it is no longer its owner's current doorbell: nobody
	// took it in doorbellTimeout. Its sending side is shut, so a process
	// that took it with the kernel's own accept reads EOF; it is still
	// recognised wherever the supervisor accepts it, until it is gone.
	// Guarded by the table's lock.
	retired bool
	// answered is set once it is out of every queue: accepted by the
	// supervisor (on any listener) or closed by whoever took it.
	answered atomic.Bool
}

// doorbellTimeout is how long a doorbell may stay queued before another
// is rung. A process that accepts without asking the supervisor (one that
// was already blocked in the kernel's accept when a reload changed how its
// listener is handled) can take it; shutting its sending side then lets
// that process read EOF at once instead of waiting for a request that
// never comes.
const doorbellTimeout = time.Second

// maxStrays bounds how often a listener is rung for again at once, within
// doorbellTimeout, because its doorbell was taken by another socket of its
// reuseport group; after that it waits for the doorbell's timer. With N
// sockets in a group a doorbell reaches its own in N tries on average; the
// bound keeps a socket that no doorbell can reach (one shut down for
// reading, say) from ringing without end.
const maxStrays = 32

// maxRetiredBells bounds the retired doorbells kept per listening socket;
// beyond it the oldest is closed and forgotten. Retired ones pile up only
// while a socket that got them never accepts.
const maxRetiredBells = 16

// bellTable holds every doorbell not yet answered.
type bellTable struct {
	// n is len(bells): with no doorbell out, the check every accepted
	// connection passes through is one atomic load.
	n     atomic.Int32
	mu    sync.Mutex
	bells []*doorbell
}

// connect makes a doorbell: connects fd to sa and, once its own address
// is known, adds it. On loopback the handshake completes within connect,
// and another listener's accept may take the doorbell at once: the table
// is held, and counts one more, from before the connect, so that accept
// waits in take until the doorbell is known.
func (t *bellTable) connect(fd int, sa unix.Sockaddr, to netip.AddrPort, toPath string, owner *listener) (*doorbell, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n.Add(1)
	defer func() { t.n.Store(int32(len(t.bells))) }()
	b := &doorbell{fd: fd, to: to, toPath: toPath, owner: owner}
	if toPath != "" {
		// A unix client has no name unless it binds: an empty address
		// asks the kernel for a unique abstract one.
		if err := unix.Bind(fd, &unix.SockaddrUnix{}); err != nil {
			return nil, fmt.Errorf("binding a doorbell: %w", err)
		}
		name, ok := unixPathOf(fd)
		if !ok || name == "" {
			return nil, errors.New("a doorbell got no abstract name")
		}
		b.fromPath = name
	}
	if err := unix.Connect(fd, sa); err != nil && err != unix.EINPROGRESS && err != unix.EAGAIN {
		return nil, err
	}
	if toPath == "" {
		from, _, err := localAddrOf(fd)
		if err != nil {
			return nil, err
		}
		b.from = from
	}
	b.rung = time.Now()
	t.bells = append(t.bells, b)
	return b, nil
}

// removeLocked drops bells[i] and closes its end. Called with t.mu held.
func (t *bellTable) removeLocked(i int) {
	b := t.bells[i]
	unix.Close(b.fd)
	b.answered.Store(true)
	t.bells = slices.Delete(t.bells, i, i+1)
	t.n.Store(int32(len(t.bells)))
}

// take reports whether c, just accepted from some listener, is one of the
// supervisor's doorbells: its peer is a doorbell's own end and its local
// address the one that doorbell connected to. If so the doorbell is
// removed and its end closed; current says it was still its owner's
// current one (not retired).
func (t *bellTable) take(c *conn) (b *doorbell, current bool) {
	if t.n.Load() == 0 {
		return nil, false
	}
	if peerPath, ok := unixNameOf(&c.peer, c.peerLen); ok {
		t.mu.Lock()
		defer t.mu.Unlock()
		for i, b := range t.bells {
			if b.toPath != "" && b.fromPath == peerPath {
				current := !b.retired
				t.removeLocked(i)
				return b, current
			}
		}
		return nil, false
	}
	peer, _ := addrPortOf(&c.peer)
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, b := range t.bells {
		if b.toPath != "" {
			continue
		}
		// A client may connect from the doorbell's address and port to
		// another local address (of a wildcard listener): both ends must
		// match. The doorbell's socket is open as long as it is in the
		// table, so no other connection has both.
		if b.from != peer {
			continue
		}
		local, _, err := localAddrOf(c.fd)
		if err != nil {
			return nil, false
		}
		if local != b.to {
			continue
		}
		current := !b.retired
		t.removeLocked(i)
		return b, current
	}
	return nil, false
}

// toward reports whether a doorbell to l may still be queued on a socket
// sharing its address (its port, and address unless it is a wildcard; a
// unix listener's path), where a kernel accept would hand it to the
// server.
func (t *bellTable) toward(l *listener) bool {
	if t.n.Load() == 0 {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, b := range t.bells {
		switch {
		case l.path != "" || b.toPath != "":
			if b.toPath == l.path {
				return true
			}
		case b.to.Port() == l.bound.Port() && (l.bound.Addr().IsUnspecified() || b.to.Addr() == l.bound.Addr()):
			return true
		}
	}
	return false
}

// retire marks b as no longer its owner's current doorbell and shuts its
// sending side; it stays recognisable until it is accepted or gone. Of a
// socket's retired doorbells only the newest maxRetiredBells are kept.
func (t *bellTable) retire(b *doorbell) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if b.answered.Load() {
		return
	}
	b.retired = true
	unix.Shutdown(b.fd, unix.SHUT_WR)
	n := 0
	for i := len(t.bells) - 1; i >= 0; i-- {
		o := t.bells[i]
		if !o.retired || o.owner.key != b.owner.key {
			continue
		}
		if n++; n > maxRetiredBells {
			t.removeLocked(i)
		}
	}
}

// sweep forgets doorbells that are gone: taken by a process that accepted
// without the supervisor and closed (or answered) it, or reset because
// their listener closed. It returns the owners of those that were still
// current: their servers may not have been woken.
func (t *bellTable) sweep() (owners []*listener) {
	if t.n.Load() == 0 {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.bells) == 0 {
		// n counted a doorbell being connected, which failed meanwhile.
		return nil
	}
	pfds := make([]unix.PollFd, len(t.bells))
	for i, b := range t.bells {
		pfds[i] = unix.PollFd{Fd: int32(b.fd), Events: unix.POLLIN | unix.POLLRDHUP}
	}
	if n, _, e := unix.Syscall(unix.SYS_POLL, uintptr(unsafe.Pointer(&pfds[0])), uintptr(len(pfds)), 0); e != 0 || n == 0 {
		return nil
	}
	for i := len(pfds) - 1; i >= 0; i-- {
		if pfds[i].Revents == 0 {
			continue
		}
		if b := t.bells[i]; !b.retired {
			owners = append(owners, b.owner)
		}
		t.removeLocked(i)
	}
	return owners
}

func (t *bellTable) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(t.bells) > 0 {
		t.removeLocked(len(t.bells) - 1)
	}
}

func (t *bellTable) size() int { return int(t.n.Load()) }

// ringIfNeeded rings l's doorbell when a kept connection waits in l's
// stash and no accept waits on l. It rings even when l's queue holds
// connections already: a server whose epoll watches the listener
// edge-triggered is woken only by a connection arriving. Called with l.mu
// held.
func (s *Supervisor) ringIfNeeded(l *listener) {
	if l.closed || l.bell != nil || len(l.stash) == 0 || len(l.waiters) > 0 {
		return
	}
	s.ringDoorbell(l)
}

// ringDoorbell queues a connection of the supervisor's own on l, so that a
// server waiting in poll() or select() for l to become readable wakes up
// and accepts, and gets the stashed connection. Without it a server whose
// accept a signal interrupted (returning EINTR, back to poll) would leave
// the stashed client waiting for the next client. Called with l.mu held.
func (s *Supervisor) ringDoorbell(l *listener) {
	if l.path != "" {
		s.ringUnixDoorbell(l)
		return
	}
	target := l.bound
	if target.Addr().IsUnspecified() {
		lo := netip.IPv6Loopback()
		if target.Addr().Is4() {
			lo = netip.AddrFrom4([4]byte{127, 0, 0, 1})
		}
		target = netip.AddrPortFrom(lo, target.Port())
	}
	var sa unix.Sockaddr
	family := unix.AF_INET
	if target.Addr().Is4() {
		sa = &unix.SockaddrInet4{Port: int(target.Port()), Addr: target.Addr().As4()}
	} else {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(target.Port()), Addr: target.Addr().As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		s.log.Warn("waking the server for a kept connection", "addr", target, "err", err)
		return
	}
	b, err := s.bells.connect(fd, sa, target, "", l)
	if err != nil {
		unix.Close(fd)
		s.log.Warn("waking the server for a kept connection", "addr", target, "err", err)
		return
	}
	l.bell = b
	s.events.after(b.rung.Add(doorbellTimeout), l)
}

// ringUnixDoorbell is ringDoorbell for a unix-domain listener. Called with
// l.mu held.
func (s *Supervisor) ringUnixDoorbell(l *listener) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		s.log.Warn("waking the server for a kept connection", "path", l.path, "err", err)
		return
	}
	b, err := s.bells.connect(fd, &unix.SockaddrUnix{Name: l.path}, netip.AddrPort{}, l.path, l)
	if err != nil {
		unix.Close(fd)
		s.log.Warn("waking the server for a kept connection", "path", l.path, "err", err)
		return
	}
	l.bell = b
	s.events.after(b.rung.Add(doorbellTimeout), l)
}

// isDoorbell reports whether c, just accepted from l, is one of the
// supervisor's doorbells, rung for l or for another socket, and if so
// closes it. Called with l.mu held.
func (s *Supervisor) isDoorbell(l *listener, c *conn) bool {
	b, current := s.bells.take(c)
	if b == nil {
		return false
	}
	c.close()
	switch {
	case b.owner == l:
		if l.bell == b {
			l.bell = nil
			l.strays = 0
		}
	case current && l.bound == b.owner.bound:
		// The kernel queued it on another socket of the owner's
		// reuseport group: the owner's server was not woken. The event
		// loop rings for it again (its lock cannot be taken under l's).
		// A socket bound more specifically (127.0.0.1 beside a wildcard)
		// would take the next one too: that owner waits for its timer.
		s.events.after(time.Now(), b.owner)
	}
	return true
}

// checkDoorbell settles l's current doorbell in the event loop: one
// answered elsewhere is forgotten, one nobody took in doorbellTimeout is
// retired; then l is rung for again if a kept connection still waits.
// Called with l.mu held.
func (s *Supervisor) checkDoorbell(l *listener, now time.Time) {
	if b := l.bell; b != nil {
		switch {
		case now.Sub(b.rung) >= doorbellTimeout:
			s.bells.retire(b) // nothing to do if it was answered
			l.bell = nil
			l.strays = 0
		case b.answered.Load():
			if l.strays >= maxStrays {
				return // the doorbell's own timer rings again
			}
			l.strays++
			l.bell = nil
		}
	}
	s.ringIfNeeded(l)
}
