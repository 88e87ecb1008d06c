package vhost

import (
	"bytes"
	"encoding/binary"
	"net/netip"
)

// ProxyHeader is what a PROXY protocol header says about the connection it
// precedes (HAProxy's doc/proxy-protocol.txt, versions 1 and 2).
type ProxyHeader struct {
	// Len is the size of the header in bytes, TLVs included: the client's
	// own first bytes, the ones to sniff a name from, start after it. The
	// header is never consumed; the server reads it as before.
	Len int
	// Local: the header names no client: a v2 LOCAL command (HAProxy 2.6
	// sends one for its health checks and for a client on a unix socket)
	// or a v1 "UNKNOWN" line (its v1 for a unix socket client). There are
	// no addresses; the connection's own ones apply.
	Local bool
	// Src is the client's address and port, Dst the address and port it
	// connected to, IPv4-mapped IPv6 unmapped. Both are invalid (zero) when
	// the header carries none: Local, v2 AF_UNIX, AF_UNSPEC or an
	// unspecified transport.
	Src, Dst netip.AddrPort
}

const (
	// proxyV1Max is the longest v1 line a receiver must support, CRLF
	// included (proxy-protocol.txt §2.1); one without CRLF within it is
	// invalid.
	proxyV1Max = 107
	// proxyV2Sig is the v2 signature: the first 12 bytes (§2.2).
	proxyV2Sig = "\r\n\r\n\x00\r\nQUIT\n"
	// proxyV2Fixed is the signature, the version and command, the family
	// and protocol, and the 16-bit length of what follows.
	proxyV2Fixed = 16
	// maxProxyHeader bounds a v2 header, TLVs included. Like maxHTTPHead it
	// is the largest sniff_bytes, so that a header the caller can hold is
	// never refused; one announcing more is NoName.
	maxProxyHeader = 64 << 10
)

// ParseProxy reads the PROXY protocol header (version 1 or 2) that data, the
// bytes peeked from a connection so far, starts with.
//
// Found: data starts with a complete, valid header, described by h; the
// bytes after h.Len are the client's and may be anything. NeedMore: data is
// a proper prefix of a header, or empty. NoName: data does not start with a
// PROXY header, or starts with one the specification says a receiver must
// reject (the server will drop the connection): a v1 line that is not
// exactly "PROXY TCP4|TCP6 src dst sport dport\r\n" or "PROXY UNKNOWN...\r\n"
// within 107 bytes; a v2 header with a version other than 2, a command
// other than LOCAL or PROXY, an unassigned family or transport, an address
// block shorter than its family needs, or larger than 65536 bytes in all.
// h is zero unless the result is Found. A wrong signature, version,
// command, family or length, and a character no v1 line can hold, are
// refused as soon as they arrive, a bad v1 address or port once the line is
// complete; more bytes never change a Found or NoName answer.
//
// A v2 LOCAL command's family is ignored, as the specification says; v2 TLVs
// are skipped without being interpreted. ParseProxy never modifies data and
// does not allocate.
func ParseProxy(data []byte) (h ProxyHeader, result Sniff) {
	if len(data) == 0 {
		return ProxyHeader{}, NeedMore
	}
	switch data[0] {
	case 'P':
		return parseProxyV1(data)
	case proxyV2Sig[0]:
		return parseProxyV2(data)
	}
	return ProxyHeader{}, NoName
}

// proxyMatch compares the start of data with s: NoName at the first
// difference, NeedMore if data is a proper prefix of s, Found if data
// starts with s.
func proxyMatch(data []byte, s string) Sniff {
	n := min(len(data), len(s))
	switch {
	case string(data[:n]) != s[:n]:
		return NoName
	case n < len(s):
		return NeedMore
	}
	return Found
}

func parseProxyV2(data []byte) (ProxyHeader, Sniff) {
	if r := proxyMatch(data, proxyV2Sig); r != Found {
		return ProxyHeader{}, r
	}
	// The fixed fields are checked as they arrive, so that garbage after a
	// signature is refused at once.
	var local bool
	if len(data) > 12 {
		switch data[12] {
		case 0x20: // version 2, LOCAL
			local = true
		case 0x21: // version 2, PROXY
		default:
			return ProxyHeader{}, NoName
		}
	}
	if len(data) > 13 && !local {
		if fam, proto := data[13]>>4, data[13]&0xf; fam > 3 || proto > 2 {
			return ProxyHeader{}, NoName
		}
	}
	if len(data) < proxyV2Fixed {
		return ProxyHeader{}, NeedMore
	}
	size := proxyV2Fixed + int(binary.BigEndian.Uint16(data[14:16]))
	if size > maxProxyHeader {
		return ProxyHeader{}, NoName
	}
	var addrLen int
	if !local {
		// The address block of each family (§2.2); with an unspecified
		// family or transport the receiver ignores whatever is there.
		switch data[13] {
		case 0x11, 0x12: // TCP, UDP over IPv4
			addrLen = 2*4 + 2*2
		case 0x21, 0x22: // over IPv6
			addrLen = 2*16 + 2*2
		case 0x31, 0x32: // AF_UNIX stream, datagram: two sun_path
			addrLen = 2 * 108
		}
	}
	if size-proxyV2Fixed < addrLen {
		return ProxyHeader{}, NoName
	}
	if len(data) < size {
		return ProxyHeader{}, NeedMore
	}
	h := ProxyHeader{Len: size, Local: local}
	a := data[proxyV2Fixed:]
	switch addrLen {
	case 2*4 + 2*2:
		h.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[0:4])), binary.BigEndian.Uint16(a[8:]))
		h.Dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[4:8])), binary.BigEndian.Uint16(a[10:]))
	case 2*16 + 2*2:
		h.Src = netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[0:16])).Unmap(), binary.BigEndian.Uint16(a[32:]))
		h.Dst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[16:32])).Unmap(), binary.BigEndian.Uint16(a[34:]))
	}
	return h, Found
}

// parseProxyV1 reads "PROXY TCP4|TCP6 src dst sport dport\r\n" or
// "PROXY UNKNOWN[ anything]\r\n".
func parseProxyV1(data []byte) (ProxyHeader, Sniff) {
	const prefix = "PROXY "
	if r := proxyMatch(data, prefix); r != Found {
		return ProxyHeader{}, r
	}
	line := data[:min(len(data), proxyV1Max)]
	end := bytes.IndexByte(line, '\r')
	if end < 0 || end+1 == len(line) {
		// No complete line yet: refuse what no more bytes can mend.
		if len(line) == proxyV1Max {
			return ProxyHeader{}, NoName
		}
		body := line[len(prefix):]
		if end >= 0 {
			body = body[:len(body)-1]
		}
		if !proxyV1Partial(body) {
			return ProxyHeader{}, NoName
		}
		return ProxyHeader{}, NeedMore
	}
	// A lone CR or LF does not end the line (§2.1).
	if line[end+1] != '\n' {
		return ProxyHeader{}, NoName
	}
	body := line[len(prefix):end]
	if len(body) == 0 || !proxyV1Partial(body) {
		return ProxyHeader{}, NoName
	}
	h := ProxyHeader{Len: end + 2}
	if body[0] == 'U' {
		// proxyV1Partial checked "UNKNOWN" and what may follow; the
		// receiver ignores the rest of the line.
		if len(body) < len("UNKNOWN") {
			return ProxyHeader{}, NoName
		}
		h.Local = true
		return h, Found
	}
	if len(body) < len("TCP4 ") {
		return ProxyHeader{}, NoName
	}
	v6 := body[3] == '6'
	// Exactly four fields, one space apart: proxyV1Partial allowed no
	// other separators and no empty fields but the last.
	var field [4][]byte
	rest := body[len("TCP4 "):]
	for i := range field {
		j := bytes.IndexByte(rest, ' ')
		if i == len(field)-1 {
			if j >= 0 {
				return ProxyHeader{}, NoName
			}
			j = len(rest)
		} else if j < 0 {
			return ProxyHeader{}, NoName
		}
		field[i], rest = rest[:j], rest[min(j+1, len(rest)):]
	}
	src, ok1 := proxyV1Addr(field[0], v6)
	dst, ok2 := proxyV1Addr(field[1], v6)
	sport, ok3 := proxyPort(field[2])
	dport, ok4 := proxyPort(field[3])
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return ProxyHeader{}, NoName
	}
	h.Src, h.Dst = netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport)
	return h, Found
}

// proxyV1Partial reports whether body, the bytes of a v1 line after
// "PROXY " and before its CR (or all that has arrived so far), can still
// be, or start, a valid line. It refuses only what no continuation can
// mend, so that a NoName on a prefix agrees with the whole line's answer.
func proxyV1Partial(body []byte) bool {
	// A bare LF anywhere: servers that end the line there would read it
	// differently.
	if bytes.IndexByte(body, '\n') >= 0 {
		return false
	}
	if len(body) == 0 {
		return true
	}
	if body[0] == 'U' {
		const unknown = "UNKNOWN"
		return proxyMatch(body, unknown) != NoName && (len(body) <= len(unknown) || body[len(unknown)] == ' ')
	}
	if proxyMatch(body, "TCP4 ") == NoName && proxyMatch(body, "TCP6 ") == NoName {
		return false
	}
	if len(body) < len("TCP4 ") {
		return true
	}
	v6 := body[3] == '6'
	spaces := 0
	for j := len("TCP4 "); j < len(body); j++ {
		switch c := body[j]; {
		case c == ' ':
			// Three single spaces between four fields. body[4], after
			// TCP4, is a space too, so no field is empty but the last.
			if spaces++; spaces > 3 || body[j-1] == ' ' {
				return false
			}
		case c >= '0' && c <= '9', c == '.':
		case v6 && (c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == ':'):
		default:
			return false
		}
	}
	return true
}

// proxyV1Addr parses an address of a TCP4 (dotted quad) or TCP6 line (RFC
// 4291 §2.2 text, the same forms netip.ParseAddr takes, but no zone) without
// allocating. An IPv4-mapped address on a TCP6 line is unmapped.
func proxyV1Addr(b []byte, v6 bool) (netip.Addr, bool) {
	if !v6 {
		ip, ok := proxyIPv4(b)
		return netip.AddrFrom4(ip), ok
	}
	ip, ok := proxyIPv6(b)
	return netip.AddrFrom16(ip).Unmap(), ok
}

// proxyIPv4 parses four decimal octets 0..255 without leading zeros,
// separated by dots.
func proxyIPv4(b []byte) (ip [4]byte, ok bool) {
	pos, val, digits := 0, 0, 0
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			if digits == 1 && val == 0 { // octal-looking leading zero (§2.1)
				return ip, false
			}
			if val = val*10 + int(c-'0'); val > 255 {
				return ip, false
			}
			digits++
		case c == '.' && digits > 0 && pos < 3:
			ip[pos] = byte(val)
			pos, val, digits = pos+1, 0, 0
		default:
			return ip, false
		}
	}
	if pos != 3 || digits == 0 {
		return ip, false
	}
	ip[3] = byte(val)
	return ip, true
}

// proxyIPv6 parses up to eight groups of 1 to 4 hex digits separated by
// colons, one "::" standing for at least one zero group, and optionally a
// dotted quad in place of the last two groups.
func proxyIPv6(b []byte) (ip [16]byte, ok bool) {
	ellipsis := -1 // where in ip the "::" is
	if len(b) >= 2 && b[0] == ':' && b[1] == ':' {
		ellipsis, b = 0, b[2:]
		if len(b) == 0 {
			return ip, true
		}
	}
	i := 0
	for i < 16 {
		off, acc := 0, 0
		for ; off < len(b); off++ {
			d := proxyHexDigit(b[off])
			if d < 0 {
				break
			}
			if off == 4 {
				return ip, false
			}
			acc = acc<<4 | d
		}
		if off == 0 {
			return ip, false
		}
		if off < len(b) && b[off] == '.' {
			if i+4 > 16 { // a quad short of the end needs a "::" (checked below)
				return ip, false
			}
			v4, ok := proxyIPv4(b)
			if !ok {
				return ip, false
			}
			copy(ip[i:], v4[:])
			i, b = i+4, nil
			break
		}
		ip[i], ip[i+1] = byte(acc>>8), byte(acc)
		i += 2
		if b = b[off:]; len(b) == 0 {
			break
		}
		if b[0] != ':' || len(b) == 1 {
			return ip, false
		}
		if b = b[1:]; b[0] == ':' {
			if ellipsis >= 0 {
				return ip, false
			}
			ellipsis, b = i, b[1:]
			if len(b) == 0 {
				break
			}
		}
	}
	switch {
	case len(b) != 0:
		return ip, false
	case i < 16:
		if ellipsis < 0 {
			return ip, false
		}
		n := 16 - i
		copy(ip[ellipsis+n:], ip[ellipsis:i])
		clear(ip[ellipsis : ellipsis+n])
	case ellipsis >= 0:
		return ip, false // "::" must stand for at least one group
	}
	return ip, true
}

// proxyHexDigit is the value of a hex digit, -1 for another byte.
func proxyHexDigit(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// proxyPort parses a decimal port 0..65535 without leading zeros (§2.1).
func proxyPort(b []byte) (uint16, bool) {
	if len(b) == 0 || len(b) > 5 || len(b) > 1 && b[0] == '0' {
		return 0, false
	}
	v := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	if v > 65535 {
		return 0, false
	}
	return uint16(v), true
}
