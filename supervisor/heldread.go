package supervisor

import (
	"time"

	"github.com/vhqos/vhqos/vhost"
	"golang.org/x/sys/unix"
)

// Keep-alive reads in full tracking. A later request on a kept connection
// is classified by the read that starts it (trackRead, resniff): the bytes
// waiting when that read comes are the request. A server that polls
// before it reads (Apache, whose sockets are non-blocking) reads only once
// the request is there. One that waits for the next request in a blocking
// read (php-fpm on a connection nginx keeps, fastcgi_keep_conn on) reads
// before the request has come: there is nothing to look at yet, and the
// request that arrives while it sleeps in the kernel would be served in
// the class of the one before. So such a read is held, as the patent's
// read wrapper holds it: the supervisor watches the connection and
// answers the read (continue) only when a request has arrived, been
// classified and its process placed, or when the client hung up. Its
// thread would be asleep in the kernel meanwhile anyway; a non-blocking
// read is never held.

// heldRead is a blocking read of a followed connection, held until the
// next request on the connection has arrived.
type heldRead struct {
	id     uint64 // the read's notification
	p      *proc
	copyFd int // the supervisor's copy of the caller's fd, watched
	c      *trackedConn
	// partSince is when part of a request head was first seen, zero
	// while there is none: a head still not whole sniff_timeout after
	// that is given up on, as for a new connection.
	partSince time.Time
}

// waitsForRequest reports whether a read that found peek may be held: the
// client is there and has sent nothing yet, or the start of a request
// head. Other bytes (a body, a FastCGI stdin record) are read at once.
func waitsForRequest(peek peeked) bool {
	return !peek.gone && (peek.n == 0 || peek.res == vhost.NeedMore && peek.begins)
}

// blocking reports whether reads from fd wait for bytes (O_NONBLOCK is a
// flag of the open file, which a copy of the fd shares).
func blocking(fd int) bool {
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	return err == nil && flags&unix.O_NONBLOCK == 0
}

// holdRead holds the read r: it is answered when a request has arrived
// (readArrived). It returns false, and r stays the caller's, if the
// connection cannot be watched. Called with r.p.mu held.
func (s *Supervisor) holdRead(r *heldRead, peek peeked) bool {
	if peek.n > 0 {
		r.partSince = time.Now()
	}
	s.heldReads.Add(1)
	if err := s.events.watchRead(r); err != nil {
		s.heldReads.Add(-1)
		s.log.Warn("holding a keep-alive read until its request comes", "pid", r.p.tgid, "err", err)
		return false
	}
	if !r.partSince.IsZero() {
		timeout, _ := s.classifier.Load().SniffLimits()
		s.events.afterRead(r.partSince.Add(timeout), r)
	}
	return true
}

// readArrived looks at a held read's connection again: bytes arrived, the
// client hung up, or a part head's time ran out. A whole request head
// classifies the connection (resniffed), and the read goes on.
func (s *Supervisor) readArrived(r *heldRead, now time.Time) {
	r.p.mu.Lock()
	defer r.p.mu.Unlock()
	if !s.events.holdsRead(r) {
		return // answered already, or released
	}
	if !idValid(s.notifyFd, r.id) {
		// The caller left the read (a signal; it may read again, which
		// is a new notification) or exited.
		s.releaseRead(r)
		return
	}
	timeout, limit := s.classifier.Load().SniffLimits()
	peek := s.peekName(r.copyFd, limit)
	if waitsForRequest(peek) {
		switch {
		case peek.n == 0:
			return
		case r.partSince.IsZero():
			r.partSince = now
			s.events.afterRead(now.Add(timeout), r)
			return
		case now.Before(r.partSince.Add(timeout)):
			return
		}
	}
	s.resniffed(r.p, r.copyFd, r.c, peek)
	s.releaseRead(r)
	s.respond(r.id, respondContinue(s.notifyFd, r.id))
}

// releaseRead stops holding r and closes its copy of the fd; its read is
// left to whoever answers it.
func (s *Supervisor) releaseRead(r *heldRead) {
	if s.events.unwatchRead(r) {
		unix.Close(r.copyFd)
		s.heldReads.Add(-1)
	}
}

// dropGoneReads releases the held reads whose caller left them. Runs in
// the sweep.
func (s *Supervisor) dropGoneReads() {
	for _, r := range s.events.heldReads() {
		if !idValid(s.notifyFd, r.id) {
			r.p.mu.Lock()
			s.releaseRead(r)
			r.p.mu.Unlock()
		}
	}
}

// answerHeldReads lets every held read go on now, in whatever class its
// process is (Drain: a successor does not take them over).
func (s *Supervisor) answerHeldReads() {
	for _, r := range s.events.heldReads() {
		r.p.mu.Lock()
		if s.events.holdsRead(r) {
			s.releaseRead(r)
			s.respond(r.id, respondContinue(s.notifyFd, r.id))
		}
		r.p.mu.Unlock()
	}
}
