package itest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// RequestTimeout bounds one request (connect, send, whole answer). It is
// generous: CPU-bound CGIs run for seconds, and the VM runs programs about
// 20 times slower than the host.
var RequestTimeout = 2 * time.Minute

// Response is one HTTP answer and the connection it came on.
type Response struct {
	Status int
	Header http.Header
	Body   string
	// Client and Server are the connection's two ends as the client saw
	// them (IPv4 as IPv4, not v4-mapped): pass them to Capture.Conn.
	Client, Server netip.AddrPort
}

// Get sends one GET over a new connection with "Connection: close" and
// reads the answer and then the connection to its end, so that when it
// returns the server has closed the connection and every packet the server
// sent on it has been received (and can be found with Capture.Conn).
//
// target is a path ("/cgi-bin/whoami", Host is then "itest.invalid") or an
// absolute URL whose host becomes the Host header
// ("http://shop.example.com/cgi-bin/whoami"); addr is where to connect
// ("127.0.0.2:8080", "[::1]:8080").
func Get(addr, target string) (*Response, error) { return GetWithin(addr, target, RequestTimeout) }

// GetWithin is Get with a deadline of its own, for requests that last as
// long as a test wants.
func GetWithin(addr, target string, within time.Duration) (*Response, error) {
	c, err := net.DialTimeout("tcp", addr, within)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(within))
	host, path, err := splitTarget(target)
	if err != nil {
		return nil, err
	}
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host); err != nil {
		return nil, err
	}
	r := bufio.NewReader(c)
	resp, err := readResponse(r, c)
	if err != nil {
		return nil, fmt.Errorf("GET %s from %s: %w", target, addr, err)
	}
	// Wait for the server's FIN: then the whole exchange is on record.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return nil, fmt.Errorf("GET %s from %s: reading to the end of the connection: %w", target, addr, err)
	}
	return resp, nil
}

// KeepAlive is one persistent HTTP/1.1 connection.
type KeepAlive struct {
	Client, Server netip.AddrPort // as in Response
	conn           net.Conn
	r              *bufio.Reader
}

// DialKeepAlive opens a connection for several requests.
func DialKeepAlive(addr string) (*KeepAlive, error) {
	c, err := net.DialTimeout("tcp", addr, RequestTimeout)
	if err != nil {
		return nil, err
	}
	k := &KeepAlive{conn: c, r: bufio.NewReader(c)}
	k.Client, k.Server = ends(c)
	return k, nil
}

// Get sends one GET on the connection and reads its answer (target as for
// the function Get). The connection stays open; the server's packets of
// this answer have been received when it returns.
func (k *KeepAlive) Get(target string) (*Response, error) {
	k.conn.SetDeadline(time.Now().Add(RequestTimeout))
	host, path, err := splitTarget(target)
	if err != nil {
		return nil, err
	}
	if _, err := fmt.Fprintf(k.conn, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host); err != nil {
		return nil, err
	}
	resp, err := readResponse(k.r, k.conn)
	if err != nil {
		return nil, fmt.Errorf("GET %s on a kept-alive connection: %w", target, err)
	}
	return resp, nil
}

// Close closes the connection.
func (k *KeepAlive) Close() error { return k.conn.Close() }

func splitTarget(target string) (host, path string, err error) {
	if strings.HasPrefix(target, "/") {
		return "itest.invalid", target, nil
	}
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		return "", "", fmt.Errorf("target %q: want a path or an absolute URL", target)
	}
	return u.Host, u.RequestURI(), nil
}

func readResponse(r *bufio.Reader, c net.Conn) (*Response, error) {
	hr, err := http.ReadResponse(r, nil)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(hr.Body)
	hr.Body.Close()
	if err != nil {
		return nil, err
	}
	resp := &Response{Status: hr.StatusCode, Header: hr.Header, Body: string(body)}
	resp.Client, resp.Server = ends(c)
	return resp, nil
}

func ends(c net.Conn) (client, server netip.AddrPort) {
	l := c.LocalAddr().(*net.TCPAddr).AddrPort()
	r := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	return unmap(l), unmap(r)
}

// Whoami is what the whoami and burn CGIs report (see ApacheConfig).
type Whoami struct {
	// PID is the process that served the request: the CGI's parent, an
	// Apache child. Cgroups is its /proc/PID/cgroup while it served, by
	// controller list ("" for the cgroup v2 line, "cpu,cpuacct" and so on
	// for v1 hierarchies).
	PID     int
	Cgroups map[string]string
	// CGIPID and CGICgroups are the same for the CGI process itself.
	CGIPID     int
	CGICgroups map[string]string
	// Local and Remote are the connection's ends as Apache saw them
	// (SERVER_ADDR:SERVER_PORT, REMOTE_ADDR:REMOTE_PORT).
	Local, Remote netip.AddrPort
}

// Cgroup is the cgroup of the serving process that QoS placement is
// checked against: the unified hierarchy's on a cgroup v2 system, the cpu
// controller's on v1 or hybrid.
func (w Whoami) Cgroup() string { return cpuCgroup(w.Cgroups) }

// ParseWhoami reads a whoami or burn CGI's answer.
func ParseWhoami(body string) (Whoami, error) {
	w := Whoami{Cgroups: map[string]string{}, CGICgroups: map[string]string{}}
	for _, line := range strings.Split(body, "\n") {
		key, val, _ := strings.Cut(strings.TrimSpace(line), " ")
		var err error
		switch key {
		case "pid":
			w.PID, err = strconv.Atoi(val)
		case "cgi-pid":
			w.CGIPID, err = strconv.Atoi(val)
		case "cgroup", "cgi-cgroup":
			controllers, path, ok := splitCgroupLine(val)
			if !ok {
				return w, fmt.Errorf("bad cgroup line %q", line)
			}
			if key == "cgroup" {
				w.Cgroups[controllers] = path
			} else {
				w.CGICgroups[controllers] = path
			}
		case "local":
			w.Local, err = netip.ParseAddrPort(val)
			w.Local = unmap(w.Local)
		case "remote":
			w.Remote, err = netip.ParseAddrPort(val)
			w.Remote = unmap(w.Remote)
		}
		if err != nil {
			return w, fmt.Errorf("bad line %q: %v", line, err)
		}
	}
	if w.PID == 0 || len(w.Cgroups) == 0 {
		return w, fmt.Errorf("not a whoami answer: %q", body)
	}
	return w, nil
}

// splitCgroupLine splits a line of /proc/PID/cgroup,
// "hierarchy-ID:controller-list:path" (cgroups(7)).
func splitCgroupLine(line string) (controllers, path string, ok bool) {
	_, rest, ok := strings.Cut(line, ":")
	if !ok {
		return "", "", false
	}
	return strings.Cut(rest, ":")
}

// cpuCgroup picks, from /proc/PID/cgroup lines by controller list, the
// unified path on cgroup v2 and the cpu hierarchy's on v1.
func cpuCgroup(cgroups map[string]string) string {
	if CgroupV2() {
		return cgroups[""]
	}
	for list, path := range cgroups {
		for _, c := range strings.Split(list, ",") {
			if c == "cpu" {
				return path
			}
		}
	}
	return ""
}
