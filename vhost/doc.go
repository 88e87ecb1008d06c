// Package vhost decides which virtual host a connection belongs to: it parses
// the match patterns of the QoS table (addresses, CIDRs, host names) and
// matches a connection's local address, and later the name the client sends,
// against them. The most specific match wins.
package vhost
