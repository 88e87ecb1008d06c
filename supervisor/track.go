package supervisor

import (
	"net/netip"
	"sync"

	"github.com/vhqos/vhqos/cgroup"
	"github.com/vhqos/vhqos/intercept"
	"github.com/vhqos/vhqos/vhost"
	"golang.org/x/sys/unix"
)

// trackedConn is a connection the supervisor handed to the server and
// follows by its socket's inode, whichever fds and processes view it.
type trackedConn struct {
	ino      uint64
	decision Decision
	// local is the connection's local address, rules the address its
	// rules see (conn.rulesAddr: a trusted proxy's destination); names
	// says a host name may classify it, so full tracking looks at each
	// later request's name too (keep-alive).
	local  netip.AddrPort
	rules  netip.AddrPort
	family uint16
	// path is the path of a unix connection's listener, which its rules
	// see instead of an address (conn.path); "" for TCP.
	path  string
	names bool
	// cgid says the connection came to mod_cgid's socket (cgid.go): its
	// request named its class once, and what follows is a CGI's stdin,
	// where no later request is looked for, whatever a new table says.
	cgid bool
	// host is the name the client asked for, "" when none decided: a new
	// table classifies the connection again from it.
	host string
	// seq numbers the entry's add (trackTable.added then), so that a
	// prune spares what was added after its list of live sockets was read.
	seq uint64
}

// trackTable holds every followed connection by socket inode. An entry
// lives as long as the socket does: the sweep drops entries whose socket
// the kernel no longer has (sock_diag), so the table returns to empty when
// the server has closed everything, however its processes passed the
// connections around.
type trackTable struct {
	mu    sync.Mutex
	byIno map[uint64]*trackedConn
	added uint64 // adds so far
}

func newTrackTable() *trackTable { return &trackTable{byIno: map[uint64]*trackedConn{}} }

func (t *trackTable) add(c *trackedConn) {
	t.mu.Lock()
	t.added++
	c.seq = t.added
	t.byIno[c.ino] = c
	t.mu.Unlock()
}

// mark returns what prune needs to spare the entries added from now on:
// take it before reading the list of live sockets.
func (t *trackTable) mark() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.added
}

// setDecision changes a followed connection's class, decided from the
// host name in a later request (keep-alive reclassification), and reports
// whether it changed.
func (t *trackTable) setDecision(c *trackedConn, host string, d Decision) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	c.host = host
	if c.decision == d {
		return false
	}
	c.decision = d
	return true
}

// reclassify decides every followed connection again under cl, from the
// host name it was decided by or else its local address, as a new
// connection with the same first request would be.
func (t *trackTable) reclassify(cl Classifier) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.byIno {
		if c.cgid {
			c.names = false
		} else if c.path != "" {
			c.names = cl.NamesApplyPath(c.path)
		} else {
			c.names = cl.NamesApply(c.rules)
		}
		if c.host != "" {
			c.decision = c.byName(cl, c.host)
		} else if c.path != "" {
			c.decision = cl.ClassifyPath(c.path)
		} else {
			c.decision = cl.ClassifyAddr(c.rules)
		}
	}
}

// byName is c's class when a request on it asks for host.
func (c *trackedConn) byName(cl Classifier, host string) Decision {
	if c.path != "" {
		return cl.ClassifyNameOnPath(host, c.path)
	}
	return cl.ClassifyName(host, c.rules)
}

// byNames is conn.byNames for a later request on c.
func (c *trackedConn) byNames(cl Classifier, host, alt string) (Decision, string) {
	if alt != "" && alt != host {
		if m, ok := nameMatcherOf(cl); ok && !nameMatches(m, host, c.path, c.rules) && nameMatches(m, alt, c.path, c.rules) {
			return c.byName(cl, alt), alt
		}
	}
	return c.byName(cl, host), host
}

// namesApply reports whether a host name may classify c (a reload can
// change it).
func (t *trackTable) namesApply(c *trackedConn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return c.names
}

func (t *trackTable) decision(c *trackedConn) Decision {
	t.mu.Lock()
	defer t.mu.Unlock()
	return c.decision
}

func (t *trackTable) get(ino uint64) *trackedConn {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byIno[ino]
}

func (t *trackTable) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byIno)
}

// prune drops the entries whose inode is not in live, read after mark:
// a connection accepted while live was being read is not in it, and
// dropping its entry would send the process serving it home (the lease
// backstop sees it hold nothing).
func (t *trackTable) prune(live map[uint64]bool, mark uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for ino, c := range t.byIno {
		if !live[ino] && c.seq <= mark {
			delete(t.byIno, ino)
		}
	}
}

// trackState is what the supervisor knows of one process's fds, under
// proc.mu.
type trackState struct {
	// fds maps the process's fds to the followed connections they view.
	// It is exact only while dirty is false: a birth, a dup or an exec
	// changes the table in ways the supervisor does not follow one by
	// one; the next decision rescans /proc/PID/fd, the kernel's truth.
	fds   map[int]uint64
	dirty bool
	// read holds the fds whose first read was seen (full mode): later
	// reads from them pass at once. close resets an fd's flag, so a
	// reused fd number is looked at afresh (docs/design-notes.md,
	// "Following connections through fork").
	read map[int]bool
}

// rescan rebuilds p's view of which fds hold followed connections from
// /proc/PID/fd. Called with p.mu held.
func (s *Supervisor) rescan(p *proc) {
	fds := socketFds(p.tgid) // nil once the process has exited
	for fd, ino := range fds {
		if s.tracked.get(ino) == nil {
			delete(fds, fd)
		}
	}
	p.track.fds = fds
	p.track.dirty = false
}

// classes returns the distinct classes of the followed connections p holds.
// Called with p.mu held.
func (s *Supervisor) classes(p *proc) []Decision {
	if p.track.dirty || s.track == intercept.TrackFork {
		// Fork tracking does not see close and dup: only /proc knows.
		s.rescan(p)
	}
	var out []Decision
	seen := map[uint64]bool{}
	for _, ino := range p.track.fds {
		if seen[ino] {
			continue
		}
		seen[ino] = true
		if c := s.tracked.get(ino); c != nil {
			out = append(out, s.tracked.decision(c))
		}
	}
	return out
}

// handleTracked answers the syscalls of full tracking, step saying which
// (intercept's table). Each is let through unchanged (continue); the
// supervisor only updates its tables and moves the process first where the
// call changes what it serves.
func (s *Supervisor) handleTracked(n *notification, step intercept.Step) {
	// The answer goes last: the tables and the placement must be right
	// before the call goes on. A read held for its request (heldread.go)
	// is answered when that comes.
	held := false
	defer func() {
		if !held {
			s.respond(n.ID, respondContinue(s.notifyFd, n.ID))
		}
	}()
	p, isNew, err := s.procs.lookup(s.notifyFd, int(n.Pid), n.ID)
	if err != nil {
		return
	}
	if isNew {
		s.events.watchExit(p)
	}
	fd := int(int32(n.Data.Args[0]))
	p.mu.Lock()
	defer p.mu.Unlock()
	if isNew {
		// Born with its parent's fds, or exec'd: learn them when needed.
		p.track.dirty = true
	}
	switch step {
	case intercept.StepClose:
		s.trackClose(p, fd)
	case intercept.StepDupTo:
		// The target fd is closed first, and now views the source.
		newfd := int(int32(n.Data.Args[1]))
		if newfd != fd {
			delete(p.track.fds, newfd)
			delete(p.track.read, newfd)
			p.track.dirty = true
		}
	case intercept.StepDup:
		if len(p.track.fds) > 0 {
			p.track.dirty = true
		}
	case intercept.StepFork:
		s.trackFork(p)
	case intercept.StepRead:
		held = s.trackRead(p, int(n.Pid), fd, n.ID)
	}
}

// trackClose ends p's lease on a connection when fd was its last view of
// it, and sends p home when that was the last connection it held. The
// move happens just before the close itself: the process is done serving.
// Called with p.mu held.
func (s *Supervisor) trackClose(p *proc, fd int) {
	delete(p.track.read, fd)
	if len(p.track.fds) == 0 && !p.track.dirty {
		return
	}
	if p.track.dirty {
		s.rescan(p)
	}
	if _, held := p.track.fds[fd]; !held {
		return
	}
	delete(p.track.fds, fd)
	if len(p.track.fds) == 0 {
		s.placeLocked(p, cgroup.HomeGroup)
	}
}

// trackFork puts p where its child must be born: a process holding exactly
// one connection forks a child to serve it, which is born in its class; one
// holding several (in full mode) forks children that start home and are
// placed at their first read. Called with p.mu held.
func (s *Supervisor) trackFork(p *proc) {
	classes := s.classes(p)
	switch {
	case len(classes) == 1:
		s.placeLocked(p, classes[0].Group)
	case len(classes) > 1 && s.track == intercept.TrackFull:
		s.placeLocked(p, cgroup.HomeGroup)
	}
}

// trackRead places p in the class of the connection it starts reading
// from: the first read per fd decides (under thread placement every read
// places the reading thread of a multi-threaded p: another thread may
// serve the next request). Later reads pass, except on a
// connection a host name may classify: there each read that finds a whole
// new request head waiting (keep-alive) is classified again, and a request
// for another vhost moves the connection and its process there; a
// blocking read that comes before its request is held until the request
// does (heldread.go), and trackRead then returns true: the read id is no
// longer the caller's to answer. Called with p.mu held.
func (s *Supervisor) trackRead(p *proc, tid, fd int, id uint64) (held bool) {
	if p.track.read[fd] {
		ino, ok := p.track.fds[fd]
		if !ok {
			return false
		}
		c := s.tracked.get(ino)
		if c == nil {
			return false
		}
		if s.tracked.namesApply(c) && s.resniff(p, fd, c, id) {
			return true
		}
		if s.threadPlacer != nil {
			// Full tracking sees every close and dup: the record is
			// current.
			s.placeReader(p, tid, fd, ino, s.tracked.decision(c).Group, true)
		}
		return false
	}
	if p.track.read == nil {
		p.track.read = map[int]bool{}
	}
	p.track.read[fd] = true
	ino, ok := fdInode(p.tgid, fd)
	if !ok {
		return false
	}
	c := s.tracked.get(ino)
	if c == nil {
		return false
	}
	if p.track.fds == nil {
		p.track.fds = map[int]uint64{}
	}
	p.track.fds[fd] = ino
	s.placeReader(p, tid, fd, ino, s.tracked.decision(c).Group, true)
	return false
}

// resniff looks at the bytes waiting on p's fd (a copy of it, peeked) and
// reclassifies the connection when they are a request for another vhost.
// A blocking read that finds no whole request head yet is held for it
// (holdRead), and resniff returns true. Called with p.mu held.
func (s *Supervisor) resniff(p *proc, fd int, c *trackedConn, id uint64) (held bool) {
	copyFd, err := p.copyFd(fd)
	if err != nil {
		return false
	}
	_, limit := s.classifier.Load().SniffLimits()
	peek := s.peekName(copyFd, limit)
	if waitsForRequest(peek) && blocking(copyFd) && s.holdRead(&heldRead{id: id, p: p, copyFd: copyFd, c: c}, peek) {
		return true
	}
	s.resniffed(p, copyFd, c, peek)
	unix.Close(copyFd)
	return false
}

// resniffed reclassifies c, which p holds and copyFd views, by what a
// look at its bytes found, when that is a whole request head: a request
// for another vhost moves c (its mark too) and p there. Called with p.mu
// held.
func (s *Supervisor) resniffed(p *proc, copyFd int, c *trackedConn, peek peeked) {
	if peek.res != vhost.Found {
		return // the rest of a request, a TLS record, or not all there yet
	}
	cl := s.classifier.Load()
	d, name := c.byNames(cl, peek.name, peek.alt)
	if !s.tracked.setDecision(c, name, d) {
		s.placeLocked(p, d.Group)
		return
	}
	s.stats.Reclassified.Add(1)
	s.reshape(copyFd, d, c.local)
	if dscp, ok := s.markFor(d, c.local); ok {
		if err := markConn(copyFd, c.family, c.local.Addr(), dscp); err != nil {
			s.log.Warn("setting DSCP on a reclassified connection", "local", c.local, "err", err)
		}
	}
	s.countConnection(d.Group)
	s.placeLocked(p, d.Group)
}

// handOver installs c in the caller as the result of its accept. When
// connections are followed, the caller's fd table is recorded with the
// process locked across the hand-over: the caller runs on the moment the fd
// is in, and its next fork or close must find the record already there.
// The caller is placed in c's class under the same lock (deliver places it
// only when nothing is followed): the sweep's lease backstop sends home a
// process in a class that holds no followed connection, and must not find
// it placed but not yet recorded.
func (s *Supervisor) handOver(call *acceptCall, c *conn) error {
	cloexec := call.flags&unix.SOCK_CLOEXEC != 0
	// A connection a host name decided is recorded in every mode: only
	// the record knows its class when a new table comes.
	follow := s.track != intercept.TrackAccept || s.placement == intercept.PlaceThread
	if !follow && !c.namesApply && c.rulesAddr() == c.local {
		_, err := sendFd(s.notifyFd, call.id, c.fd, cloexec)
		return err
	}
	p := call.proc
	if follow {
		p.mu.Lock()
		defer p.mu.Unlock()
		s.placeLocked(p, c.decision.Group)
	}
	var st unix.Stat_t
	if err := unix.Fstat(c.fd, &st); err != nil {
		_, err := sendFd(s.notifyFd, call.id, c.fd, cloexec)
		return err
	}
	s.tracked.add(&trackedConn{ino: st.Ino, decision: c.decision, local: c.local, rules: c.rulesAddr(), family: c.family,
		path: c.path, names: c.namesApply, host: c.host, cgid: c.l != nil && c.l.cgid != nil})
	if !follow {
		_, err := sendFd(s.notifyFd, call.id, c.fd, cloexec)
		return err
	}
	newfd, err := sendFd(s.notifyFd, call.id, c.fd, cloexec)
	if err != nil {
		return err
	}
	if p.track.fds == nil {
		p.track.fds = map[int]uint64{}
	}
	p.track.fds[newfd] = st.Ino
	delete(p.track.read, newfd)
	return nil
}

// leaseBackstop sends home the processes that hold no followed connection
// any more but were not seen to let go of the last one: in fork tracking
// closes are not intercepted, and a server that polls before it accepts
// never waits in accept. Runs in the sweep.
func (s *Supervisor) leaseBackstop() {
	if s.track < intercept.TrackFork {
		return
	}
	list := s.procs.all()
	for _, p := range list {
		p.mu.Lock()
		if p.group != "" && p.group != cgroup.HomeGroup && len(s.classes(p)) == 0 {
			s.placeLocked(p, cgroup.HomeGroup)
		}
		p.mu.Unlock()
	}
}

// goHomeIfIdle sends p home when it holds no followed connection: a
// process waiting in accept with nothing in hand (the parent of a forking
// server) serves nobody.
func (s *Supervisor) goHomeIfIdle(p *proc) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.group != cgroup.HomeGroup && len(s.classes(p)) == 0 {
		s.placeLocked(p, cgroup.HomeGroup)
	}
}

// pruneGone drops followed connections, and what listener copies closed as idle
// left to remember, whose socket is gone.
func (s *Supervisor) pruneGone() {
	if s.tracked.size() == 0 && s.listeners.rememberedCount() == 0 {
		return
	}
	mark := s.tracked.mark()
	// Connections are listed only when some are tracked (the listeners'
	// table is small, the connections' is not).
	live, err := liveSocketInodes(s.tracked.size() > 0)
	if err != nil {
		s.log.Debug("listing the sockets that are still open", "err", err)
		return
	}
	s.tracked.prune(live, mark)
	s.listeners.forgetGone(live)
}
