package vhost

import (
	"bytes"
	"strings"
)

// Sniff is the result of looking at a connection's first bytes.
type Sniff int

const (
	// NeedMore: the bytes so far are a prefix of something parseable; read
	// more, up to the caller's byte and time bound.
	NeedMore Sniff = iota
	// Found: the client asks for a name.
	Found
	// NoName: enough is known to say there is no usable name: HTTP without
	// (or with more than one, or an invalid) Host, TLS without SNI, HTTP/2
	// prior knowledge, an IP literal, garbage. More bytes do not change it.
	NoName
)

func (s Sniff) String() string {
	switch s {
	case NeedMore:
		return "need more"
	case Found:
		return "found"
	case NoName:
		return "no name"
	}
	return "invalid"
}

const (
	// maxHTTPHead bounds an HTTP request line and headers; a request whose
	// head does not end within it gets NoName. It is the largest
	// sniff_bytes a table may set (policy/REFERENCE.md), so that the
	// caller's byte limit, not this one, decides which heads are read.
	maxHTTPHead = 64 << 10
	// maxClientHello bounds the ClientHello message (its handshake body).
	maxClientHello = 64 << 10
	// maxRecord is the largest TLS plaintext record (RFC 8446 §5.1).
	maxRecord = 1 << 14
	// maxMethod bounds an HTTP method token.
	maxMethod = 32
)

// SniffName looks at data, the bytes peeked from a connection so far, and
// returns the host name the client asks for: lower case, without port and
// trailing dot, always a name MatchName accepts.
//
// For HTTP/1.x it reads the request line and the headers up to the empty
// line: an absolute-form request target (http://host:port/...) gives the
// name and wins over Host (RFC 9112 §3.2.2); otherwise the single Host
// header does. For TLS it reassembles the ClientHello from as many records
// as it spans and returns the host_name of its server_name extension (for
// an ECH outer ClientHello, the public name). It answers Found only once
// the whole request head or ClientHello is there, so appending bytes never
// changes a Found or NoName answer. An IP literal is not a name (NoName).
//
// SniffName never modifies data and allocates only the returned name.
func SniffName(data []byte) (name string, result Sniff) {
	name, _, result = SniffNames(data)
	return name, result
}

// SniffNames is SniffName with the name a FastCGI request gives besides its
// HTTP_HOST: alt is the SERVER_NAME param that came before HTTP_HOST (the
// server block nginx serves the request from, whatever Host the client
// sent), "" for none and for every other protocol. A caller may classify by
// alt where name matches no site (the client's Host is an alias the table
// lacks, or a scanner's guess), so that a site's code does not run outside
// its limits. It allocates only the names it returns.
func SniffNames(data []byte) (name, alt string, result Sniff) {
	if len(data) == 0 {
		return "", "", NeedMore
	}
	switch c := data[0]; {
	case c == 0x16:
		name, result = sniffTLS(data)
		return name, "", result
	case c == fcgiVersion1:
		return sniffFastCGI(data)
	case c == 'P' && strings.HasPrefix(h2cPreface, string(data[:min(len(data), len(h2cPreface))])):
		name, result = sniffH2C(data)
		return name, "", result
	case c >= 'A' && c <= 'Z':
		name, result = sniffHTTP(data)
		return name, "", result
	case c == '\r' || c == '\n':
		// Empty lines before a request line are ignored (RFC 9112 §2.2),
		// by nginx and Apache alike: so they are here.
		i := 1
		for i < len(data) && (data[i] == '\r' || data[i] == '\n') {
			i++
		}
		if i == len(data) {
			return "", "", NeedMore
		}
		if c := data[i]; c >= 'A' && c <= 'Z' {
			name, result = sniffHTTP(data[i:])
			return name, "", result
		}
	}
	return "", "", NoName
}

// BeginsRequest reports whether data, the bytes waiting on a connection
// that has carried requests before (keep-alive), starts a next request
// whose host name may still come: a FastCGI FCGI_BEGIN_REQUEST record
// header, or an HTTP/1.x method token (upper-case letters, as every
// registered method is, at most maxMethod of them) and the space after it, after the empty lines RFC
// 9112 §2.2 lets precede a request line. SniffName says NeedMore of other
// things too, which are not requests: a request body that starts like a
// method, a FastCGI FCGI_STDIN record, a TLS record.
func BeginsRequest(data []byte) bool {
	if len(data) >= 2 && data[0] == fcgiVersion1 {
		return data[1] == fcgiBeginRequest
	}
	data = bytes.TrimLeft(data, "\r\n")
	for i, c := range data {
		switch {
		case c == ' ':
			return i > 0
		case c < 'A' || c > 'Z' || i >= maxMethod:
			return false
		}
	}
	return false
}

// hostName writes h, lower-cased and without one trailing dot, into buf. It
// refuses what is not a DNS name: empty labels, labels over 63 or names over
// 253 characters, characters other than letters, digits, '-' and '_' (the
// set normalizeHost accepts), and IP literals, recognised like URL parsers
// do by a last label that is all digits.
func hostName(h []byte, buf *[253]byte) (int, bool) {
	if n := len(h); n > 0 && h[n-1] == '.' {
		h = h[:n-1]
	}
	if len(h) == 0 || len(h) > len(buf) {
		return 0, false
	}
	label, digits := 0, true
	for i, c := range h {
		switch {
		case c == '.':
			if label == 0 {
				return 0, false
			}
			label, digits = 0, true
			buf[i] = c
			continue
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
			digits = false
		case c >= '0' && c <= '9':
		case c >= 'a' && c <= 'z', c == '-', c == '_':
			digits = false
		default:
			return 0, false
		}
		if label++; label > 63 {
			return 0, false
		}
		buf[i] = c
	}
	if label == 0 || digits {
		return 0, false
	}
	return len(h), true
}

// hostPort is hostName for "host", "host:port" or "host:" as in a Host
// header or an authority. "[v6]:port" and anything with two colons is not a
// name.
func hostPort(hp []byte, buf *[253]byte) (int, bool) {
	if i := bytes.IndexByte(hp, ':'); i >= 0 {
		for _, c := range hp[i+1:] {
			if c < '0' || c > '9' {
				return 0, false
			}
		}
		hp = hp[:i]
	}
	return hostName(hp, buf)
}

// tchar reports whether c may be in an HTTP token (RFC 9110 §5.6.2).
func tchar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// hasPrefixFold reports whether b starts with the lower-case ASCII prefix,
// ignoring case.
func hasPrefixFold(b []byte, prefix string) bool {
	if len(b) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		c := b[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}

// absoluteHost returns the authority's host[:port] of an absolute-form
// http or https request target, or ok false if target is not one.
func absoluteHost(target []byte) (hp []byte, ok bool) {
	var rest []byte
	switch {
	case hasPrefixFold(target, "http://"):
		rest = target[len("http://"):]
	case hasPrefixFold(target, "https://"):
		rest = target[len("https://"):]
	default:
		return nil, false
	}
	if i := bytes.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	// Userinfo is deprecated but legal; the host follows the last '@'.
	if i := bytes.LastIndexByte(rest, '@'); i >= 0 {
		rest = rest[i+1:]
	}
	return rest, true
}

// sniffHTTP parses an HTTP/1.x request head. data[0] is an upper-case
// letter.
func sniffHTTP(data []byte) (string, Sniff) {
	head, short := data, NeedMore
	if len(head) >= maxHTTPHead {
		head, short = head[:maxHTTPHead], NoName
	}
	// Request line: METHOD SP request-target SP HTTP/1.x CRLF.
	i := 0
	for ; i < len(head) && head[i] != ' '; i++ {
		c := head[i]
		if i >= maxMethod || !(c >= 'A' && c <= 'Z' || i > 0 && (c == '-' || c == '_')) {
			return "", NoName
		}
	}
	if i == len(head) {
		return "", short
	}
	method := head[:i]
	i++
	start := i
	for ; i < len(head) && head[i] != ' '; i++ {
		// Controls, CR and LF included: HTTP/0.9 ("GET /\r\n") has no
		// version and no headers.
		if c := head[i]; c < ' ' || c == 0x7f {
			return "", NoName
		}
	}
	if i == len(head) {
		return "", short
	}
	target := head[start:i]
	if len(target) == 0 {
		return "", NoName
	}
	if string(method) == "PRI" && string(target) == "*" {
		return "", NoName // HTTP/2 with prior knowledge: no Host, :authority is in HPACK
	}
	i++
	const version = "HTTP/1.x"
	for k := 0; k < len(version); k++ {
		if i+k == len(head) {
			return "", short
		}
		c := head[i+k]
		if version[k] == 'x' {
			if c < '0' || c > '9' {
				return "", NoName
			}
		} else if c != version[k] {
			return "", NoName
		}
	}
	i += len(version)
	switch {
	case i == len(head), head[i] == '\r' && i+1 == len(head):
		return "", short
	case head[i] == '\n':
		i++
	case head[i] == '\r' && head[i+1] == '\n':
		i += 2
	default:
		return "", NoName
	}

	// Header lines until an empty line; a bare LF ends a line too.
	var host []byte
	hosts, lastHost, first := 0, false, true
	for ; ; first = false {
		j := bytes.IndexByte(head[i:], '\n')
		if j < 0 {
			if i < len(head) && head[i] == '\r' && i+1 < len(head) {
				return "", NoName // a CR not before LF where the empty line should be
			}
			return "", short
		}
		line := head[i : i+j]
		i += j + 1
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			// Obsolete line folding continues the previous field. Servers
			// that accept it would read a longer Host than we could trust.
			if lastHost || first {
				return "", NoName
			}
			continue
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return "", NoName
		}
		for _, c := range line[:colon] {
			if !tchar(c) { // whitespace before the colon included (RFC 9112 §5.1)
				return "", NoName
			}
		}
		value := line[colon+1:]
		for _, c := range value {
			if c < ' ' && c != '\t' || c == 0x7f {
				return "", NoName
			}
		}
		value = bytes.Trim(value, " \t")
		lastHost = colon == 4 && hasPrefixFold(line, "host")
		if lastHost {
			if hosts++; hosts > 1 {
				return "", NoName
			}
			host = value
		}
	}
	if hp, ok := absoluteHost(target); ok {
		host = hp
	} else if hosts == 0 {
		return "", NoName
	}
	var buf [253]byte
	n, ok := hostPort(host, &buf)
	if !ok {
		return "", NoName
	}
	return string(buf[:n]), Found
}

// hsReader reads a handshake message sequentially out of TLS records,
// however the records split it, without copying. After the first failure
// every read is a no-op and why says NeedMore or NoName.
type hsReader struct {
	data   []byte
	pos    int // next byte of data to read
	rec    int // bytes of the current record not yet read
	left   int // bytes of the current message not yet read
	failed bool
	why    Sniff
}

func (r *hsReader) fail(why Sniff) bool {
	if !r.failed {
		r.failed, r.why = true, why
	}
	return false
}

// fill makes at least one byte of the current record available.
func (r *hsReader) fill() bool {
	for r.rec == 0 {
		h := r.data[r.pos:]
		// Check a partial header too, so that garbage is refused at once.
		switch {
		case len(h) > 0 && h[0] != 0x16: // not handshake: alert, CCS, data
			return r.fail(NoName)
		case len(h) > 1 && h[1] != 3:
			return r.fail(NoName)
		case len(h) > 2 && (h[2] < 1 || h[2] > 4): // TLS 1.0 .. 1.3
			return r.fail(NoName)
		case len(h) < 5:
			return r.fail(NeedMore)
		}
		n := int(h[3])<<8 | int(h[4])
		if n == 0 || n > maxRecord {
			return r.fail(NoName)
		}
		r.rec = n
		r.pos += 5
	}
	if r.pos >= len(r.data) {
		return r.fail(NeedMore)
	}
	return true
}

// take checks that n more bytes fit in the message.
func (r *hsReader) take(n int) bool {
	if r.failed {
		return false
	}
	if n > r.left {
		return r.fail(NoName)
	}
	r.left -= n
	return true
}

// read copies len(p) bytes into p.
func (r *hsReader) read(p []byte) bool {
	if !r.take(len(p)) {
		return false
	}
	for len(p) > 0 {
		if !r.fill() {
			return false
		}
		k := copy(p[:min(len(p), r.rec)], r.data[r.pos:])
		r.pos += k
		r.rec -= k
		p = p[k:]
	}
	return true
}

// skip passes over n bytes.
func (r *hsReader) skip(n int) bool {
	if !r.take(n) {
		return false
	}
	for n > 0 {
		if !r.fill() {
			return false
		}
		k := min(n, r.rec, len(r.data)-r.pos)
		r.pos += k
		r.rec -= k
		n -= k
	}
	return true
}

// uint reads a big-endian integer of size bytes (1..3); 0 after a failure.
func (r *hsReader) uint(size int) int {
	var b [3]byte
	if !r.read(b[:size]) {
		return 0
	}
	v := 0
	for _, c := range b[:size] {
		v = v<<8 | int(c)
	}
	return v
}

// sniffTLS parses a ClientHello (RFC 8446 §4.1.2, RFC 6066 §3). data[0] is
// the handshake content type.
func sniffTLS(data []byte) (string, Sniff) {
	r := hsReader{data: data, left: 4}
	typ, length := r.uint(1), r.uint(3)
	if r.failed {
		return "", r.why
	}
	if typ != 1 || length > maxClientHello {
		return "", NoName
	}
	r.left = length
	if r.uint(2)>>8 != 3 { // legacy_version
		r.fail(NoName)
	}
	r.skip(32) // random
	if n := r.uint(1); n > 32 {
		r.fail(NoName)
	} else {
		r.skip(n) // legacy_session_id
	}
	if n := r.uint(2); n < 2 || n%2 != 0 {
		r.fail(NoName)
	} else {
		r.skip(n) // cipher_suites
	}
	if n := r.uint(1); n < 1 {
		r.fail(NoName)
	} else {
		r.skip(n) // legacy_compression_methods
	}
	if r.failed {
		return "", r.why
	}
	if r.left == 0 {
		return "", NoName // a complete ClientHello without extensions
	}
	if n := r.uint(2); n != r.left && !r.failed {
		return "", NoName // extensions must fill the message exactly
	}
	var (
		raw     [254]byte // a name of 253 and a trailing dot
		buf     [253]byte
		n       int
		sni, ok bool
	)
	for r.left > 0 && !r.failed {
		typ, size := r.uint(2), r.uint(2)
		if typ != 0 || r.failed { // GREASE, ECH and all others: skip
			r.skip(size)
			continue
		}
		if sni {
			return "", NoName // a second server_name extension
		}
		sni = true
		if r.uint(2) != size-2 || size <= 2 {
			r.fail(NoName) // server_name_list<1..2^16-1> filling the extension
		}
		for list := size - 2; list > 0 && !r.failed; {
			nameType, nameLen := r.uint(1), r.uint(2)
			list -= 3 + nameLen
			switch {
			case list < 0:
				r.fail(NoName)
			case nameType != 0:
				r.skip(nameLen)
			case ok:
				r.fail(NoName) // two host_names (RFC 6066 §3)
			case nameLen == 0 || nameLen > len(raw):
				r.fail(NoName)
			default:
				if r.read(raw[:nameLen]) {
					n, ok = hostName(raw[:nameLen], &buf)
					if !ok {
						r.fail(NoName)
					}
				}
			}
		}
	}
	if r.failed {
		return "", r.why
	}
	if !ok {
		return "", NoName
	}
	return string(buf[:n]), Found
}
