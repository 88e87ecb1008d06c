package supervisor

import (
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vhqos/vhqos/vhost"
	"golang.org/x/sys/unix"
)

// Connections waiting for their first bytes: how connections whose host
// name may decide their vhost are held until it arrives (the bytes are
// parsed by vhost.SniffName; on mod_cgid's socket by vhost.ParseCGID,
// cgid.go).
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
// in l.pending and the event loop finishes it, or a cap refused it and the
// supervisor answers it (refuse.go).
func (s *Supervisor) prepare(l *listener, c *conn) bool {
	if !s.classify(l, c) {
		return false
	}
	if c.refusal != nil {
		s.refuse(c, c.refusal)
		return false
	}
	return true
}

// classify is prepare up to the caps: it reports whether c was classified
// at once.
func (s *Supervisor) classify(l *listener, c *conn) bool {
	cl := s.classifier.Load()
	switch {
	case l.path != "":
		// A unix connection's local address is its listener's path. No
		// proxy is trusted there: there is no address for a PROXY
		// header's destination to stand in for.
		c.path = l.path
		c.namesApply = cl.NamesApplyPath(c.path)
	case l.bound.IsValid() && !l.bound.Addr().IsUnspecified():
		// Every connection of a listener bound to one address has that
		// address: no getsockname needed.
		c.local, c.family = l.bound, l.family
	default:
		c.local, c.family, _ = localAddrOf(c.fd)
	}
	if c.path == "" {
		c.namesApply = cl.NamesApply(c.local)
		c.trusted = cl.ProxyTrusted(c.local)
	}
	if l.cgid != nil {
		// Its request names the vhost (cgid.go); nothing follows it on
		// the connection that a name could classify (the CGI's input and
		// output), so names do not apply after.
		c.namesApply = false
	} else if !c.namesApply && !c.trusted {
		s.finishByAddr(c, cl)
		return true
	}
	if s.classifyByBytes(c, cl) {
		return true
	}
	if s.pendingCount.Load() >= maxPending {
		s.stats.NameFallbacks.Add(1)
		s.finishByAddr(c, cl)
		return true
	}
	timeout, _ := cl.SniffLimits()
	now := time.Now()
	c.accepted = now
	c.deadline = now.Add(timeout)
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		s.finishByAddr(c, cl)
		return true
	}
	if err := s.events.watchConn(c); err != nil {
		l.mu.Unlock()
		s.log.Warn("cannot wait for a client's first bytes; classifying by address", "local", c.local, "err", err)
		s.stats.NameFallbacks.Add(1)
		s.finishByAddr(c, cl)
		return true
	}
	l.pending = append(l.pending, c)
	s.pendingCount.Add(1)
	l.mu.Unlock()
	s.events.after(c.deadline, l)
	return false
}

// classifyByBytes peeks at c's first bytes and classifies c if they decide: a name
// found, no name to be found (not HTTP/1.x or TLS, or no Host/SNI), the
// client closed its side, or the byte limit reached. It reports whether c
// was classified.
func (s *Supervisor) classifyByBytes(c *conn, cl *classifierGen) bool {
	if c.l != nil && c.l.cgid != nil {
		return s.classifyCGID(c, cl)
	}
	_, limit := cl.SniffLimits()
	p := s.peekName(c.fd, limit)
	closed := false
	if !p.gone && p.res == vhost.NeedMore && p.n < limit && peerClosed(c.fd) {
		// The client's FIN is in, so everything it sent is queued now;
		// but the peek above may have run while the last segments still
		// sat in the socket's backlog, so it looks once more before
		// calling the bytes final.
		closed = true
		p = s.peekName(c.fd, limit)
	}
	c.proxy = p.proxy
	if c.proxied() {
		// The rules see the address the proxy's client asked for.
		c.namesApply = cl.NamesApply(c.rulesAddr())
	}
	if p.gone {
		// Closed before sending anything, or reset: the server will see
		// that when it reads; what class serves it hardly matters.
		s.stats.NameFallbacks.Add(1)
		s.finishByAddr(c, cl)
		return true
	}
	if c.proxied() && p.res == vhost.NeedMore && !c.namesApply {
		// The trusted proxy's header named the address the client asked
		// for, and no name rule applies there.
		s.finishByAddr(c, cl)
		return true
	}
	switch p.res {
	case vhost.Found:
		s.stats.NamesFound.Add(1)
		d, host := c.byNames(cl, p.name, p.alt)
		c.host = host
		s.finish(c, d)
		return true
	case vhost.NoName:
		s.stats.NameFallbacks.Add(1)
		s.finishByAddr(c, cl)
		return true
	}
	if p.n >= limit || closed {
		s.stats.NameFallbacks.Add(1)
		s.finishByAddr(c, cl)
		return true
	}
	return false
}

// peeked is what a connection's first bytes say.
type peeked struct {
	// name, alt and res are vhost.SniffNames's answer, from the bytes
	// after a PROXY protocol header, if one came first (proxy; Len 0 when
	// none).
	name, alt string
	res       vhost.Sniff
	proxy     vhost.ProxyHeader
	// n is how many bytes were there; none yet gives n 0 and NeedMore.
	n int
	// gone says there is nothing to read and never will be: the client
	// closed its side before sending anything (more), or the connection
	// failed (a reset).
	gone bool
	// begins says bytes that are not a whole request head yet (NeedMore)
	// start one (vhost.BeginsRequest), rather than being, say, a body.
	begins bool
}

// peekName peeks at the bytes waiting on fd, at most limit of them, and
// looks in them for the host name the client asks for (vhost.SniffName),
// past a PROXY protocol header (vhost.ParseProxy) if one comes first: the
// server later reads every byte as the client sent it, the header too.
func (s *Supervisor) peekName(fd, limit int) peeked {
	bufp := s.peekBufs.get(limit)
	defer s.peekBufs.put(bufp)
	n, _, err := unix.Recvfrom(fd, *bufp, unix.MSG_PEEK|unix.MSG_DONTWAIT)
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		n = 0
	case err != nil || n == 0:
		return peeked{res: vhost.NeedMore, gone: true}
	}
	p := peeked{n: n}
	data := (*bufp)[:n]
	switch hdr, res := vhost.ParseProxy(data); res {
	case vhost.NeedMore:
		p.res = vhost.NeedMore
		return p
	case vhost.Found:
		p.proxy = hdr
		data = data[hdr.Len:]
	}
	p.name, p.alt, p.res = vhost.SniffNames(data)
	if p.res == vhost.NeedMore {
		p.begins = vhost.BeginsRequest(data)
	}
	return p
}

func (s *Supervisor) finishByAddr(c *conn, cl *classifierGen) {
	s.finish(c, c.byAddr(cl))
}

// byAddr is c's class by its address rules (rulesAddr), or by its
// Unix-domain listener's path.
func (c *conn) byAddr(cl Classifier) Decision {
	if c.path != "" {
		return cl.ClassifyPath(c.path)
	}
	return cl.ClassifyAddr(c.rulesAddr())
}

// byName is c's class when its client asked for host.
func (c *conn) byName(cl Classifier, host string) Decision {
	if c.path != "" {
		return cl.ClassifyNameOnPath(host, c.path)
	}
	return cl.ClassifyName(host, c.rulesAddr())
}

// byNames is c's class when its first bytes named host, and alt besides
// (a FastCGI SERVER_NAME: vhost.SniffNames), with the name that decided:
// alt where host matches no name rule and alt does, so that a request
// nginx serves from a site's server block is that site's whatever Host the
// client sent; host otherwise.
func (c *conn) byNames(cl Classifier, host, alt string) (Decision, string) {
	if alt != "" && alt != host {
		if m, ok := nameMatcherOf(cl); ok && !nameMatches(m, host, c.path, c.rulesAddr()) && nameMatches(m, alt, c.path, c.rulesAddr()) {
			return c.byName(cl, alt), alt
		}
	}
	return c.byName(cl, host), host
}

// NameMatcher is what a Classifier may also do: say whether a name rule
// claims a host name on a connection. With it, a FastCGI request whose
// HTTP_HOST no rule claims is classified by its SERVER_NAME, when a rule
// claims that (vhost.SniffNames); without it, HTTP_HOST alone decides.
type NameMatcher interface {
	// NameMatches reports whether a name rule claims host on a
	// connection to local.
	NameMatches(host string, local netip.AddrPort) bool
	// NameMatchesOnPath is NameMatches for a connection to the
	// Unix-domain listener bound to path.
	NameMatchesOnPath(host, path string) bool
}

// nameMatcherOf is cl as a NameMatcher, if the table behind it is one.
func nameMatcherOf(cl Classifier) (NameMatcher, bool) {
	if g, ok := cl.(*classifierGen); ok {
		cl = g.Classifier
	}
	m, ok := cl.(NameMatcher)
	return m, ok
}

func nameMatches(m NameMatcher, host, path string, local netip.AddrPort) bool {
	if path != "" {
		return m.NameMatchesOnPath(host, path)
	}
	return m.NameMatches(host, local)
}

// proxied says c came through a trusted proxy whose PROXY header
// arrived.
func (c *conn) proxied() bool { return c.trusted && c.proxy.Len > 0 }

// rulesAddr is the address c's address rules see: the destination a
// trusted proxy's PROXY header gives (Classifier.ProxyTrusted), or the
// server address a mod_cgid request gives (cgid.go), else the
// connection's own local address. A header without addresses (a proxy's
// health check: v2 LOCAL, v1 UNKNOWN) leaves the local address.
func (c *conn) rulesAddr() netip.AddrPort {
	if c.cgidServer.IsValid() {
		return c.cgidServer
	}
	if c.proxied() && !c.proxy.Local && c.proxy.Dst.IsValid() {
		return c.proxy.Dst
	}
	return c.local
}

// clientAddr is c's client: the source a trusted proxy's header gives,
// else the peer.
func (c *conn) clientAddr() netip.Addr {
	if c.proxied() && !c.proxy.Local && c.proxy.Src.IsValid() {
		return c.proxy.Src.Addr()
	}
	peer, _ := addrPortOf(&c.peer)
	return peer.Addr()
}

// bytesArrived runs in the event loop when a pending connection got bytes
// (or its client hung up).
func (s *Supervisor) bytesArrived(c *conn) {
	l := c.l
	l.mu.Lock()
	if !slices.Contains(l.pending, c) {
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	if !s.classifyByBytes(c, s.classifier.Load()) {
		return
	}
	s.pendingReady(l, c)
}

// pendingReady moves c, a pending connection now classified, from l's
// pending list to the tail of its stash (behind connections that were
// ready before it), then pumps it to a waiting accept or, with none, rings
// the doorbell (compare requeue).
func (s *Supervisor) pendingReady(l *listener, c *conn) {
	s.events.unwatchConn(c)
	l.mu.Lock()
	if i := slices.Index(l.pending, c); i >= 0 {
		l.pending = slices.Delete(l.pending, i, i+1)
		s.pendingCount.Add(-1)
	}
	if c.refusal != nil {
		l.mu.Unlock()
		s.refuse(c, c.refusal)
		return
	}
	if !l.stashLocked(c, false) {
		l.mu.Unlock()
		c.close()
		return
	}
	if len(l.waiters) > 0 {
		l.mu.Unlock()
		s.pump(l)
		return
	}
	s.ringIfNeeded(l)
	l.mu.Unlock()
}

// checkDeadlines runs in the event loop when one of l's deadlines may have passed:
// connections that sent no name in time get the address's class, short
// waits end with EAGAIN, an old doorbell is taken back, and one that
// another socket took is rung again.
func (s *Supervisor) checkDeadlines(l *listener, now time.Time) {
	l.mu.Lock()
	var late []*conn
	for _, c := range l.pending {
		if !c.deadline.After(now) {
			late = append(late, c)
		}
	}
	ended := l.dropWaiters(func(w *acceptCall) bool { return !w.deadline.IsZero() && !w.deadline.After(now) })
	s.checkDoorbell(l, now)
	l.mu.Unlock()
	for _, w := range ended {
		s.respond(w.id, respondErrno(s.notifyFd, w.id, 0, unix.EAGAIN))
	}
	cl := s.classifier.Load()
	for _, c := range late {
		// Bytes that came while the loop was busy still count: look once
		// more before falling back.
		if !s.classifyByBytes(c, cl) {
			s.stats.NameTimeouts.Add(1)
			s.finishByAddr(c, cl)
		}
		s.pendingReady(l, c)
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
