package vhost

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Kind says what a Pattern matches.
type Kind int

const (
	// KindAddrPort matches one local address and port: "192.0.2.10:443".
	KindAddrPort Kind = iota
	// KindAddr matches one local address on any port: "192.0.2.10".
	KindAddr
	// KindPrefix matches local addresses in a CIDR: "192.0.2.0/24".
	KindPrefix
	// KindPort matches a local port on any address: "*:8443".
	KindPort
	// KindName matches the host name the client asks for: "shop.example.com",
	// "*.shop.example.com", optionally with ":port".
	KindName
)

// Pattern is one entry of a vhost's match list.
type Pattern struct {
	Kind Kind
	// Prefix holds the address (as a full-length prefix for KindAddr and
	// KindAddrPort) for address kinds; IPv4-mapped IPv6 is stored as IPv4.
	Prefix netip.Prefix
	// Port is the local port, 0 meaning any.
	Port uint16
	// Name is the lower-case host name without trailing dot; a wildcard
	// keeps its leading "*.".
	Name string
	// Raw is the pattern as written, for messages and round trips.
	Raw string
}

// IsName reports whether the pattern matches by host name.
func (p Pattern) IsName() bool { return p.Kind == KindName }

func (p Pattern) String() string { return p.Raw }

// ParsePattern parses one match pattern.
func ParsePattern(s string) (Pattern, error) {
	raw := s
	s = strings.TrimSpace(s)
	if s == "" {
		return Pattern{}, fmt.Errorf("empty match pattern")
	}
	if s != raw {
		return Pattern{}, fmt.Errorf("%q: remove the surrounding spaces", raw)
	}
	if strings.HasPrefix(s, "*:") {
		port, err := parsePort(s[2:])
		if err != nil || port == 0 {
			return Pattern{}, fmt.Errorf("%q: a port-only pattern is *:PORT with PORT 1..65535", raw)
		}
		return Pattern{Kind: KindPort, Port: port, Raw: raw}, nil
	}
	if strings.Contains(s, "/") {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return Pattern{}, fmt.Errorf("%q: not a CIDR prefix: %v", raw, cidrProblem(s, err))
		}
		if pfx.Addr().Zone() != "" {
			return Pattern{}, fmt.Errorf("%q: zones are not supported", raw)
		}
		return Pattern{Kind: KindPrefix, Prefix: unmapPrefix(pfx).Masked(), Raw: raw}, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return Pattern{}, fmt.Errorf("%q: zones are not supported", raw)
		}
		a = a.Unmap()
		return Pattern{Kind: KindAddr, Prefix: netip.PrefixFrom(a, a.BitLen()), Raw: raw}, nil
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if ap.Port() == 0 {
			return Pattern{}, fmt.Errorf("%q: port 0 is not a port a server listens on", raw)
		}
		a := ap.Addr().Unmap()
		return Pattern{Kind: KindAddrPort, Prefix: netip.PrefixFrom(a, a.BitLen()), Port: ap.Port(), Raw: raw}, nil
	}
	if looksLikeAddress(s) {
		return Pattern{}, fmt.Errorf("%q: not a valid IP address (write IPv6 with a port as [2001:db8::1]:443)", raw)
	}
	return parseNamePattern(raw, s)
}

func parseNamePattern(raw, s string) (Pattern, error) {
	name, portStr, hasPort := strings.Cut(s, ":")
	var port uint16
	if hasPort {
		p, err := parsePort(portStr)
		if err != nil || p == 0 {
			return Pattern{}, fmt.Errorf("%q: port must be 1..65535", raw)
		}
		port = p
	}
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	check := strings.TrimPrefix(name, "*.")
	if err := checkHostName(check); err != nil {
		return Pattern{}, fmt.Errorf("%q: %v", raw, err)
	}
	if strings.Contains(check, "*") {
		return Pattern{}, fmt.Errorf("%q: a wildcard is allowed only as the whole first label, as in *.example.com", raw)
	}
	return Pattern{Kind: KindName, Name: name, Port: port, Raw: raw}, nil
}

// checkHostName accepts DNS names: labels of letters, digits, '-' and
// '_' (seen in real vhost names), 1..63 characters, 253 in all.
func checkHostName(name string) error {
	if name == "" {
		return fmt.Errorf("empty host name")
	}
	if len(name) > 253 {
		return fmt.Errorf("host name longer than 253 characters")
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" {
			return fmt.Errorf("empty label in host name")
		}
		if len(label) > 63 {
			return fmt.Errorf("label %q longer than 63 characters", label)
		}
		for _, c := range label {
			switch {
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_', c == '*':
			default:
				return fmt.Errorf("character %q cannot be in a host name", c)
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
	return uint16(n), err
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

func cidrProblem(s string, err error) string {
	addr, bits, _ := strings.Cut(s, "/")
	a, aerr := netip.ParseAddr(addr)
	if aerr != nil {
		return "bad address " + strconv.Quote(addr)
	}
	n, berr := strconv.Atoi(bits)
	if berr != nil || n < 0 || n > a.BitLen() {
		fam := "IPv4"
		if a.Is6() {
			fam = "IPv6"
		}
		return fmt.Sprintf("prefix length %s out of range for %s (0..%d)", bits, fam, a.BitLen())
	}
	return err.Error()
}

func unmapPrefix(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() {
		bits := p.Bits() - 96
		if bits < 0 {
			bits = 0
		}
		return netip.PrefixFrom(a.Unmap(), bits)
	}
	return p
}
