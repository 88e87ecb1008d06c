package supervisor

import (
	"net/netip"

	"github.com/vhqos/vhqos/cgroup"
	"github.com/vhqos/vhqos/intercept"
	"golang.org/x/sys/unix"
)

// Reclassified counts what Reclassify changed.
type Reclassified struct {
	// Listeners whose mark changed: connections made from now on
	// carry the new one from their SYN-ACK.
	Listeners int
	// Connections established before the change, given the mark
	// their class has now.
	Connections int
	// Processes moved: ones blocked in an accept the kernel performs,
	// and (fork and full tracking) ones serving connections whose class
	// changed.
	Processes int
}

// Reclassify brings what the server holds in line with the table that
// SetClassifier just installed, without waiting for the next accept:
//
//   - listeners whose address alone decides get the new class's mark at
//     once, so no connection is made with the old one;
//   - processes blocked in an accept left to the kernel move to the
//     class of the connection that accept will return;
//   - established connections get the mark their class has now, decided
//     from the host name that decided them (recorded for every such
//     connection) or else from their local address; a class without a
//     mark gives back the listener's own;
//   - in fork and full tracking, a process serving connections of a
//     single class moves when that class changed.
//
// A connection accepted before the change but not yet handed over keeps
// the decision it was accepted with.
func (s *Supervisor) Reclassify() Reclassified {
	var r Reclassified
	cl := s.classifier.Load()
	s.tracked.reclassify(cl)
	procs := s.procs.all()

	known := map[uint64]*listener{}
	for _, l := range s.listeners.all() {
		known[l.key.ino] = l
	}
	relistened := map[*listener]bool{}
	relisten := func(l *listener) {
		if !relistened[l] {
			relistened[l] = true
			if s.relisten(l, cl) {
				r.Listeners++
			}
		}
	}
	// A connection is re-marked through the copy taken to tell it from a
	// listener; one whose listener is not known yet waits until every
	// socket was seen.
	type heldSocket struct {
		p  *proc
		fd int
	}
	var later []heldSocket
	seen := map[uint64]bool{}
	heldListeners := map[*proc]map[int]*listener{}
	for _, p := range procs {
		held := map[int]*listener{}
		heldListeners[p] = held
		for fd, ino := range socketFds(p.tgid) {
			if l := known[ino]; l != nil {
				held[fd] = l
				relisten(l)
				continue
			}
			if seen[ino] {
				continue
			}
			seen[ino] = true
			copyFd, err := p.copyFd(fd)
			if err != nil {
				continue // closed meanwhile, or the process is gone
			}
			isListener, local, family, ok := socketKind(copyFd)
			if !ok {
				unix.Close(copyFd)
				continue
			}
			if isListener {
				var st unix.Stat_t
				if err := unix.Fstat(copyFd, &st); err != nil {
					unix.Close(copyFd)
					continue
				}
				l := s.listeners.adopt(fileKey{dev: st.Dev, ino: st.Ino}, copyFd)
				known[ino] = l
				held[fd] = l
				relisten(l)
				continue
			}
			marked, done := s.remark(copyFd, ino, local, family)
			unix.Close(copyFd)
			if marked {
				r.Connections++
			} else if !done {
				later = append(later, heldSocket{p, fd})
			}
		}
	}
	for _, c := range later {
		copyFd, err := c.p.copyFd(c.fd)
		if err != nil {
			continue
		}
		var st unix.Stat_t
		isListener, local, family, ok := socketKind(copyFd)
		if ok && !isListener && unix.Fstat(copyFd, &st) == nil {
			if marked, _ := s.remark(copyFd, st.Ino, local, family); marked {
				r.Connections++
			}
		}
		unix.Close(copyFd)
	}

	if s.shortcut {
		for _, p := range procs {
			if s.placeBlockedAccepts(p, heldListeners[p]) {
				r.Processes++
			}
		}
	}
	if s.track >= intercept.TrackFork {
		for _, p := range procs {
			if s.replaceServing(p) {
				r.Processes++
			}
		}
	}
	return r
}

// relisten decides l's class again under cl and gives the listener the
// class's mark, or its own when connections from it are classified one by
// one. It reports whether the mark changed.
func (s *Supervisor) relisten(l *listener, cl *classifierGen) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.fixed, l.fixedOK = listenerDecision(cl, l)
	l.fixedGen = cl.gen
	if l.path != "" {
		return false // a unix socket carries no mark
	}
	want := Decision{DSCP: -1}
	if l.fixedOK {
		want = l.fixed
	}
	if want.DSCP == l.markedDSCP && want.shaping() == l.shaped {
		return false
	}
	s.markListener(l, want)
	return true
}

// remark gives the established connection fd (the supervisor's copy, of
// socket ino, local address local) the mark and shaping its class has now. Only connections made by a
// listener of the server count: one the server opened itself (to a
// database, say) is not a virtual host's. It reports whether it marked the
// connection, and whether the connection was seen to be done with: false
// when the listener that made it is not known (yet).
func (s *Supervisor) remark(fd int, ino uint64, local netip.AddrPort, family uint16) (marked, done bool) {
	if s.listeners.serving(local) == nil {
		return false, false
	}
	d := s.servedBy(fd, s.decisionOf(ino, local, s.classifier.Load()))
	s.reshape(fd, d, local)
	dscp, ok := s.markFor(d, local)
	if !ok {
		return false, true
	}
	if err := markConn(fd, family, local.Addr(), dscp); err != nil {
		s.log.Warn("re-marking an established connection", "local", local, "dscp", dscp, "err", err)
		return false, true
	}
	return true, true
}

// decisionOf returns the class under cl of the established connection
// socket ino with local address local: the one its record says (decided by
// the host name the client asked for), or else its address's.
func (s *Supervisor) decisionOf(ino uint64, local netip.AddrPort, cl *classifierGen) Decision {
	if c := s.tracked.get(ino); c != nil {
		return s.tracked.decision(c)
	}
	return cl.ClassifyAddr(local)
}

// placeBlockedAccepts moves p to the class of the listener one of its
// threads is blocked accepting on, when the kernel performs that accept
// (the listener's address decides its class): the connection it returns
// was made under the new table. It reports whether p moved.
func (s *Supervisor) placeBlockedAccepts(p *proc, held map[int]*listener) bool {
	// Only a process whose group differs from the class of a listener it
	// holds can be in the wrong place; most hold one listener and either
	// already sit in its class or are not in accept at all.
	p.mu.Lock()
	group := p.group
	p.mu.Unlock()
	elsewhere := false
	for _, l := range held {
		l.mu.Lock()
		if l.fixedOK && l.fixed.Group != group {
			elsewhere = true
		}
		l.mu.Unlock()
	}
	if !elsewhere {
		return false
	}
	for _, tid := range threads(p.tgid) {
		fd, ok := blockedAcceptFd(taskSyscallPath(p.tgid, tid))
		if !ok {
			continue
		}
		l := held[fd]
		if l == nil {
			continue
		}
		l.mu.Lock()
		d, fixed := l.fixed, l.fixedOK
		l.mu.Unlock()
		if !fixed {
			continue
		}
		p.mu.Lock()
		moved := p.group != d.Group
		s.placeLocked(p, d.Group)
		p.mu.Unlock()
		return moved
	}
	return false
}

// replaceServing moves p when every followed connection it holds now
// belongs to one class other than the one p is in. A process holding none
// is left to the lease rules; one holding several classes keeps following
// its reads.
func (s *Supervisor) replaceServing(p *proc) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.group == "" || p.group == cgroup.HomeGroup {
		return false
	}
	classes := s.classes(p)
	if len(classes) == 0 {
		return false
	}
	group := classes[0].Group
	for _, d := range classes[1:] {
		if d.Group != group {
			return false
		}
	}
	if group == p.group {
		return false
	}
	s.placeLocked(p, group)
	return true
}
