package supervisor

import (
	"bytes"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

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
//
// On a listener whose address alone decides the class, the accept is left
// to the kernel (the fast path) while the class is far from its cap: each
// accept left to the kernel reserves a connection of the class (the thread
// will take one, now or when a client comes), and a count adds up the
// class's recorded connections, the connections the kernel accepted on
// such listeners (by their local address), and the reservations of threads
// still waiting in accept (their /proc/TID/syscall). Past half the cap
// every accept is taken in hand again, so that threads the kernel holds in
// accept never make up more than half of a class's connections; only a cap
// per client address (the client is known only after accept) always takes
// the accept in hand.

// Admission is what the supervisor needs to apply a class's caps.
type Admission struct {
	// Name is the class's name as the operator knows it (a vhost's
	// name, or "default"), and OverLimit the name of its alternate or
	// "refuse", for the log.
	Name, OverLimit string
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

// recordSlack is how far the record of admitted connections may grow
// past twice its size at the last count before it is counted again to
// forget closed connections: each count walks every TCP socket of the
// namespace (TIME_WAIT remnants included, in the kernel), so it is
// amortised over thousands of connections, and the record stays a few
// megabytes at most.
const recordSlack = 16384

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
	// refusing is the class of the connections being refused: recorded
	// so that a count does not take one for a connection of its
	// listener's class, and counted against no cap.
	refusing *classCount
	// count asks the kernel for the connections held open.
	count func(held func(cookie, inode uint64, local netip.AddrPort)) error
	// reservations are the accepts left to the kernel on a listener of a
	// capped class whose thread was not seen since, by thread id; reserved
	// is their number, read without the lock.
	reservations map[int]reservation
	reserved     atomic.Int64
	// fast are the addresses of listeners whose accepts were ever left to
	// the kernel: a connection to one of them that vhqos never recorded
	// is counted as its address's class (classify says which).
	fast     map[netip.AddrPort]struct{}
	classify func(bound netip.AddrPort) (Decision, bool)
	// waiting reads whether a thread still waits in an accept on fd, or
	// runs (/proc shows no system call of a thread on a CPU or runnable);
	// heldSockets reads the inodes of the sockets a process holds
	// (socketFds). Tests replace both.
	waiting     func(tgid, tid, fd int) (inAccept, running bool)
	heldSockets func(tgid int) map[int]uint64
	// sinceCount counts admissions since the last count; uncounted says
	// a listener was noted whose connections no count has seen yet (it
	// may have made them before this supervisor started).
	sinceCount int
	uncounted  bool
	// kernelSeen are the connections the last count found accepted by
	// the kernel on listeners left to it, by inode: a connection first
	// seen after a reservation was made may be that reservation's
	// (recount).
	kernelSeen map[uint64]seenConn
	// adopting is set while adopt counts: no reservation ends then.
	adopting bool
	log      *slog.Logger
	// countFailed limits the log of failed counts to a line per 10 s.
	countFailed rateLimit
}

// reservation is an accept left to the kernel for a capped class.
type reservation struct {
	class    *classCount
	tgid, fd int
	made     time.Time
}

// seenConn is what the counts know of a connection the kernel accepted on
// a listener left to it.
type seenConn struct {
	// first is when a count first saw it; zero if before this supervisor
	// could know (what a predecessor handed over).
	first time.Time
	// claimed says it has ended a reservation: it ends no other.
	claimed bool
}

// runningToAccept is how long after its accept was left to the kernel a
// thread seen running is taken to be still on its way into the accept,
// whatever else its process holds. Later, /proc cannot tell a thread woken
// in its accept but not yet run (its connection still in the accept
// queue, or just taken from it and not yet attached to its socket file:
// sock_diag shows no inode for it either) from one serving what it took;
// the count then asks which sockets its process holds (recount).
const runningToAccept = 100 * time.Millisecond

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
	// reportedAdmitted is the most stats returned as admitted: a
	// reservation counts as admitted when made, and is taken off while
	// its thread still waits, so the figure is held from going down.
	reportedAdmitted uint64

	// overLog summarises over-limit decisions in one log line per 10 s.
	overLog           rateLimit
	overAlternate     int
	overRefused       int
	lastMax, lastMaxP int
	// name and next are the class's name and its over_limit, for the
	// summary.
	name, next string
}

func newAdmissions(log *slog.Logger, classify func(netip.AddrPort) (Decision, bool)) *admissions {
	return &admissions{
		classes:      map[string]*classCount{},
		conns:        map[uint64]admittedConn{},
		reservations: map[int]reservation{},
		refusing:     &classCount{perIP: map[netip.Addr]int{}},
		fast:         map[netip.AddrPort]struct{}{},
		count:        liveConnectionCookies,
		classify:     classify,
		waiting:      waitsInAccept,
		heldSockets:  socketFds,
		kernelSeen:   map[uint64]seenConn{},
		log:          log,
	}
}

// waitsInAccept reads /proc/TGID/task/TID/syscall: whether the thread is
// in an accept on fd, or running (the kernel shows no system call for a
// thread on a CPU or about to run: it may be on its way into the accept,
// or serving what it took). A thread that is gone is neither.
func waitsInAccept(tgid, tid, fd int) (inAccept, running bool) {
	b, err := os.ReadFile(taskSyscallPath(tgid, tid))
	if err != nil {
		return false, false
	}
	if bytes.HasPrefix(b, []byte("running")) {
		return false, true
	}
	got, ok := parseAcceptFd(b)
	return ok && got == fd, false
}

// noteFast remembers that accepts on a listener bound to bound are left to
// the kernel: connections to it may exist that vhqos never saw.
func (a *admissions) noteFast(bound netip.AddrPort) {
	ap := netip.AddrPortFrom(bound.Addr().Unmap(), bound.Port())
	a.mu.Lock()
	if _, ok := a.fast[ap]; !ok {
		a.fast[ap] = struct{}{}
		a.uncounted = true
	}
	a.mu.Unlock()
}

// reserve decides whether thread tid of process tgid may make its accept on
// fd (a listener of class d, which has a cap) in the kernel: while the
// class has less than half its cap, counting this one. It then records the
// reservation and counts it as admitted.
func (a *admissions) reserve(tid, tgid, fd int, d Decision) bool {
	adm := d.Admission
	if adm.MaxConnectionsPerIP > 0 {
		return false
	}
	half := adm.MaxConnections / 2
	a.mu.Lock()
	defer a.mu.Unlock()
	cc := a.class(d.Group)
	cc.lastMax, cc.lastMaxP = adm.MaxConnections, adm.MaxConnectionsPerIP
	if a.uncounted && a.recount(0) != nil {
		return false
	}
	if cc.open+1 > half {
		// A count costs a walk of the kernel's sockets: one per quarter
		// of the cap's admissions at most, so that a class hovering at
		// half its cap does not walk for every accept.
		if a.sinceCount < max(1, adm.MaxConnections/4) {
			return false
		}
		if err := a.recount(0); err != nil || cc.open+1 > half {
			return false
		}
	}
	cc.open++
	cc.admitted.Add(1)
	a.sinceCount++
	a.reservations[tid] = reservation{class: cc, tgid: tgid, fd: fd, made: time.Now()}
	a.reserved.Store(int64(len(a.reservations)))
	return true
}

// returned is told that thread tid made a new call: an accept left to the
// kernel for it is over (its connection, if it took one, is counted from
// now on as one the kernel accepted).
func (a *admissions) returned(tid int) {
	if a.reserved.Load() == 0 {
		return
	}
	a.mu.Lock()
	delete(a.reservations, tid)
	a.reserved.Store(int64(len(a.reservations)))
	a.mu.Unlock()
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

// reset zeroes cc's figures before a count.
func (cc *classCount) reset() {
	cc.open = 0
	clear(cc.perIP)
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
	a.sinceCount++
	if a.uncounted {
		a.recount(cookie)
	}
	if over(cc, adm, key) {
		// The figures are upper bounds: only the kernel can say whether
		// connections closed since the last count make room.
		if err := a.recount(cookie); err != nil {
			if a.countFailed.Allow() {
				a.log.Warn("counting open connections for max_connections; admitting", "err", err)
			}
			// Refusing on a guess would refuse clients for nothing; the
			// cap is best effort until the kernel answers again.
		} else if over(cc, adm, key) {
			return false
		}
	}
	a.addLocked(cc, cookie, key)
	cc.admitted.Add(1)
	if len(a.conns) > 2*a.recordedAtCount+recordSlack {
		if err := a.recount(0); err != nil && a.countFailed.Allow() {
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
	a.addLocked(a.class(group), cookie, clientKey(client))
}

// addLocked records the connection with socket cookie, from client key,
// as admitted to cc and counts it there. Called with a.mu held.
func (a *admissions) addLocked(cc *classCount, cookie uint64, key netip.Addr) {
	cc.open++
	cc.perIP[key]++
	a.conns[cookie] = admittedConn{class: cc, client: key}
}

// recordRefused records a connection being refused, which counts against
// no cap.
func (a *admissions) recordRefused(cookie uint64) {
	a.mu.Lock()
	a.conns[cookie] = admittedConn{class: a.refusing}
	a.mu.Unlock()
}

// groupOf returns the class a connection was admitted to, if recorded.
func (a *admissions) groupOf(cookie uint64) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ac, ok := a.conns[cookie]; ok && ac.class != a.refusing {
		return ac.class.group, true
	}
	return "", false
}

// recount asks the kernel which recorded connections are still open,
// forgets the others, and sets every class's figures to the exact count:
// its recorded connections, the ones the kernel accepted on listeners left
// to it (by their address's class), and its reservations whose thread has
// not taken its connection yet. deciding is the cookie of a connection
// being decided, not to be counted (0: none). Called with a.mu held.
//
// A reservation's thread blocked in its accept has taken nothing; one
// blocked elsewhere took its connection (or gave up) and the walk shows
// what it holds. One that runs, unless it was left to the kernel only just
// now (runningToAccept), may be either: woken in its accept and not yet
// run, its connection without an inode, or serving it. Such reservations
// of a process end, oldest first, one for each connection it holds that
// the walk found on a listener left to the kernel, that a count first saw
// after the oldest of them was made and that ended no reservation before;
// the process's sockets are read after the walk, so a connection attached
// between the two reads counts by its reservation. A single-threaded
// process (prefork, one connection at a time) is so counted exactly. In a
// process with several accepting threads a connection taken by one thread
// may end another's reservation (counted by neither while that thread
// waits for a CPU); a connection handed to another process, or taken and
// closed by a thread that keeps running, keeps its reservation until the
// thread blocks or calls again (counted twice: refusing a little early).
func (a *admissions) recount(deciding uint64) error {
	a.sinceCount = 0
	now := time.Now()
	unsure := map[int][]int{} // tids by tgid
	for tid, r := range a.reservations {
		inAccept, running := a.waiting(r.tgid, tid, r.fd)
		switch {
		case inAccept, running && now.Sub(r.made) < runningToAccept:
		case running:
			unsure[r.tgid] = append(unsure[r.tgid], tid)
		default:
			delete(a.reservations, tid)
		}
	}
	live := make(map[uint64]struct{}, len(a.conns))
	kernel := map[string]int{}
	// firstSeen becomes kernelSeen.
	firstSeen := map[uint64]seenConn{}
	walked := len(a.conns) > 0 || len(a.fast) > 0
	if walked {
		// (With nothing recorded and no listener left to the kernel, a
		// table without caps never walks the kernel's sockets.)
		err := a.count(func(cookie, inode uint64, local netip.AddrPort) {
			if _, ok := a.conns[cookie]; ok {
				live[cookie] = struct{}{}
				return
			}
			if _, ok := a.fast[local]; !ok || cookie == deciding {
				return
			}
			if d, ok := a.classify(local); ok && d.Admission != nil {
				kernel[d.Group]++
				seen, ok := a.kernelSeen[inode]
				if !ok && !a.adopting {
					seen.first = now
				}
				firstSeen[inode] = seen
			}
		})
		if err != nil {
			// The figures stay the upper bounds they were.
			a.reserved.Store(int64(len(a.reservations)))
			return err
		}
	}
	if !a.adopting {
		for _, tids := range unsure {
			a.endServed(tids, firstSeen)
		}
	}
	if walked {
		a.kernelSeen = firstSeen
	}
	a.reserved.Store(int64(len(a.reservations)))
	for _, cc := range a.classes {
		cc.reset()
	}
	a.refusing.reset()
	for cookie, ac := range a.conns {
		if _, ok := live[cookie]; !ok {
			delete(a.conns, cookie)
			continue
		}
		ac.class.open++
		ac.class.perIP[ac.client]++
	}
	for group, n := range kernel {
		a.class(group).open += n
	}
	a.addReservations()
	a.recordedAtCount = len(a.conns)
	a.uncounted = false
	return nil
}

// endServed ends the reservations tids (running threads of one process)
// that connections the process holds account for, oldest reservation
// first, one connection each: one in seen that a count first saw after
// the reservation was made and that no other reservation claimed. It
// reads /proc/TGID/fd only when some connection could qualify. Called
// with a.mu held.
func (a *admissions) endServed(tids []int, seen map[uint64]seenConn) {
	slices.SortFunc(tids, func(x, y int) int { return a.reservations[x].made.Compare(a.reservations[y].made) })
	oldest := a.reservations[tids[0]].made
	qualify := false
	for _, c := range seen {
		if !c.claimed && c.first.After(oldest) {
			qualify = true
			break
		}
	}
	if !qualify {
		return
	}
	held := a.heldSockets(a.reservations[tids[0]].tgid)
	for _, tid := range tids {
		made := a.reservations[tid].made
		for _, ino := range held {
			if c, ok := seen[ino]; ok && !c.claimed && c.first.After(made) {
				c.claimed = true // so also where it sits at two fds
				seen[ino] = c
				delete(a.reservations, tid)
				break
			}
		}
	}
}

// addReservations adds the reservations to their classes' figures.
// Called with a.mu held.
func (a *admissions) addReservations() {
	for _, r := range a.reservations {
		r.class.open++
	}
}

// stats returns every class's counters, with Open counted exactly.
func (a *admissions) stats() map[string]AdmissionStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.recount(0); err != nil && a.countFailed.Allow() {
		a.log.Warn("counting open connections for max_connections", "err", err)
	}
	waiting := map[*classCount]uint64{}
	for _, r := range a.reservations {
		waiting[r.class]++
	}
	out := make(map[string]AdmissionStats, len(a.classes))
	for group, cc := range a.classes {
		// A thread still waiting in an accept left to the kernel holds
		// a place, but no client was admitted yet.
		admitted := cc.admitted.Load()
		admitted -= min(admitted, waiting[cc])
		cc.reportedAdmitted = max(cc.reportedAdmitted, admitted)
		out[group] = AdmissionStats{
			Open:     cc.open - int(waiting[cc]),
			Admitted: cc.reportedAdmitted, Alternate: cc.alternate.Load(), Refused: cc.refused.Load(),
		}
	}
	return out
}

// overLimit counts a connection over a cap of group's class and logs a
// summary at most once per 10 s per class.
func (a *admissions) overLimit(group, name string, refused bool, next string) {
	a.mu.Lock()
	cc := a.class(group)
	if refused {
		cc.refused.Add(1)
		cc.overRefused++
	} else {
		cc.alternate.Add(1)
		cc.overAlternate++
	}
	cc.name, cc.next = name, next
	if !cc.overLog.Allow() {
		a.mu.Unlock()
		return
	}
	line := a.summaryLocked(cc)
	a.mu.Unlock()
	a.log.Warn("connections over a vhost's cap", line...)
}

// summaryLocked returns the attributes of cc's summary line and starts
// the next summary. Called with a.mu held.
func (a *admissions) summaryLocked(cc *classCount) []any {
	line := []any{"vhost", cc.name}
	if cc.lastMax > 0 {
		line = append(line, "max_connections", cc.lastMax)
	}
	if cc.lastMaxP > 0 {
		line = append(line, "max_connections_per_ip", cc.lastMaxP)
	}
	if cc.overAlternate > 0 {
		line = append(line, "sent_to_alternate", cc.overAlternate, "alternate", cc.next)
	}
	if cc.overRefused > 0 {
		line = append(line, "refused", cc.overRefused)
	}
	cc.overAlternate, cc.overRefused = 0, 0
	return line
}

// flushLog logs the summary of every class whose over-limit decisions
// since its last line were not logged yet, where 10 s have passed: the
// end of a burst is told within seconds, not at the next decision.
func (a *admissions) flushLog() {
	a.mu.Lock()
	var lines [][]any
	for _, cc := range a.classes {
		if cc.overAlternate+cc.overRefused > 0 && cc.overLog.Allow() {
			lines = append(lines, a.summaryLocked(cc))
		}
	}
	a.mu.Unlock()
	for _, l := range lines {
		a.log.Warn("connections over a vhost's cap", l...)
	}
}

// admit applies the caps of d's class, and of its alternates in turn, to
// c, recording it where it is admitted. It returns the class that serves
// c, or, when c is refused, the Admission that refused it.
func (s *Supervisor) admit(c *conn, d Decision) (Decision, *Admission) {
	if d.Admission == nil || c.family == 0 {
		// Caps count TCP connections only, for now: what the server still
		// holds is asked of sock_diag's TCP dump, where a unix socket's
		// connection would never show and so never be counted as closed.
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
	client := c.clientAddr()
	for step := range maxAlternates {
		adm := d.Admission
		if adm == nil {
			if step > 0 {
				// Recorded, though uncapped, so that a count does not
				// take it for a connection of its listener's class.
				s.admissions.record(d.Group, cookie, client)
			}
			return d, nil
		}
		if s.admissions.tryAdmit(d.Group, adm, cookie, client) {
			return d, nil
		}
		if adm.Alternate == nil {
			s.admissions.overLimit(d.Group, adm.Name, true, "")
			s.admissions.recordRefused(cookie)
			return d, adm
		}
		s.admissions.overLimit(d.Group, adm.Name, false, adm.OverLimit)
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

// AdmissionRecord is the admission record as a supervisor hands it to its
// successor (Handoff), so that caps hold across vhqos upgrade: the
// connections it admitted, the accepts it left to the kernel whose threads
// were not seen since, the listeners it left accepts on, and the counters.
type AdmissionRecord struct {
	Conns        []RecordedConn        `json:"conns,omitempty"`
	Reservations []RecordedReservation `json:"reservations,omitempty"`
	Fast         []netip.AddrPort      `json:"fast,omitempty"`
	// Counts are admitted, sent to the alternate and refused, by group.
	Counts map[string][3]uint64 `json:"counts,omitempty"`
}

// RecordedConn is an admitted connection: its socket cookie, the group of
// the class serving it and the client key it counts under.
type RecordedConn struct {
	Cookie uint64     `json:"cookie"`
	Group  string     `json:"group"`
	Client netip.Addr `json:"client"`
}

// RecordedReservation is an accept left to the kernel for a class.
type RecordedReservation struct {
	Tid, Tgid, Fd int
	Group         string
	Made          time.Time
}

// snapshot returns the whole record.
func (a *admissions) snapshot() AdmissionRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := AdmissionRecord{Counts: map[string][3]uint64{}}
	for cookie, ac := range a.conns {
		r.Conns = append(r.Conns, RecordedConn{Cookie: cookie, Group: ac.class.group, Client: ac.client})
	}
	for tid, res := range a.reservations {
		r.Reservations = append(r.Reservations, RecordedReservation{Tid: tid, Tgid: res.tgid, Fd: res.fd, Group: res.class.group, Made: res.made})
	}
	for ap := range a.fast {
		r.Fast = append(r.Fast, ap)
	}
	for group, cc := range a.classes {
		r.Counts[group] = [3]uint64{cc.admitted.Load(), cc.alternate.Load(), cc.refused.Load()}
	}
	return r
}

// adopt takes over a predecessor's record, counting what it held as open
// until the next count says otherwise.
func (a *admissions) adopt(r AdmissionRecord) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range r.Conns {
		a.addLocked(a.class(c.Group), c.Cookie, c.Client)
	}
	for _, res := range r.Reservations {
		cc := a.class(res.Group)
		cc.open++
		a.reservations[res.Tid] = reservation{class: cc, tgid: res.Tgid, fd: res.Fd, made: res.Made}
	}
	a.reserved.Store(int64(len(a.reservations)))
	for _, ap := range r.Fast {
		a.fast[ap] = struct{}{}
	}
	for group, n := range r.Counts {
		cc := a.class(group)
		cc.admitted.Add(n[0])
		cc.alternate.Add(n[1])
		cc.refused.Add(n[2])
	}
	// The connections the kernel accepted on fast listeners are not in
	// the record; the count finds them, and drops what closed meanwhile.
	// What the server holds now came before this supervisor: no
	// reservation handed over ends for it.
	a.adopting = true
	defer func() { a.adopting = false }()
	if err := a.recount(0); err != nil {
		a.log.Warn("counting open connections for max_connections after taking over", "err", err)
	}
}
