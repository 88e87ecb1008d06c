package vhost

// FastCGI 1.0: the FastCGI Specification (Open Market, 1996), as on
// fastcgi-archives.github.io. The numbers below are its section 8.
const (
	fcgiVersion1     = 1
	fcgiBeginRequest = 1
	fcgiParams       = 4
	fcgiStdin        = 5
	fcgiHeaderLen    = 8 // FCGI_HEADER_LEN
	fcgiBeginLen     = 8 // FCGI_BeginRequestBody
	fcgiResponder    = 1
	fcgiFilter       = 3 // the last role: RESPONDER, AUTHORIZER, FILTER

	// maxFastCGI bounds what sniffFastCGI looks at, as maxHTTPHead does
	// for HTTP: a request whose name is not decided within it gets NoName.
	maxFastCGI = 64 << 10
	// maxHostValue is the longest HTTP_HOST or SERVER_NAME value that can
	// hold a name: 253 characters, a trailing dot and ":65535". A longer
	// one is no name (sniffHTTP would accept a port of more digits).
	maxHostValue = 253 + len(".:65535")
)

// fcgiReader reads the FCGI_PARAMS stream of one request sequentially out
// of the records that carry it, however they split it, skipping padding
// and the records of other requests (multiplexing, management records),
// without copying. After the first failure every read is a no-op and why
// says NeedMore or NoName.
type fcgiReader struct {
	data   []byte
	pos    int // next byte of data to read
	id     int // the request whose params are read
	rec    int // content bytes of the current params record not yet read
	pad    int // padding after the current record's content not yet skipped
	ended  bool
	failed bool
	why    Sniff
}

func (r *fcgiReader) fail(why Sniff) bool {
	if !r.failed {
		r.failed, r.why = true, why
	}
	return false
}

// short fails for lack of data: need is a lower bound of the bytes that
// must follow data before an answer. Past maxFastCGI the answer is NoName,
// so that a claim of a huge length is refused at once rather than after
// the caller has waited for bytes that cannot lead to a name.
func (r *fcgiReader) short(need int) bool {
	if len(r.data)+max(need, 1) > maxFastCGI {
		return r.fail(NoName)
	}
	return r.fail(NeedMore)
}

// fill makes at least one byte of the params stream available. want is
// how many stream bytes the caller still needs (a lower bound for short).
// At the end of the stream (an empty FCGI_PARAMS record) it returns false
// with ended set and failed not.
func (r *fcgiReader) fill(want int) bool {
	if r.failed {
		return false
	}
	for r.rec == 0 {
		if r.ended {
			return false
		}
		if avail := len(r.data) - r.pos; avail < r.pad {
			return r.short(r.pad - avail + fcgiHeaderLen + want)
		}
		r.pos += r.pad
		r.pad = 0
		h := r.data[r.pos:]
		if len(h) > 0 && h[0] != fcgiVersion1 {
			return r.fail(NoName)
		}
		if len(h) < fcgiHeaderLen {
			return r.short(fcgiHeaderLen - len(h) + want)
		}
		typ, id := h[1], int(h[2])<<8|int(h[3])
		n, pad := int(h[4])<<8|int(h[5]), int(h[6])
		if id != r.id {
			// Another request's record or a management record (id 0):
			// its length must be read past, wherever the name is.
			end := fcgiHeaderLen + n + pad
			if len(h) < end {
				return r.short(end - len(h) + want)
			}
			r.pos += end
			continue
		}
		if typ != fcgiParams {
			// FCGI_STDIN or an abort before the params ended: a protocol
			// error for libfcgi; php-fpm takes the params read so far.
			// Neither is worth a name.
			return r.fail(NoName)
		}
		r.pos += fcgiHeaderLen
		if n == 0 {
			r.ended = true
			return false
		}
		r.rec, r.pad = n, pad
	}
	if r.pos == len(r.data) {
		return r.short(want)
	}
	return true
}

// atEnd reports whether the params stream ended at this point, between two
// name-value pairs.
func (r *fcgiReader) atEnd() bool {
	// Want no stream byte: the stream may end here.
	return !r.fill(0) && r.ended && !r.failed
}

// more is fill inside a name-value pair, where the end of the stream is a
// malformed pair.
func (r *fcgiReader) more(want int) bool {
	if r.fill(want) {
		return true
	}
	return r.fail(NoName) // no-op unless the stream ended
}

// read copies len(p) stream bytes into p.
func (r *fcgiReader) read(p []byte) bool {
	for len(p) > 0 {
		if !r.more(len(p)) {
			return false
		}
		k := copy(p[:min(len(p), r.rec)], r.data[r.pos:])
		r.pos += k
		r.rec -= k
		p = p[k:]
	}
	return true
}

// skip passes over n stream bytes.
func (r *fcgiReader) skip(n int) bool {
	for n > 0 {
		if !r.more(n) {
			return false
		}
		k := min(n, r.rec, len(r.data)-r.pos)
		r.pos += k
		r.rec -= k
		n -= k
	}
	return true
}

// length reads a name or value length: one byte below 128, else four
// bytes, big-endian, with the high bit cleared (spec §3.4). Lengths past
// maxFastCGI fail at once with NoName; 0 after a failure.
func (r *fcgiReader) length() int {
	var b [4]byte
	if !r.read(b[:1]) {
		return 0
	}
	if b[0] < 0x80 {
		return int(b[0])
	}
	if !r.read(b[1:]) {
		return 0
	}
	n := int(b[0]&0x7f)<<24 | int(b[1])<<16 | int(b[2])<<8 | int(b[3])
	if n > maxFastCGI {
		r.fail(NoName)
		return 0
	}
	return n
}

// sniffFastCGI returns the host name a FastCGI request is for: the
// HTTP_HOST parameter (its value as an HTTP Host: port stripped,
// normalised) as soon as it is read, or, when the params stream has ended
// (an empty FCGI_PARAMS record) without a valid HTTP_HOST, the last
// SERVER_NAME. With HTTP_HOST it also returns alt, the last valid
// SERVER_NAME read before it ("" for none): nginx sends its fastcgi_params,
// SERVER_NAME among them, before the request's headers, and SERVER_NAME is
// then the name of the server block that serves the request, which the
// caller may use when the client's Host names no site (SniffNames).
// data[0] is FCGI_VERSION_1.
//
// The connection must start with an FCGI_BEGIN_REQUEST record (after
// empty FCGI_STDIN records, which php-fpm skips there: the end of a
// previous request's body on a kept connection); the params of its request
// may be split over records, and a name or value over record boundaries;
// records of other request ids are skipped. Invalid or IP-literal values,
// a stream of that request other than FCGI_PARAMS before the params end,
// a pair cut by the end of the stream, and anything that is not FastCGI
// give NoName, as does a request whose name is not decided within
// maxFastCGI bytes (at once when a length claims more). Like SniffName it
// never modifies data and allocates only the returned name.
func sniffFastCGI(data []byte) (name, alt string, result Sniff) {
	if len(data) > maxFastCGI {
		data = data[:maxFastCGI]
	}
	// Data of maxFastCGI bytes that does not decide never will.
	short := NeedMore
	if len(data) == maxFastCGI {
		short = NoName
	}
	h := data
	// php-fpm skips empty FCGI_STDIN headers before a request whatever
	// their id (fcgi_read_request in main/fastcgi.c) and reads the next
	// header right after them, so any padding would break it.
	for len(h) > 1 && h[1] == fcgiStdin {
		if h[0] != fcgiVersion1 {
			return "", "", NoName
		}
		for i := 4; i < min(len(h), 7); i++ { // content and padding length
			if h[i] != 0 {
				return "", "", NoName
			}
		}
		if len(h) < fcgiHeaderLen {
			return "", "", short
		}
		h = h[fcgiHeaderLen:]
	}
	// The FCGI_BEGIN_REQUEST record: the request id, a body of 8 bytes
	// starting with a known role; checked as its bytes arrive, so that
	// what is not FastCGI is refused early.
	switch {
	case len(h) == 0:
		return "", "", short
	case h[0] != fcgiVersion1:
		return "", "", NoName
	case len(h) > 1 && h[1] != fcgiBeginRequest:
		return "", "", NoName
	case len(h) > 3 && h[2]|h[3] == 0: // the null request id of management records
		return "", "", NoName
	case len(h) > 5 && (h[4] != 0 || h[5] != fcgiBeginLen):
		return "", "", NoName
	case len(h) > 9 && (h[8] != 0 || h[9] < fcgiResponder || h[9] > fcgiFilter):
		return "", "", NoName
	case len(h) < fcgiHeaderLen+fcgiBeginLen:
		return "", "", short
	}
	r := fcgiReader{
		data: data,
		pos:  len(data) - len(h) + fcgiHeaderLen + fcgiBeginLen,
		id:   int(h[2])<<8 | int(h[3]),
		pad:  int(h[6]),
	}
	var (
		key   [len("SERVER_NAME")]byte
		value [maxHostValue]byte
		buf   [253]byte // the name found
		last  [253]byte // the last valid SERVER_NAME
		n     int       // its length, 0 for none
		// hostDone says the first HTTP_HOST was read and was no valid
		// name: later ones change nothing.
		hostDone bool
	)
	for !r.atEnd() && !r.failed {
		nameLen, valueLen := r.length(), r.length()
		if r.failed {
			break
		}
		if nameLen != len("HTTP_HOST") && nameLen != len("SERVER_NAME") {
			r.skip(nameLen + valueLen)
			continue
		}
		if !r.read(key[:nameLen]) {
			break
		}
		// The first HTTP_HOST decides, so that more bytes never change the
		// answer; nginx and Apache send one (nginx drops the Host header
		// when a fastcgi_param sets HTTP_HOST). Comparisons of converted
		// byte slices do not allocate.
		host := string(key[:nameLen]) == "HTTP_HOST"
		if !host && string(key[:nameLen]) != "SERVER_NAME" {
			r.skip(valueLen)
			continue
		}
		if host && hostDone {
			r.skip(valueLen)
			continue
		}
		if valueLen > len(value) {
			// No valid name is that long: an HTTP_HOST that long is
			// invalid, a SERVER_NAME that long forgets an earlier one.
			hostDone = hostDone || host
			if !host {
				n = 0
			}
			r.skip(valueLen)
			continue
		}
		if !r.read(value[:valueLen]) {
			break
		}
		k, ok := hostPort(value[:valueLen], &buf)
		if host {
			// The first HTTP_HOST decides; an invalid or IP-literal
			// one leaves the decision to SERVER_NAME at the end.
			hostDone = true
			if ok {
				if n > 0 {
					alt = string(last[:n])
				}
				return string(buf[:k]), alt, Found
			}
			continue
		}
		// php-fpm keeps the last of repeated parameters.
		n = 0
		if ok {
			n = copy(last[:], buf[:k])
		}
	}
	if r.failed {
		return "", "", r.why
	}
	if n == 0 {
		return "", "", NoName
	}
	return string(last[:n]), "", Found
}
