// Package vhost decides which virtual host a connection belongs to.
//
// ParsePattern reads the entries of a vhost's match list: an address
// ("192.0.2.10"), an address and port ("[2001:db8::1]:443"), a CIDR
// ("10.0.0.0/8"), a port on every address ("*:8080") or a host name
// ("shop.example.com", "*.shop.example.com", optionally with ":port").
// IPv4-mapped IPv6 counts as IPv4, in patterns and in connections.
//
// A Matcher, built once per QoS table and immutable after, answers two
// questions on the per-connection path without allocating: MatchAddr, the
// vhost of a connection by its local address (IP:port beats IP beats the
// longest CIDR beats *:port), and MatchName, the vhost of the name a client
// sent in its Host header or TLS SNI (an exact name beats the longest
// wildcard suffix; a name bound to a port only matches that local port).
// Both return an index into the caller's list of vhosts, or -1.
//
// SniffName and SniffNames read the name a client asks for in its first
// bytes: an HTTP/1.x Host, a TLS SNI, an HTTP/2 :authority, a FastCGI
// HTTP_HOST. ParseCGID reads what Apache sends mod_cgid's daemon to have a
// CGI run: the names and the server address in the CGI's environment.
//
// Rules that name the same pattern for two vhosts are the caller's error to
// report (the policy package does); the Matcher keeps the first.
package vhost
