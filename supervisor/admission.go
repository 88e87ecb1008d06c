package supervisor

import (
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Admission: how many connections a class may have open at once (the
// table's max_connections and max_connections_per_ip), and what a
// connection over a cap gets: another class, or a refusal (refuse.go).
//
// A connection counts from the moment it is admitted until the last fd of
// it is closed, in whichever process. The supervisor records the socket
// cookie (SO_COOKIE) of every connection it admits to a class with a cap;
// the kernel says which of them are still held open (sock_diag: a socket
// no process holds has no inode; sockdiag.go). Asking the kernel walks
// every TCP socket of the namespace, so it is done only when it can change
// the answer: between two such counts a class's figure only goes up with
// each admission, so while it is below the cap the connection is admitted
// without asking. Only a class at its cap, and every so often the whole
// record to forget closed connections, costs a walk.

// Admission is what the supervisor needs to apply a class's caps.
type Admission struct {
	// MaxConnections caps the connections of the class open at once; 0
	// means no cap.
	MaxConnections int
	// MaxConnectionsPerIP caps them per client: an IPv4 address, or an
	// IPv6 /64 (clientKey); 0 means no cap.
	MaxConnectionsPerIP int
	// Alternate is the class that serves a connection over a cap; nil
	// refuses it. An alternate with caps of its own applies them in turn:
	// the chain must not loop (package policy refuses tables where it
	// would), and is followed at most maxAlternates steps.
	Alternate *Decision
	// RefuseStatus is the HTTP status of a refusal (400..599), RetryAfter
	// the seconds its Retry-After header gives (0: no header).
	RefuseStatus int
	RetryAfter   int
}

// maxAlternates bounds the chain of alternate classes followed for one
// connection, in case a classifier hands the supervisor a loop.
const maxAlternates = 16

// AdmissionStats are one class's admission counters.
type AdmissionStats struct {
	// Open is how many connections are counted against the class's cap
	// now: admitted to it and still held open by some process.
	Open int
	// Admitted counts connections let in by the class's caps; Alternate
	// those sent on to its alternate class; Refused those refused.
	Admitted, Alternate, Refused uint64
}

// admissions is the record of admitted connections and each class's
// count.
type admissions struct {
	mu      sync.Mutex
	classes map[string]*classCount // by group
	// conns are the admitted connections, by socket cookie, some of them
	// closed since the last count.
	conns map[uint64]admittedConn
	// recordedAtCount is len(conns) right after the last count: the
	// record is counted again once it has grown well past it, so that
	// closed connections are forgotten.
	recordedAtCount int
	// count asks the kernel for the cookies of the connections held open.
	count func(held func(cookie uint64)) error
	log   *slog.Logger
	// countFailed limits the log of failed counts to a line per 10 s.
	countFailed rateLimit
}

type admittedConn struct {
	class  *classCount
	client netip.Addr
}

// classCount is a class's share of the record.
type classCount struct {
	group string
	// open is, since the last count, an upper bound of the class's open
	// connections: the count then plus every admission since.
	open  int
	perIP map[netip.Addr]int

	admitted, alternate, refused atomic.Uint64

	// overLog summarises over-limit decisions in one log line per 10 s.
	overLog           rateLimit
	overAlternate     int
	overRefused       int
	lastMax, lastMaxP int
}

func newAdmissions(log *slog.Logger) *admissions {
	return &admissions{
		classes: map[string]*classCount{},
		conns:   map[uint64]admittedConn{},
		count:   liveConnectionCookies,
		log:     log,
	}
}

// clientKey is what max_connections_per_ip counts by: an IPv4 address
// (also when an IPv6 socket saw it, v4-mapped), or the /64 of an IPv6
// address, the smallest prefix a site (RFC 6177) or a single host with
// SLAAC (RFC 4291 §2.5.1) is given, so one client cannot evade the cap by
// rotating addresses within it.
func clientKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

func (a *admissions) class(group string) *classCount {
	cc := a.classes[group]
	if cc == nil {
		cc = &classCount{group: group, perIP: map[netip.Addr]int{}}
		a.classes[group] = cc
	}
	return cc
}

// tryAdmit admits the connection with socket cookie to the class group
// under the caps of adm, recording it, or reports that a cap is reached.
// client is the peer's address.
func (a *admissions) tryAdmit(group string, adm *Admission, cookie uint64, client netip.Addr) bool {
	key := clientKey(client)
	a.mu.Lock()
	defer a.mu.Unlock()
	cc := a.class(group)
	cc.lastMax, cc.lastMaxP = adm.MaxConnections, adm.MaxConnectionsPerIP
	if over(cc, adm, key) {
		// The figures are upper bounds: only the kernel can say whether
		// connections closed since the last count make room.
		if err := a.recount(); err != nil {
			if a.countFailed.Allow() {
				a.log.Warn("counting open connections for max_connections; admitting", "err", err)
			}
			// Refusing on a guess would refuse clients for nothing; the
			// cap is best effort until the kernel answers again.
		} else if over(cc, adm, key) {
			return false
		}
	}
	cc.open++
	cc.perIP[key]++
	cc.admitted.Add(1)
	a.conns[cookie] = admittedConn{class: cc, client: key}
	if len(a.conns) > 2*a.recordedAtCount+1024 {
		if err := a.recount(); err != nil && a.countFailed.Allow() {
			a.log.Warn("counting open connections for max_connections", "err", err)
		}
	}
	return true
}

// over reports whether one more connection from key would exceed a cap of
// adm. Called with a.mu held.
func over(cc *classCount, adm *Admission, key netip.Addr) bool {
	return adm.MaxConnections > 0 && cc.open >= adm.MaxConnections ||
		adm.MaxConnectionsPerIP > 0 && cc.perIP[key] >= adm.MaxConnectionsPerIP
}

// record adds a connection admitted before the supervisor knew of a cap
// (found on a table change), unless it is recorded already.
func (a *admissions) record(group string, cookie uint64, client netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.conns[cookie]; ok {
		return
	}
	cc := a.class(group)
	key := clientKey(client)
	cc.open++
	cc.perIP[key]++
	a.conns[cookie] = admittedConn{class: cc, client: key}
}

// groupOf returns the class a connection was admitted to, if recorded.
func (a *admissions) groupOf(cookie uint64) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ac, ok := a.conns[cookie]; ok {
		return ac.class.group, true
	}
	return "", false
}

// recount asks the kernel which recorded connections are still open,
// forgets the others, and sets every class's figures to the exact count.
// Called with a.mu held.
func (a *admissions) recount() error {
	live := make(map[uint64]struct{}, len(a.conns))
	err := a.count(func(cookie uint64) {
		if _, ok := a.conns[cookie]; ok {
			live[cookie] = struct{}{}
		}
	})
	if err != nil {
		return err
	}
	for _, cc := range a.classes {
		cc.open = 0
		clear(cc.perIP)
	}
	for cookie, ac := range a.conns {
		if _, ok := live[cookie]; !ok {
			delete(a.conns, cookie)
			continue
		}
		ac.class.open++
		ac.class.perIP[ac.client]++
	}
	a.recordedAtCount = len(a.conns)
	return nil
}

// stats returns every class's counters, with Open counted exactly.
func (a *admissions) stats() map[string]AdmissionStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.recount(); err != nil && a.countFailed.Allow() {
		a.log.Warn("counting open connections for max_connections", "err", err)
	}
	out := make(map[string]AdmissionStats, len(a.classes))
	for group, cc := range a.classes {
		out[group] = AdmissionStats{Open: cc.open, Admitted: cc.admitted.Load(), Alternate: cc.alternate.Load(), Refused: cc.refused.Load()}
	}
	return out
}

// overLimit counts a connection over a cap of group's class and logs a
// summary at most once per 10 s per class.
func (a *admissions) overLimit(group string, refused bool, next string) {
	a.mu.Lock()
	cc := a.class(group)
	if refused {
		cc.refused.Add(1)
		cc.overRefused++
	} else {
		cc.alternate.Add(1)
		cc.overAlternate++
	}
	if !cc.overLog.Allow() {
		a.mu.Unlock()
		return
	}
	alt, ref := cc.overAlternate, cc.overRefused
	cc.overAlternate, cc.overRefused = 0, 0
	maxConns, maxPerIP := cc.lastMax, cc.lastMaxP
	a.mu.Unlock()
	a.log.Warn("connections over a vhost's cap", "group", group, "max_connections", maxConns,
		"max_connections_per_ip", maxPerIP, "sent_to_alternate", alt, "alternate", next, "refused", ref)
}

// admit applies the caps of d's class, and of its alternates in turn, to
// c, recording it where it is admitted. It returns the class that serves
// c, or, when c is refused, the Admission that refused it.
func (s *Supervisor) admit(c *conn, d Decision) (Decision, *Admission) {
	if d.Admission == nil {
		return d, nil
	}
	cookie, err := unix.GetsockoptUint64(c.fd, unix.SOL_SOCKET, unix.SO_COOKIE)
	if err != nil {
		// Without its cookie the connection cannot be counted; serving it
		// uncounted beats refusing a client for vhqos's own trouble.
		s.stats.Errors.Add(1)
		s.log.Warn("reading a connection's socket cookie; admitting it uncounted", "err", err)
		return d, nil
	}
	peer, _ := addrPortOf(&c.peer)
	for range maxAlternates {
		adm := d.Admission
		if adm == nil {
			return d, nil
		}
		if s.admissions.tryAdmit(d.Group, adm, cookie, peer.Addr()) {
			return d, nil
		}
		if adm.Alternate == nil {
			s.admissions.overLimit(d.Group, true, "")
			return d, adm
		}
		s.admissions.overLimit(d.Group, false, adm.Alternate.Group)
		d = *adm.Alternate
	}
	return d, nil
}

// Admissions returns, per group, the admission counters of every class
// that had a cap since the supervisor started, with the open connections
// counted exactly (a sock_diag walk: for status and metrics, not per
// connection).
func (s *Supervisor) Admissions() map[string]AdmissionStats { return s.admissions.stats() }

// servedBy returns the class that serves the established connection fd
// (the supervisor's copy of it), whose own class is d: the class it was
// admitted to when that is d or one of d's alternates, else d. A
// connection of a class with a cap that is not recorded, admitted before
// the cap existed, is recorded now, so that it counts against the cap.
func (s *Supervisor) servedBy(fd int, d Decision) Decision {
	if d.Admission == nil {
		return d
	}
	cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
	if err != nil {
		return d
	}
	if group, ok := s.admissions.groupOf(cookie); ok {
		for x, steps := d, 0; steps < maxAlternates; steps++ {
			if x.Group == group {
				return x
			}
			if x.Admission == nil || x.Admission.Alternate == nil {
				break
			}
			x = *x.Admission.Alternate
		}
		return d
	}
	var peer netip.Addr
	if sa, err := unix.Getpeername(fd); err == nil {
		switch sa := sa.(type) {
		case *unix.SockaddrInet4:
			peer = netip.AddrFrom4(sa.Addr)
		case *unix.SockaddrInet6:
			peer = netip.AddrFrom16(sa.Addr)
		}
	}
	s.admissions.record(d.Group, cookie, peer)
	return d
}
