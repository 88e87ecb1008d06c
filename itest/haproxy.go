package itest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ProxyRoute is one frontend of a test HAProxy: connections to Bind are
// passed, byte for byte (mode tcp), to Server, preceded by a PROXY
// protocol header of Version 1 (send-proxy) or 2 (send-proxy-v2) that
// names the client and Bind.
type ProxyRoute struct {
	Bind, Server string // IPv4 address:port
	Version      int
}

// HAProxy is Debian's HAProxy in front of a server, natively.
type HAProxy struct{ *Daemon }

// StartHAProxy writes a configuration with one "listen" section per route
// into a fresh directory and starts HAProxy in the foreground (-db). It
// returns once every frontend listens; no connection is made to find out,
// so the servers behind it see only the test's. The caller stops it and
// removes the directory; tests use RunHAProxy.
func StartHAProxy(ctx context.Context, routes []ProxyRoute) (*HAProxy, error) {
	if _, err := os.Stat("/usr/sbin/haproxy"); err != nil {
		return nil, fmt.Errorf("haproxy is needed (make deps installs it): %w", err)
	}
	dir, err := scratchDir()
	if err != nil {
		return nil, err
	}
	// Generous timeouts: a test's server may answer only after seconds of
	// CPU on a busy machine. No health checks: they would be connections
	// the servers behind see.
	var b strings.Builder
	fmt.Fprintf(&b, `global
    pidfile %s/haproxy.pid

defaults
    mode tcp
    timeout connect 60s
    timeout client 5m
    timeout server 5m
`, dir)
	var binds []string
	for i, r := range routes {
		send := map[int]string{1: "send-proxy", 2: "send-proxy-v2"}[r.Version]
		if send == "" {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("route %s -> %s: PROXY protocol version %d; want 1 or 2", r.Bind, r.Server, r.Version)
		}
		fmt.Fprintf(&b, "\nlisten route%d\n    bind %s\n    server s %s %s\n", i, r.Bind, r.Server, send)
		binds = append(binds, r.Bind)
	}
	conf := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	d, err := StartDaemon(ctx, DaemonConfig{Name: "haproxy", Dir: dir, Argv: []string{"/usr/sbin/haproxy", "-db", "-f", conf}, Listen: binds})
	if err != nil {
		return nil, err
	}
	return &HAProxy{d}, nil
}

// RunHAProxy is StartHAProxy for a test, stopped and checked like
// RunDaemon.
func RunHAProxy(t testing.TB, routes []ProxyRoute) *HAProxy {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h, err := StartHAProxy(ctx, routes)
	if err != nil {
		t.Fatal(err)
	}
	h.stopAtEnd(t)
	return h
}
