package supervisor

import (
	"net/netip"
	"path/filepath"
	"strings"
	"sync"

	"github.com/vhqos/vhqos/vhost"
	"golang.org/x/sys/unix"
)

// CGIs under mod_cgid. Apache's worker and event MPMs (Debian's default is
// event) do not fork CGIs from the process that serves the request: a
// thread there sends the request, with the CGI's environment, to mod_cgid's
// daemon over a Unix socket (ScriptSock), and the daemon, a single-threaded
// child of the Apache parent, accepts it and forks the CGI. So a connection
// to that socket is classified by the request it carries
// (vhost.ParseCGID): like a TCP connection to SERVER_ADDR:SERVER_PORT
// whose client asked for HTTP_HOST, with SERVER_NAME where HTTP_HOST
// matches no name rule (byNames), the address deciding when no name rule
// applies; as a trusted PROXY header's destination stands for the local
// address. The daemon is placed in that class at its accept, as any
// accepting process is, so the CGI it forks next is born there. The bytes
// are peeked, never consumed, within the sniff limits; a request that is
// not one, or that does not come in time, leaves the listener's path to
// decide, as for any Unix-domain connection.
//
// Which listeners are mod_cgid's: those whose path's base name is
// "cgisock" or "cgisock.<digits>" (cgidSocket): Apache's default
// ScriptSock is logs/cgisock, Debian's ${APACHE_RUN_DIR}/socks/cgisock,
// and Apache appends ".<its pid>" to whatever ScriptSock names.
//
// After each CGI request the Apache thread asks the daemon, on a
// connection of its own, for the pid of the script it started (GETPID_REQ,
// with the Apache connection's id and nothing else): that connection is
// classified as the CGI request with the same id was (cgidState), so that
// the daemon is not moved out of the class and back for it.

// cgidSocket reports whether path, a Unix-domain listener's, is mod_cgid's
// ScriptSock.
func cgidSocket(path string) bool {
	if path == "" || path[0] == '@' {
		return false
	}
	rest, ok := strings.CutPrefix(filepath.Base(path), "cgisock")
	if !ok {
		return false
	}
	if rest == "" {
		return true
	}
	digits, ok := strings.CutPrefix(rest, ".")
	if !ok || digits == "" {
		return false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// maxCGIDRecent bounds cgidState.recent. Apache's connection ids are
// bounded by its processes times their threads, and each entry goes with
// the pid request that follows it; the bound is for a daemon whose
// requests never ask for pids.
const maxCGIDRecent = 4096

// cgidState is what a mod_cgid listener remembers: what decided the
// latest CGI request of each Apache connection id, until the pid request
// that follows it.
type cgidState struct {
	mu     sync.Mutex
	recent map[uint64]cgidNames
}

// cgidNames is what classifies a connection to mod_cgid's daemon: the
// names and the address its request gives.
type cgidNames struct {
	host, alt string
	server    netip.AddrPort
}

func newCGIDState() *cgidState { return &cgidState{recent: map[uint64]cgidNames{}} }

func (st *cgidState) remember(id uint64, n cgidNames) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if _, ok := st.recent[id]; !ok && len(st.recent) >= maxCGIDRecent {
		for k := range st.recent {
			delete(st.recent, k)
			break
		}
	}
	st.recent[id] = n
}

func (st *cgidState) take(id uint64) (cgidNames, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	n, ok := st.recent[id]
	delete(st.recent, id)
	return n, ok
}

// classifyCGID is classifyByBytes for a connection to mod_cgid's daemon
// (l.cgid set): it peeks at the request and classifies c if it decides:
// by the request's names and address, by the path when it is no request
// or gives neither, or when the byte limit is reached or the client
// closed. It reports whether c was classified.
func (s *Supervisor) classifyCGID(c *conn, cl *classifierGen) bool {
	_, limit := cl.SniffLimits()
	bufp := s.peekBufs.get(limit)
	defer s.peekBufs.put(bufp)
	n, final := peekAll(c.fd, *bufp)
	req, res := vhost.ParseCGID((*bufp)[:n])
	if res == vhost.NeedMore && n < limit && !final {
		return false
	}
	// A pid request takes the names of the CGI request before it.
	var names cgidNames
	found := res == vhost.Found
	switch {
	case found && req.Type == vhost.CGIDGetPID:
		names, found = c.l.cgid.take(req.ConnID)
	case found:
		names = cgidNames{host: req.Host, alt: req.ServerName, server: req.Server}
		c.l.cgid.remember(req.ConnID, names)
		s.stats.NamesFound.Add(1)
	}
	if !found {
		// No request (or not all of it in time or within the byte
		// limit), or a pid request whose CGI request was never seen.
		s.stats.NameFallbacks.Add(1)
		s.finishByAddr(c, cl)
		return true
	}
	s.finish(c, c.byCGID(cl, names))
	return true
}

// byCGID is c's class when its mod_cgid request gave names and server:
// the request's address stands for c's (rulesAddr) when it has one, the
// listener's path otherwise.
func (c *conn) byCGID(cl Classifier, names cgidNames) Decision {
	if names.server.IsValid() {
		c.path = ""
		c.cgidServer = names.server
	}
	host, alt := names.host, names.alt
	if host == "" {
		host, alt = alt, ""
	}
	if host == "" {
		return c.byAddr(cl)
	}
	d, host := c.byNames(cl, host, alt)
	c.host = host
	return d
}

// peekAll peeks at the bytes waiting on the Unix stream socket fd into
// buf, as many as are queued and fit, and reports final when no more can
// come (the peer closed its side, or the connection failed). A plain
// MSG_PEEK never reads past a message that carries file descriptors
// (unix_stream_read_generic stops there), and mod_cgid's first message
// passes the CGI's stderr pipe: with SO_PEEK_OFF set, each peek goes on
// where the one before stopped. The offset is switched off again before
// peekAll returns, so the server reads as if nobody had looked. Without
// SO_PEEK_OFF only the first message is seen, and the request falls back
// to its path when its names lie beyond.
func peekAll(fd int, buf []byte) (n int, final bool) {
	offset := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0) == nil
	if offset {
		defer unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, -1)
	}
	for n < len(buf) {
		k, _, err := unix.Recvfrom(fd, buf[n:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return n, false
		case err != nil || k == 0:
			return n, true
		}
		n += k
		if !offset {
			// Peeking again would see the same bytes.
			return n, n < len(buf) && peerClosed(fd)
		}
	}
	return n, false
}

// inOrder reports whether l's next connection must wait in the kernel's
// queue for the one pending before it: mod_cgid's requests are served in
// the order they came. An Apache thread sends its CGI request, then opens
// a connection of its own to ask for the script's pid, and the daemon,
// which answers requests one at a time, must have had the CGI request
// first or it knows no pid (and Apache answers 503); a pid request, whole
// at once, would overtake a CGI request still pending. The daemon reads
// each request to its end before it accepts the next, so a silent client
// holds up the others there natively too; here for sniff_timeout at
// most. Called with l.mu held.
func (l *listener) inOrder() bool { return l.cgid != nil && len(l.pending) > 0 }
