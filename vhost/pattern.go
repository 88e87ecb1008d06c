package vhost

import (
	"errors"
	"fmt"
	"net/netip"
	pathpkg "path"
	"strconv"
	"strings"
)

// Kind says what a Pattern matches.
type Kind uint8

const (
	// KindInvalid is the zero Pattern's kind; it matches nothing, so a
	// Pattern that was never parsed cannot claim connections by accident.
	KindInvalid Kind = iota
	// KindAddrPort matches one local address and port: "192.0.2.10:443".
	KindAddrPort
	// KindAddr matches one local address on any port: "192.0.2.10". A CIDR
	// of full length ("192.0.2.10/32") is parsed as this kind too, so the
	// two spellings are one pattern for matching and for duplicate checks.
	KindAddr
	// KindPrefix matches local addresses in a CIDR: "192.0.2.0/24".
	KindPrefix
	// KindPort matches a local port on any address: "*:8443".
	KindPort
	// KindName matches the host name the client asks for: "shop.example.com",
	// "*.shop.example.com", optionally with ":port".
	KindName
	// KindUnix matches the connections of a Unix-domain listener by the
	// path it is bound to: "unix:/run/php/shop.sock", or an abstract
	// socket's name, "unix:@shop" (unix(7)).
	KindUnix
)

func (k Kind) String() string {
	switch k {
	case KindAddrPort:
		return "address:port"
	case KindAddr:
		return "address"
	case KindPrefix:
		return "CIDR"
	case KindPort:
		return "port"
	case KindName:
		return "host name"
	case KindUnix:
		return "unix socket"
	}
	return "invalid"
}

// Pattern is one entry of a vhost's match list.
type Pattern struct {
	Kind Kind
	// Prefix holds the address for the address kinds (a full-length prefix
	// for KindAddr and KindAddrPort), masked, without zone; IPv4-mapped
	// IPv6 is stored as IPv4 because connections are matched unmapped.
	Prefix netip.Prefix
	// Port is the local port, 0 meaning any.
	Port uint16
	// Name is the lower-case host name without trailing dot; a wildcard
	// keeps its leading "*.".
	Name string
	// Path is a KindUnix pattern's socket: a filesystem path
	// ("/run/php/shop.sock") or an abstract name with "@" for its leading
	// NUL byte ("@shop"), as getsockname(2) reports the listener's.
	Path string
	// Raw is the pattern as written, for messages and round trips.
	Raw string
}

// IsName reports whether the pattern matches by host name.
func (p Pattern) IsName() bool { return p.Kind == KindName }

// String returns the pattern as written.
func (p Pattern) String() string { return p.Raw }

// Canonical returns one spelling per meaning ("::ffff:192.0.2.1/128" and
// "192.0.2.1" both give "192.0.2.1"), so two patterns that match the same
// connections compare equal whatever way they were written.
func (p Pattern) Canonical() string {
	switch p.Kind {
	case KindAddrPort:
		return netip.AddrPortFrom(p.Prefix.Addr(), p.Port).String()
	case KindAddr:
		return p.Prefix.Addr().String()
	case KindPrefix:
		return p.Prefix.String()
	case KindPort:
		return "*:" + strconv.Itoa(int(p.Port))
	case KindName:
		if p.Port != 0 {
			return p.Name + ":" + strconv.Itoa(int(p.Port))
		}
		return p.Name
	case KindUnix:
		return unixPrefix + p.Path
	}
	return ""
}

// unixPrefix starts a KindUnix pattern.
const unixPrefix = "unix:"

// Limits of sun_path (unix(7)): 108 bytes, of which a filesystem path
// needs one for its terminating NUL, and an abstract name one for its
// leading NUL.
const (
	maxUnixPath     = 107
	maxAbstractName = 106
)

// parseUnix parses what follows "unix:": an absolute, clean filesystem
// path, or "@" and an abstract socket's name. A path that is not written
// the way getsockname(2) reports it could never match a listener, so it is
// refused rather than silently ignored.
func parseUnix(path string) (Pattern, error) {
	if name, ok := strings.CutPrefix(path, "@"); ok {
		if name == "" || len(name) > maxAbstractName {
			return Pattern{}, fmt.Errorf("an abstract socket's name has 1..%d bytes (sun_path less its leading NUL), not %d", maxAbstractName, len(name))
		}
		for i := 0; i < len(name); i++ {
			if name[i] < 0x20 || name[i] > 0x7e {
				return Pattern{}, fmt.Errorf("byte %#02x in an abstract socket's name; write names of printable ASCII characters", name[i])
			}
		}
		return Pattern{Kind: KindUnix, Path: path}, nil
	}
	switch {
	case path == "":
		return Pattern{}, errors.New("empty socket path; write unix:/absolute/path.sock or unix:@abstract-name")
	case strings.IndexByte(path, 0) >= 0:
		return Pattern{}, errors.New("a NUL byte cannot be in a socket path")
	case path[0] != '/':
		return Pattern{}, errors.New("a socket path must be absolute (start with /), as the listener's address is; an abstract socket is written unix:@name")
	case path == "/":
		return Pattern{}, errors.New("/ is a directory, not a socket path")
	case len(path) > maxUnixPath:
		return Pattern{}, fmt.Errorf("socket path of %d bytes; sun_path holds at most %d (unix(7))", len(path), maxUnixPath)
	}
	if clean := pathpkg.Clean(path); clean != path {
		return Pattern{}, fmt.Errorf("write the path as the listener reports it, %q (no //, ., .. or trailing /)", unixPrefix+clean)
	}
	return Pattern{Kind: KindUnix, Path: path}, nil
}

// maxPatternLen bounds the work spent on one pattern: a DNS name (253) with
// a port is the longest thing that can be valid.
const maxPatternLen = 260

// ParsePattern parses one match pattern. Errors start with the pattern,
// quoted, and say what is allowed.
func ParsePattern(s string) (Pattern, error) {
	p, err := parsePattern(s)
	if err != nil {
		return Pattern{}, fmt.Errorf("%q: %w", s, err)
	}
	p.Raw = s
	return p, nil
}

func parsePattern(s string) (Pattern, error) {
	switch {
	case s == "":
		return Pattern{}, errors.New("empty pattern; write an address, IP:port, CIDR, *:PORT, host name or unix:/path")
	case strings.TrimSpace(s) != s:
		return Pattern{}, errors.New("remove the spaces around the pattern")
	case strings.HasPrefix(s, unixPrefix):
		return parseUnix(s[len(unixPrefix):])
	case len(s) >= len(unixPrefix) && strings.EqualFold(s[:len(unixPrefix)], unixPrefix),
		strings.HasPrefix(s, "unix/"), strings.HasPrefix(s, "unix@"):
		return Pattern{}, fmt.Errorf("a unix socket is written unix:/absolute/path.sock or unix:@abstract-name, \"unix:\" in lower case")
	case len(s) > maxPatternLen:
		return Pattern{}, fmt.Errorf("too long (%d characters); a host name has at most 253", len(s))
	case s == "*":
		return Pattern{}, errors.New("a bare * would match every connection, which is what [defaults] is for; write *:PORT for one port on every address")
	case strings.HasPrefix(s, "*:"):
		port, err := parsePort(s[2:])
		if err != nil {
			return Pattern{}, fmt.Errorf("a port-only pattern is *:PORT with PORT 1..65535: %w", err)
		}
		return Pattern{Kind: KindPort, Port: port}, nil
	case strings.Contains(s, "/"):
		return parsePrefix(s)
	}
	if inner, ok := strings.CutPrefix(s, "["); ok && strings.HasSuffix(inner, "]") {
		// "[2001:db8::1]" is how people write IPv6 next to ports; accept it
		// without one as well.
		a, err := netip.ParseAddr(inner[:len(inner)-1])
		if err != nil || !a.Is6() {
			return Pattern{}, errors.New("not a valid IPv6 address in brackets")
		}
		return addrPattern(a)
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return addrPattern(a)
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return addrPortPattern(ap)
	}
	if looksLikeAddress(s) {
		return Pattern{}, errors.New("not a valid IP address, IP:port or CIDR (IPv6 with a port is written [2001:db8::1]:443)")
	}
	return parseName(s)
}

func addrPattern(a netip.Addr) (Pattern, error) {
	a = a.Unmap()
	if err := checkAddr(a); err != nil {
		return Pattern{}, err
	}
	return Pattern{Kind: KindAddr, Prefix: netip.PrefixFrom(a, a.BitLen())}, nil
}

func addrPortPattern(ap netip.AddrPort) (Pattern, error) {
	if ap.Port() == 0 {
		return Pattern{}, errors.New("port 0 is not a port a server listens on; use 1..65535")
	}
	a := ap.Addr().Unmap()
	if a.IsUnspecified() {
		return Pattern{}, fmt.Errorf("%s is never the local address of a connection; write *:%d for that port on every address", ap.Addr(), ap.Port())
	}
	if err := checkAddr(a); err != nil {
		return Pattern{}, err
	}
	return Pattern{Kind: KindAddrPort, Prefix: netip.PrefixFrom(a, a.BitLen()), Port: ap.Port()}, nil
}

// checkAddr refuses addresses no accepted connection can have as its local
// address, because a pattern naming one would silently never match.
func checkAddr(a netip.Addr) error {
	if a.Zone() != "" {
		return errors.New("zones (%eth0) are not supported; write the address alone")
	}
	if a.IsUnspecified() {
		return errors.New("the unspecified address is never the local address of a connection; write 0.0.0.0/0 or ::/0 for every address, or *:PORT for a port")
	}
	return nil
}

func parsePrefix(s string) (Pattern, error) {
	addrStr, bitsStr, _ := strings.Cut(s, "/")
	a, err := netip.ParseAddr(addrStr)
	if err != nil {
		return Pattern{}, fmt.Errorf("%q before the / is not a valid IP address", addrStr)
	}
	if a.Zone() != "" {
		return Pattern{}, errors.New("zones (%eth0) are not supported; write the prefix alone")
	}
	fam := "IPv4"
	if a.Is6() {
		fam = "IPv6"
	}
	bits, err := strconv.Atoi(bitsStr)
	if err != nil || bitsStr == "" || bitsStr[0] == '+' || bitsStr[0] == '-' || (len(bitsStr) > 1 && bitsStr[0] == '0') {
		return Pattern{}, fmt.Errorf("prefix length %q is not a number 0..%d", bitsStr, a.BitLen())
	}
	if bits < 0 || bits > a.BitLen() {
		return Pattern{}, fmt.Errorf("prefix length %d out of range for %s (0..%d)", bits, fam, a.BitLen())
	}
	if a.Is4In6() {
		// Connections from IPv4 clients on dual-stack sockets are matched as
		// IPv4, so a mapped prefix must translate to an IPv4 one exactly.
		if bits < 96 {
			return Pattern{}, fmt.Errorf("an IPv4-mapped prefix needs a length of 96..128 (it is matched as IPv4); write the IPv4 prefix instead")
		}
		a, bits = a.Unmap(), bits-96
	}
	pfx := netip.PrefixFrom(a, bits).Masked()
	if bits == a.BitLen() {
		if a.IsUnspecified() {
			return Pattern{}, errors.New("the unspecified address is never the local address of a connection")
		}
		return Pattern{Kind: KindAddr, Prefix: pfx}, nil
	}
	return Pattern{Kind: KindPrefix, Prefix: pfx}, nil
}

func parseName(s string) (Pattern, error) {
	name, portStr, hasPort := strings.Cut(s, ":")
	var port uint16
	if hasPort {
		p, err := parsePort(portStr)
		if err != nil {
			return Pattern{}, fmt.Errorf("after the host name: %w", err)
		}
		port = p
	}
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	labels := name
	if rest, ok := strings.CutPrefix(name, "*."); ok {
		labels = rest
	}
	if err := checkHostName(labels); err != nil {
		return Pattern{}, err
	}
	if len(name) > 253 {
		// "*." counts too: every name the wildcard matches is longer still.
		return Pattern{}, fmt.Errorf("wildcard of %d characters; DNS allows 253 in all, so it would match no name", len(name))
	}
	return Pattern{Kind: KindName, Name: name, Port: port}, nil
}

// checkHostName accepts DNS names: labels of letters, digits, '-' and '_'
// (underscores are not valid host names but do occur in vhost names),
// 1..63 characters each, 253 in all.
func checkHostName(name string) error {
	if name == "" {
		return errors.New("empty host name")
	}
	if len(name) > 253 {
		return fmt.Errorf("host name of %d characters; DNS allows 253", len(name))
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" {
			return errors.New("empty label (two dots in a row, or a leading dot) in host name")
		}
		if len(label) > 63 {
			return fmt.Errorf("label %q has %d characters; DNS allows 63", label, len(label))
		}
		for _, c := range label {
			switch {
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			case c == '*':
				return errors.New("a wildcard is allowed only as the whole first label, as in *.example.com")
			case c > 0x7f:
				return fmt.Errorf("character %q cannot be in a DNS name; write an internationalized name in its xn-- (punycode) form", c)
			default:
				return fmt.Errorf("character %q cannot be in a host name (letters, digits, '-', '_' and '.' can)", c)
			}
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("label %q starts or ends with '-'", label)
		}
	}
	return nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 || s[0] == '+' {
		return 0, fmt.Errorf("port %q is not a number 1..65535", s)
	}
	return uint16(n), nil
}

// looksLikeAddress tells a mistyped address from a host name, so that
// "192.0.2.300" is reported as a bad address rather than accepted as a name.
func looksLikeAddress(s string) bool {
	if strings.HasPrefix(s, "[") || strings.Count(s, ":") > 1 {
		return true
	}
	host, _, _ := strings.Cut(s, ":")
	for _, c := range host {
		if (c < '0' || c > '9') && c != '.' {
			return false
		}
	}
	return true
}
