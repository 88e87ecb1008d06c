package supervisor

import (
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Marks: which DSCP a socket carries, decided in one place (decideMark)
// for every socket vhqos marks (its mark for egress shaping and its
// pacing cap follow the same rules: shape.go): a listener whose address decides its class
// (markListener), a connection it accepted (finish), and an established
// connection that a reload (remark) or a keep-alive request for another
// vhost (resniff) reclassified (markFor).

// decideMark returns the DSCP a socket must carry for a class whose DSCP
// is classDSCP (-1: the class has none), given own, the mark of the
// listener the socket belongs to (the server's: the one it had before
// vhqos first marked it), and marked, whether the socket may carry a mark
// vhqos gave it: true for a listener vhqos marks and for an established
// connection (marked when it was accepted, perhaps), and for a connection
// just accepted, whether vhqos ever marked its listener (it inherits the
// listener's mark). write false means the socket keeps what it carries.
//
// The class's own DSCP wins. Without one the socket gets the listener's
// own mark back, because the mark it carries may be a class's that the
// table has since taken away; a socket vhqos never marked carries that
// mark already, and is not written.
func decideMark(classDSCP, own int, marked bool) (dscp int, write bool) {
	switch {
	case classDSCP >= 0:
		return classDSCP, true
	case marked:
		return own, true
	}
	return -1, false
}

// ownMark returns the listener's own mark: the one saved when vhqos first
// marked it, or else the one it carries. Called with l.mu held.
func (l *listener) ownMark() int {
	if l.everMarked {
		return l.ownDSCP
	}
	return currentDSCP(l.fd, l.family)
}

// markDSCP sets the DiffServ code point of every packet the socket sends
// from now on. TOS/traffic class carry DSCP in their upper six bits; the ECN
// bits are the kernel's. An IPv6 socket may carry IPv4 traffic (v4-mapped
// peers), which takes its mark from IP_TOS, so it gets both.
func markDSCP(fd int, family uint16, dscp int) error {
	tos := dscp << 2
	switch family {
	case unix.AF_INET:
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TOS, tos); err != nil {
			return fmt.Errorf("setting IP_TOS=%#x: %w", tos, err)
		}
	case unix.AF_INET6:
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_TCLASS, tos); err != nil {
			return fmt.Errorf("setting IPV6_TCLASS=%#x: %w", tos, err)
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TOS, tos); err != nil {
			return fmt.Errorf("setting IP_TOS=%#x on an IPv6 socket: %w", tos, err)
		}
	}
	return nil
}

// markConn marks an established connection whose local address is local
// (as addrPortOf gives it: IPv4 even when an IPv6 socket saw it). Such a
// connection speaks one family only: an IPv6 socket connected to an IPv4
// peer (v4-mapped) sends IPv4 packets, which take their mark from IP_TOS
// alone, so it needs one setsockopt where its listener needed two.
func markConn(fd int, family uint16, local netip.Addr, dscp int) error {
	if family == unix.AF_INET6 && local.Is4() {
		family = unix.AF_INET
	}
	return markDSCP(fd, family, dscp)
}

// markListener gives the listener the mark and shaping of class d (a
// DSCP of -1 and zero shaping: the listener's own back, when a vhost lost
// its dscp or its rates, or left the table). Called with l.mu held.
func (s *Supervisor) markListener(l *listener, d Decision) {
	changed := false
	if d.DSCP != l.markedDSCP {
		if !l.everMarked {
			l.ownDSCP = currentDSCP(l.fd, l.family)
			l.everMarked = true
		}
		target, _ := decideMark(d.DSCP, l.ownDSCP, true)
		if err := markDSCP(l.fd, l.family, target); err != nil {
			s.log.Warn("setting DSCP on a listening socket", "addr", l.bound, "err", err)
		} else {
			l.markedDSCP = d.DSCP
			changed = true
		}
	}
	if sh := d.shaping(); sh != l.shaped && s.shapeListener(l, sh) {
		changed = true
	}
	if !changed {
		return
	}
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

// finish applies the caps of c's class d (admission.go), records the
// class that serves c and gives its socket the mark decideMark says; a
// connection refused by a cap keeps its socket as it is. Called without
// c.l.mu held.
func (s *Supervisor) finish(c *conn, d Decision) {
	d, c.refusal = s.admit(c, d)
	c.decision = d
	if c.refusal != nil {
		return
	}
	own, marked := -1, false
	if d.DSCP < 0 {
		// Only a class without a mark needs the listener's (and its lock).
		// The connection was made with the mark the listener had then,
		// perhaps a class's since taken back.
		l := c.l
		l.mu.Lock()
		own, marked = l.ownDSCP, l.everMarked
		l.mu.Unlock()
	}
	if dscp, write := decideMark(d.DSCP, own, marked); write {
		if err := markConn(c.fd, c.family, c.local.Addr(), dscp); err != nil {
			s.stats.Errors.Add(1)
			s.log.Warn("setting DSCP on a connection", "local", c.local, "dscp", d.DSCP, "err", err)
		}
	}
	s.shapeAccepted(c, d)
}

// markFor returns the mark an established connection to local of class d
// must carry (decideMark: the class's, or else the own mark of the
// listener that made it). It reports false when the class has no mark and
// that listener is not known.
func (s *Supervisor) markFor(d Decision, local netip.AddrPort) (int, bool) {
	own := -1
	if d.DSCP < 0 {
		l := s.listeners.serving(local)
		if l == nil {
			return 0, false
		}
		l.mu.Lock()
		own = l.ownMark()
		l.mu.Unlock()
	}
	// vhqos may have marked the connection when it accepted it.
	return decideMark(d.DSCP, own, true)
}
