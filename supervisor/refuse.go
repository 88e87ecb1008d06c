package supervisor

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Refusing a connection over a cap, politely: the server never sees it.
//
// An HTTP/1.x client gets a complete response from vhqos itself: its
// request head is read, the response (the class's refuse_status,
// Retry-After, Connection: close) written, the sending side shut down,
// and what the client still sends (a request body, say) read and dropped
// until it closes, so that the kernel does not answer unread bytes with a
// reset that could destroy the response on its way (RFC 9112 §9.6). Any
// other protocol, and a client that sends nothing in time, has the
// connection closed. All of it runs on the event loop, never holding a
// server's accept.

// Bounds of a refusal after the response, as Apache's lingering close
// has them (MAX_SECS_TO_LINGER, SECONDS_TO_LINGER): what the client still
// sends (a request body) is read and dropped until it closes its side,
// for up to refusalLinger in all and refusalIdle without a byte, so that a
// client that sends its whole body before it reads gets the response.
const (
	refusalLinger = 30 * time.Second
	refusalIdle   = 2 * time.Second
	// maxRefusing bounds the refusals under way; beyond it a refused
	// connection is closed at once, so that a flood over a cap cannot
	// exhaust the supervisor's fds.
	maxRefusing = 1024
)

// refusal is a connection being refused.
type refusal struct {
	c   *conn
	adm *Admission
	// head is what the client sent so far, read while no response went
	// out; limit bounds it (the table's sniff_bytes).
	head  []byte
	limit int
	// answered says the response went out, lingerEnd when the drain
	// after it ends whatever the client does.
	answered  bool
	lingerEnd time.Time
	deadline  time.Time
	// done says the connection is closed: a timer or an event of the
	// same round of the event loop may still name r.
	done bool
}

// refuse takes over c, refused by adm: it answers an HTTP client and
// closes the connection, from the event loop when the client's bytes are
// still to come.
func (s *Supervisor) refuse(c *conn, adm *Admission) {
	if s.refusing.Load() >= maxRefusing || unix.SetNonblock(c.fd, true) != nil {
		c.close()
		return
	}
	s.refusing.Add(1)
	timeout, limit := s.classifier.Load().SniffLimits()
	r := &refusal{c: c, adm: adm, limit: limit, deadline: time.Now().Add(timeout)}
	if s.refusalStep(r, false) {
		return
	}
	if err := s.events.watchRefusal(r); err != nil {
		s.log.Warn("cannot wait for a refused client's request; closing it", "err", err)
		s.endRefusal(r)
		return
	}
	s.events.afterRefusal(r.deadline, r)
}

// refusalStep reads what the client sent and moves r on: answered,
// drained, closed. late says r's deadline passed. It reports whether r is
// over (the connection closed).
func (s *Supervisor) refusalStep(r *refusal, late bool) bool {
	if r.done {
		return true
	}
	var buf [4096]byte
	eof, got := false, false
	for !eof {
		flags := unix.MSG_DONTWAIT
		if r.answered {
			// Dropped in the kernel, not copied.
			flags |= unix.MSG_TRUNC
		}
		n, _, err := unix.Recvfrom(r.c.fd, buf[:], flags)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
		case err != nil:
			return s.endRefusal(r)
		case n == 0:
			eof = true
			continue
		case !r.answered:
			r.head = append(r.head, buf[:min(n, max(r.limit-len(r.head), 0))]...)
			continue
		default:
			got = true
			continue
		}
		break
	}
	if r.answered {
		now := time.Now()
		if eof || late && !now.Before(r.deadline) || !now.Before(r.lingerEnd) {
			return s.endRefusal(r)
		}
		if got {
			// The timer already set moves itself on when it finds the
			// deadline later (refusalDeadline): one timer per refusal,
			// however fast the client sends.
			r.deadline = now.Add(refusalIdle)
			if r.deadline.After(r.lingerEnd) {
				r.deadline = r.lingerEnd
			}
		}
		return false
	}
	switch kind, head := requestHead(r.head); {
	case kind == notHTTP:
		return s.endRefusal(r)
	case kind == headComplete, len(r.head) >= r.limit, (eof || late) && kind == headPartial:
		s.answerRefusal(r, head)
		if eof {
			return s.endRefusal(r)
		}
		return false
	case eof || late:
		// Not even a method by the deadline: nothing to answer.
		return s.endRefusal(r)
	}
	return false
}

// answerRefusal writes the refusal response and shuts down vhqos's side;
// isHead says the request was a HEAD (no body).
func (s *Supervisor) answerRefusal(r *refusal, isHead bool) {
	resp := refusalResponse(r.adm.RefuseStatus, r.adm.RetryAfter, isHead)
	// A response this small fits a fresh socket's send buffer; a short
	// write means the client is gone or stuck, and closing is all that is
	// left.
	if n, err := unix.Write(r.c.fd, resp); err != nil || n != len(resp) {
		s.log.Debug("writing a refusal", "err", err, "written", n)
	}
	unix.Shutdown(r.c.fd, unix.SHUT_WR)
	r.answered = true
	now := time.Now()
	r.lingerEnd = now.Add(refusalLinger)
	r.deadline = now.Add(refusalIdle)
	s.events.afterRefusal(r.deadline, r)
}

func (s *Supervisor) endRefusal(r *refusal) bool {
	r.done = true
	s.events.unwatchRefusal(r)
	r.c.close()
	s.refusing.Add(-1)
	return true
}

// refusalDeadline runs in the event loop when r's deadline may have
// passed.
func (s *Supervisor) refusalDeadline(r *refusal, now time.Time) {
	if r.done {
		return
	}
	if r.deadline.After(now) {
		s.events.afterRefusal(r.deadline, r)
		return
	}
	s.refusalStep(r, true)
}

// headKind says what a client's first bytes are, as far as a refusal
// cares.
type headKind int

const (
	headNone     headKind = iota // nothing yet (empty lines at most)
	headPartial                  // the start of an HTTP/1.x request head
	headComplete                 // a complete HTTP/1.x request head
	notHTTP                      // anything else: TLS, HTTP/2's preface, another protocol
)

// requestHead tells whether b begins an HTTP/1.x request (RFC 9112 §3:
// method SP request-target SP HTTP-version CRLF; empty lines before it are
// allowed, §2.2) and whether its head is complete (ends in an empty
// line), and whether the method is HEAD, whose response has no body.
func requestHead(b []byte) (headKind, bool) {
	b = bytes.TrimLeft(b, "\r\n")
	if len(b) == 0 {
		return headNone, false
	}
	sp := bytes.IndexByte(b, ' ')
	method := b
	if sp >= 0 {
		method = b[:sp]
	}
	for _, c := range method {
		if c < 'A' || c > 'Z' {
			return notHTTP, false
		}
	}
	if sp < 0 {
		if len(b) > 32 {
			return notHTTP, false // no method is that long
		}
		return headPartial, false
	}
	isHead := string(method) == "HEAD"
	eol := bytes.IndexByte(b, '\n')
	if eol < 0 {
		return headPartial, isHead
	}
	line := bytes.TrimSuffix(b[:eol], []byte("\r"))
	if !bytes.HasSuffix(line[:max(len(line)-1, 0)], []byte(" HTTP/1.")) {
		return notHTTP, false
	}
	if bytes.Contains(b[eol:], []byte("\n\r\n")) || bytes.Contains(b[eol:], []byte("\n\n")) {
		return headComplete, isHead
	}
	return headPartial, isHead
}

// refusalResponse is the complete HTTP/1.1 response of a refusal: status
// (its reason phrase as net/http has it; 508, which hosting operators
// know from CloudLinux LVE, with LVE's "Resource Limit Is Reached"),
// Retry-After in seconds unless retryAfter is 0 (RFC 9110 §10.2.3),
// Connection: close, and a one-line plain-text body, left out for a HEAD
// request (RFC 9110 §9.3.2) but counted in Content-Length.
func refusalResponse(status, retryAfter int, isHead bool) []byte {
	reason := http.StatusText(status)
	switch {
	case status == http.StatusLoopDetected:
		reason = "Resource Limit Is Reached"
	case reason == "":
		reason = "Unavailable"
	}
	body := fmt.Sprintf("%d %s: too many connections to this site; please try again", status, reason)
	if retryAfter > 0 {
		body += " in " + strconv.Itoa(retryAfter) + " s"
	}
	body += ".\n"
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", status, reason)
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\n")
	fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	if retryAfter > 0 {
		fmt.Fprintf(&b, "Retry-After: %d\r\n", retryAfter)
	}
	b.WriteString("Connection: close\r\n\r\n")
	if !isHead {
		b.WriteString(body)
	}
	return b.Bytes()
}
