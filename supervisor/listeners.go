package supervisor

import (
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The listener registry: the supervisor's copies of the server's listening
// sockets, one per socket however many processes and fds refer to it, each
// with what waits on it (stashed and pending connections, waiting
// accepts). A copy unused for a while is closed (closeIdle), so that vhqos
// does not keep open a socket the server has closed; what the copy knew
// about the socket's marks is remembered until the socket is gone.

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
	// their host (see pending.go).
	pending []*conn
	// waiters are blocking accepts with nothing to accept yet, oldest first.
	waiters []*acceptCall
	polling bool // in the event loop's epoll set
	closed  bool

	// bound is the listener's own address. When the table decides every
	// connection from it alone, fixed holds that decision for table
	// generation fixedGen, and accepts are left to the kernel.
	bound  netip.AddrPort
	family uint16
	// path is what a Unix-domain listener is bound to ("/run/php/a.sock",
	// "@abstract"; "" for an unnamed one or another family): its
	// connections have no local address, so rules match them by path.
	path string
	// cgid is set when path is mod_cgid's ScriptSock: its connections are
	// classified by the CGI request they carry (cgid.go).
	cgid     *cgidState
	fixedGen uint64
	fixedOK  bool
	fixed    Decision
	// markedDSCP is the class DSCP vhqos set on the listener itself
	// (inherited by its connections and carried by the SYN-ACK), or -1
	// while it carries its own mark, ownDSCP.
	markedDSCP int
	ownDSCP    int
	everMarked bool
	// shaped is the class shaping (mark and pacing cap) vhqos set on the
	// listener, inherited by its connections, or zero while it carries
	// its own, ownShaping, saved when it was first shaped (shape.go).
	shaped     shaping
	ownShaping shaping
	everShaped bool
	// continued says an accept on this socket was ever left to the kernel.
	// It and the marks are remembered across expiry of the copy (in
	// listenerTable.remembered): the socket keeps its mark and its blocked
	// accepts when the supervisor's copy goes.
	continued bool
	// fastNoted says the admission record knows that accepts on this
	// socket are left to the kernel.
	fastNoted bool
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
	// connection outside the stash: the copy is not closed as idle under them,
	// or a connection they had to put back would be lost with it.
	busy atomic.Int32
}

func (l *listener) touch() { l.lastUsed.Store(time.Now().UnixNano()) }

// listenerTable holds every listening socket copy by identity.
type listenerTable struct {
	mu    sync.Mutex
	byKey map[fileKey]*listener
	// remembered keeps what a copy closed as idle knew that the socket itself
	// does not say: that processes may still be blocked in accepts left
	// to the kernel, and which mark is vhqos's and which the server's own.
	// Entries go when the socket does (the sweep's sock_diag dump).
	remembered map[fileKey]listenerMemory
}

type listenerMemory struct {
	continued, everMarked bool
	markedDSCP, ownDSCP   int
	everShaped            bool
	shaped, ownShaping    shaping
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
		l.everShaped, l.shaped, l.ownShaping = m.everShaped, m.shaped, m.ownShaping
		delete(t.remembered, key)
	}
	l.bound, l.family, _ = localAddrOf(fd)
	if l.family == 0 {
		l.path, _ = unixPathOf(fd)
		if cgidSocket(l.path) {
			l.cgid = newCGIDState()
		}
	}
	l.touch()
	t.byKey[key] = l
	return l
}

// inodes returns the inodes of every listening socket the table knows: its
// copies, and those it remembers.
func (t *listenerTable) inodes() map[uint64]bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[uint64]bool, len(t.byKey)+len(t.remembered))
	for key := range t.byKey {
		out[key.ino] = true
	}
	for key := range t.remembered {
		out[key.ino] = true
	}
	return out
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

// closeIdle closes copies unused for longer than idle that nobody waits
// on, so a socket the server closed is not kept open by vhqos. A doorbell
// still out is retired: it stays recognisable wherever it is accepted.
func (t *listenerTable) closeIdle(idle time.Duration, ev *eventLoop, bells *bellTable) {
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
			if l.continued || l.everMarked || l.everShaped {
				t.remembered[key] = listenerMemory{continued: l.continued, everMarked: l.everMarked, markedDSCP: l.markedDSCP, ownDSCP: l.ownDSCP,
					everShaped: l.everShaped, shaped: l.shaped, ownShaping: l.ownShaping}
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

// serving returns the listener copy whose connections have local as their
// local address: one bound to it exactly, else one bound to the wildcard
// address on its port.
func (t *listenerTable) serving(local netip.AddrPort) *listener {
	if !local.IsValid() {
		return nil // a unix connection: marks do not apply
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var wildcard *listener
	for _, l := range t.byKey {
		switch {
		case l.bound == local:
			return l
		case l.bound.Port() == local.Port() && l.bound.Addr().IsUnspecified() &&
			(l.bound.Addr().Is6() || local.Addr().Is4()):
			wildcard = l
		}
	}
	return wildcard
}
