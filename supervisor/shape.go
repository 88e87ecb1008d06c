package supervisor

import (
	"errors"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Shaping: the two socket options that carry a class's bandwidth limits.
// SO_MARK puts the connection's packets in the class's HTB class on the
// shaped devices (egress_rate, package shaper); SO_MAX_PACING_RATE caps
// what the connection sends (connection_rate): TCP paces itself to it
// (internal pacing, Linux 4.13+; the fq qdisc is not needed). Both are
// inherited by the connections a listener makes (checked on Linux 6.1
// and 6.18 for both the mark and the pacing cap, the pacing taking effect
// too), so on a listener whose address decides the class they are set on
// the listener, as the DSCP is, and the kernel keeps making the accepts.
// SO_PRIORITY, which HTB could classify by without a filter, is not:
// Linux 6.18 gives the accepted socket priority 0.
//
// A class without a value takes back the listener's own, the way
// decideMark does for the DSCP, one value at a time: a socket is written
// only where the class has a value or vhqos may have given it one.

// shaping is a class's mark and pacing cap; 0 in a field is none.
type shaping struct {
	mark   uint32
	pacing uint64 // bytes per second
}

func (d Decision) shaping() shaping { return shaping{mark: d.Mark, pacing: d.Pacing} }

// unlimitedPacing is SO_MAX_PACING_RATE's "no cap" (~0UL): what a socket
// carries until something sets one.
const unlimitedPacing = ^uint64(0)

// shapeWrite is what to write on one socket: each field only when its
// flag is set.
type shapeWrite struct {
	to                 shaping
	setMark, setPacing bool
}

// decideShaping is decideMark for shaping, field by field: the class's
// value where it has one; else the listener's own (own) where the socket
// may carry a value vhqos gave it (marked); else nothing.
func decideShaping(class, own shaping, marked bool) shapeWrite {
	w := shapeWrite{to: own, setMark: marked, setPacing: marked}
	if class.mark != 0 {
		w.to.mark, w.setMark = class.mark, true
	}
	if class.pacing != 0 {
		w.to.pacing, w.setPacing = class.pacing, true
	}
	return w
}

// currentShaping reads a socket's mark and pacing cap.
func currentShaping(fd int) shaping {
	var sh shaping
	if m, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK); err == nil {
		sh.mark = uint32(m)
	}
	sh.pacing = unlimitedPacing
	if p, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_MAX_PACING_RATE); err == nil {
		sh.pacing = p
	}
	return sh
}

// setShaping writes w on fd. The pacing cap is written as 64 bits, which
// kernels since 4.20 take (rates above 34 Gbit/s).
func setShaping(fd int, w shapeWrite) error {
	var errs []error
	if w.setMark {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(w.to.mark)); err != nil {
			errs = append(errs, err)
		}
	}
	if w.setPacing {
		if err := unix.SetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_MAX_PACING_RATE, w.to.pacing); err != nil {
			// MPTCP sockets refuse it (EOPNOTSUPP).
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ownShapingNow is the listener's own shaping: saved when vhqos first
// shaped it, else what it carries. Called with l.mu held.
func (l *listener) ownShapingNow() shaping {
	if l.everShaped {
		return l.ownShaping
	}
	return currentShaping(l.fd)
}

// shapeListener gives l the shaping sh (its own back for zero fields)
// and reports whether it did. Called with l.mu held.
func (s *Supervisor) shapeListener(l *listener, sh shaping) bool {
	if !l.everShaped {
		l.ownShaping = currentShaping(l.fd)
		l.everShaped = true
	}
	if err := setShaping(l.fd, decideShaping(sh, l.ownShaping, true)); err != nil {
		s.shapeFailed("shaping a listening socket", l.bound, err)
		return false
	}
	s.everShaped.Store(true)
	l.shaped = sh
	return true
}

// shapeAccepted gives a connection vhqos accepted the shaping of its
// class d: the class's values, and the listener's own where the class
// has none and the listener (whose values it inherited) was shaped.
// A class without shaping costs nothing here.
func (s *Supervisor) shapeAccepted(c *conn, d Decision) {
	sh := d.shaping()
	if sh == (shaping{}) && !s.everShaped.Load() {
		// Nothing shaped anywhere: no listener's values to give back,
		// and no lock to take per connection.
		return
	}
	var own shaping
	marked := false
	if sh.mark == 0 || sh.pacing == 0 {
		l := c.l
		l.mu.Lock()
		own, marked = l.ownShaping, l.everShaped
		l.mu.Unlock()
	}
	w := decideShaping(sh, own, marked)
	if !w.setMark && !w.setPacing {
		return
	}
	if err := setShaping(c.fd, w); err != nil {
		s.stats.Errors.Add(1)
		s.shapeFailed("shaping a connection", c.local, err)
		return
	}
	s.everShaped.Store(true)
}

// reshape gives an established connection to local (fd: vhqos's copy)
// the shaping its class d has now, after a reload or a keep-alive request
// for another vhost moved it: open connections take a new rate at once,
// and give back one their class no longer has. Before vhqos shaped any
// socket there is nothing to take back, and a class without shaping
// costs nothing.
func (s *Supervisor) reshape(fd int, d Decision, local netip.AddrPort) {
	sh := d.shaping()
	if sh == (shaping{}) && !s.everShaped.Load() {
		return
	}
	var own shaping
	marked := false
	if sh.mark == 0 || sh.pacing == 0 {
		if l := s.listeners.serving(local); l != nil {
			l.mu.Lock()
			own, marked = l.ownShapingNow(), true
			l.mu.Unlock()
		}
	}
	w := decideShaping(sh, own, marked)
	if !w.setMark && !w.setPacing {
		return
	}
	if err := setShaping(fd, w); err != nil {
		s.shapeFailed("shaping an established connection", local, err)
		return
	}
	s.everShaped.Store(true)
}

// shapeFailed logs a socket that refused its shaping, at most once per
// 10 s: an MPTCP server would refuse every connection's pacing cap.
func (s *Supervisor) shapeFailed(what string, addr netip.AddrPort, err error) {
	if s.shapeLog.Allow() {
		s.log.Warn(what, "addr", addr, "err", err)
	}
}
