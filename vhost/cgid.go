package vhost

import (
	"bytes"
	"encoding/binary"
	"net/netip"
)

// mod_cgid's request: what an Apache child (worker or event MPM) sends the
// cgid daemon over its ScriptSock to have a CGI run, as Apache httpd 2.4
// (modules/generators/mod_cgid.c) sends it on x86-64 Linux, where Debian's
// apache2 runs:
//
//	offset  size  cgid_req_t field
//	     0     4  int req_type          CGI_REQ 1, SSI_REQ 2, GETPID_REQ 3
//	     4     4  (padding)
//	     8     8  unsigned long conn_id the Apache connection's id
//	    16     4  pid_t ppid            the Apache parent's pid
//	    20     4  int env_count
//	    24    12  ap_unix_identity_t ugid (uid, gid, userdir; -1 each
//	                                    without suexec)
//	    36     4  (padding)
//	    40     8  apr_size_t filename_len
//	    48     8  apr_size_t argv0_len
//	    56     8  apr_size_t uri_len
//	    64     8  apr_size_t args_len
//	    72     4  int loglevel
//	    76     4  (padding)
//	    80    72  cgid_rlimit_t limits  (AP_CGID_USE_RLIMIT: three of int
//	                                    set + struct rlimit; zero here)
//
// send_req writes that header (152 bytes, native byte order) with the
// filename, argv0, uri and args (args only when args_len is not 0), none
// NUL-terminated, in one sendmsg that also passes the CGI's stderr pipe
// (SCM_RIGHTS); then each of env_count environment strings, "NAME=value",
// as an apr_size_t length and the bytes, one writev each; then the limits
// again (72 bytes). A GETPID_REQ, which asks for the pid of the script
// run for conn_id and comes on a connection of its own right after its
// CGI_REQ, is the header alone. The daemon's get_req reads the same and
// refuses a header whose env_count is negative, uri_len 0, filename_len
// or argv0_len 0 or over APR_PATH_MAX, or loglevel over APLOG_TRACE8.
const (
	cgidScript  = 1 // CGI_REQ
	cgidInclude = 2 // SSI_REQ
	cgidGetPID  = 3 // GETPID_REQ

	cgidHeaderLen   = 152  // sizeof(cgid_req_t)
	cgidPathMax     = 4096 // APR_PATH_MAX: PATH_MAX on Linux
	cgidMaxLogLevel = 15   // APLOG_TRACE8
	cgidLenSize     = 8    // sizeof(apr_size_t), each env string's length

	// maxCGID bounds what ParseCGID looks at, as maxFastCGI does for
	// FastCGI: a request whose names are not decided within it gets
	// NoName.
	maxCGID = 64 << 10
)

// CGIDType is the kind of a mod_cgid request.
type CGIDType int

const (
	// CGIDScript asks the daemon to run a CGI (CGI_REQ).
	CGIDScript CGIDType = cgidScript
	// CGIDInclude asks it to run an SSI "exec cmd" (SSI_REQ).
	CGIDInclude CGIDType = cgidInclude
	// CGIDGetPID asks for the pid of the script the daemon started for
	// the request before on the same Apache connection (GETPID_REQ): it
	// carries no environment.
	CGIDGetPID CGIDType = cgidGetPID
)

// CGIDRequest is what a mod_cgid request says about the HTTP request it
// runs a script for, from the script's environment.
type CGIDRequest struct {
	Type CGIDType
	// ConnID is the Apache connection's id (conn_rec.id): a GETPID_REQ
	// carries the one of the CGI_REQ it follows.
	ConnID uint64
	// Host is HTTP_HOST as a name (lower case, without port and trailing
	// dot, as SniffName returns it); "" when there is none or it is not a
	// name (an IP literal, say).
	Host string
	// ServerName is SERVER_NAME, the name of the Apache vhost that serves
	// the request, likewise.
	ServerName string
	// Server is SERVER_ADDR:SERVER_PORT: the local address of the
	// client's connection and, under Apache's defaults (UseCanonicalName
	// Off, UseCanonicalPhysicalPort Off), the port the client's Host
	// header names, else the vhost's ServerName port, else 80 (443 for
	// https); with UseCanonicalPhysicalPort On, the connection's own port
	// when Host names none. IPv4-mapped IPv6 is unmapped. Invalid when
	// either is missing or malformed.
	Server netip.AddrPort
}

// ParseCGID reads a mod_cgid request from data, the bytes peeked from a
// connection to the cgid daemon so far (layout above). It answers Found
// for a CGI_REQ or SSI_REQ once HTTP_HOST, SERVER_NAME, SERVER_ADDR and
// SERVER_PORT have all been read (the first of each decides; Apache sends
// each once) or the environment has ended with at least one of Host,
// ServerName and Server valid; for a GETPID_REQ at once with its header.
// NoName is for what is not a request as Apache sends it (an unknown type,
// a header get_req would refuse, a GETPID_REQ with lengths), for an
// environment without any of them, and for a request whose answer is not
// decided within maxCGID bytes (at once when a length claims more). Like
// SniffName, more bytes never change a Found or NoName. It never modifies
// data; it allocates the returned names, and an address that is parsed.
func ParseCGID(data []byte) (CGIDRequest, Sniff) {
	if len(data) > maxCGID {
		data = data[:maxCGID]
	}
	// short is the answer when need bytes are not all there: NeedMore,
	// unless they could never be within maxCGID.
	short := func(need int) (CGIDRequest, Sniff) {
		if need > maxCGID {
			return CGIDRequest{}, NoName
		}
		return CGIDRequest{}, NeedMore
	}
	le := binary.LittleEndian
	if len(data) >= 4 {
		// Refuse what is not a request type as soon as it shows.
		if t := int32(le.Uint32(data)); t < cgidScript || t > cgidGetPID {
			return CGIDRequest{}, NoName
		}
	}
	if len(data) < cgidHeaderLen {
		return short(cgidHeaderLen)
	}
	req := CGIDRequest{
		Type:   CGIDType(le.Uint32(data)),
		ConnID: le.Uint64(data[8:]),
	}
	ppid := int32(le.Uint32(data[16:]))
	envCount := int32(le.Uint32(data[20:]))
	logLevel := int32(le.Uint32(data[72:]))
	var lens [4]uint64 // filename, argv0, uri, args
	for i := range lens {
		lens[i] = le.Uint64(data[40+8*i:])
	}
	if ppid <= 0 {
		return CGIDRequest{}, NoName
	}
	if req.Type == CGIDGetPID {
		// get_cgi_pid zeroes all but type, ppid and conn_id.
		if envCount != 0 || lens != [4]uint64{} {
			return CGIDRequest{}, NoName
		}
		return req, Found
	}
	if envCount < 0 || lens[2] == 0 || lens[0] == 0 || lens[0] > cgidPathMax ||
		lens[1] == 0 || lens[1] > cgidPathMax || logLevel < 0 || logLevel > cgidMaxLogLevel {
		return CGIDRequest{}, NoName
	}
	// Lengths are bounded one by one before they are added, so the sum
	// cannot overflow.
	pos := cgidHeaderLen
	for _, n := range lens {
		if n > maxCGID {
			return CGIDRequest{}, NoName
		}
		pos += int(n)
	}
	if int(envCount) > (maxCGID-pos)/cgidLenSize {
		// Not even the strings' lengths fit.
		return CGIDRequest{}, NoName
	}
	var (
		buf                                    [253]byte
		hostSeen, nameSeen, addrSeen, portSeen bool
		addr                                   netip.Addr
		port                                   uint16
	)
	for range envCount {
		if len(data) < pos+cgidLenSize {
			return short(pos + cgidLenSize)
		}
		n := le.Uint64(data[pos:])
		if n > maxCGID {
			return CGIDRequest{}, NoName
		}
		pos += cgidLenSize
		if len(data) < pos+int(n) {
			return short(pos + int(n))
		}
		key, value, _ := bytes.Cut(data[pos:pos+int(n)], []byte{'='})
		pos += int(n)
		// Comparisons of converted byte slices do not allocate.
		switch {
		case string(key) == "HTTP_HOST" && !hostSeen:
			hostSeen = true
			req.Host = cgidName(value, &buf)
		case string(key) == "SERVER_NAME" && !nameSeen:
			nameSeen = true
			req.ServerName = cgidName(value, &buf)
		case string(key) == "SERVER_ADDR" && !addrSeen:
			addrSeen = true
			// The longest address text: IPv6 with an embedded IPv4 and a
			// zone of an interface name (IFNAMSIZ).
			if len(value) <= len("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255%")+16 {
				if a, err := netip.ParseAddr(string(value)); err == nil {
					addr = a.Unmap()
				}
			}
		case string(key) == "SERVER_PORT" && !portSeen:
			portSeen = true
			// Apache writes it with %u: no sign, no leading zero, as
			// PROXY v1 ports.
			port, _ = proxyPort(value)
		}
		if hostSeen && nameSeen && addrSeen && portSeen {
			break
		}
	}
	if addr.IsValid() && port != 0 {
		req.Server = netip.AddrPortFrom(addr, port)
	}
	if req.Host == "" && req.ServerName == "" && !req.Server.IsValid() {
		return CGIDRequest{}, NoName
	}
	return req, Found
}

// cgidName is an HTTP_HOST or SERVER_NAME value as a name, as SniffName
// returns it; "" when it is none. A value longer than maxHostValue is no
// name, as in FastCGI.
func cgidName(value []byte, buf *[253]byte) string {
	if len(value) > maxHostValue {
		return ""
	}
	if k, ok := hostPort(value, buf); ok {
		return string(buf[:k])
	}
	return ""
}
