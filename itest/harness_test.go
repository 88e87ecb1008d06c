package itest

// Tests of the harness itself, natively (no vhqos): the namespace, Apache,
// the clients, and a capture that can tell marks apart.

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The tests run in a network namespace of their own with only lo, up,
// and with private mounts.
func TestHarnessNamespace(t *testing.T) {
	from, _ := strconv.ParseUint(os.Getenv(nsEnv), 10, 64)
	if ino, err := netnsInode("/proc/self/ns/net"); err != nil || ino == from {
		t.Fatalf("network namespace %d (%v), started from %d", ino, err, from)
	}
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	if len(ifs) != 1 || ifs[0].Name != "lo" || ifs[0].Flags&net.FlagUp == 0 {
		t.Errorf("interfaces %v, want only lo, up", ifs)
	}
	for _, addr := range []string{"127.0.0.5:8080", "127.1.2.3:1", "[::1]:8080"} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("listening on %s: %v", addr, err)
			continue
		}
		l.Close()
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		// ID parent major:minor root mountpoint options [optional...] - ...
		f := strings.Fields(line)
		if len(f) > 6 && strings.Contains(strings.Join(f[6:], " "), "shared:") {
			t.Errorf("mount propagates to the host's namespace: %s", line)
			break
		}
	}
}

// A test binary finds the repository from any working directory.
func TestHarnessRepoRoot(t *testing.T) {
	here, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir("/")
	if there, err := RepoRoot(); err != nil || there != here {
		t.Errorf("from /: %q, %v; want %q", there, err, here)
	}
}

// Apache prefork, natively: every address is served by its vhost, the
// whoami CGI names an Apache child that the vhost's access log names for
// the same connection, nothing marks the packets, and kept-alive
// connections and the CPU-bound CGI work.
func TestHarnessApacheNative(t *testing.T) {
	capture, err := StartCapture()
	if err != nil {
		t.Fatal(err)
	}
	defer capture.Stop()
	vhosts := []VHost{
		{Name: "shop", Addr: "127.0.0.2:8080"}, {Name: "blog", Addr: "127.0.0.3:8080"}, {Name: "static", Addr: "127.0.0.4:8080"},
		{Name: "nomatch", Addr: "127.0.0.5:8080"}, {Name: "six", Addr: "[::1]:8080"},
	}
	a := RunApache(t, ApacheConfig{VHosts: vhosts})

	type conn struct {
		vhost          string
		client, server netip.AddrPort
		pid            int
	}
	var conns []conn
	for round := 0; round < 2; round++ {
		for _, v := range vhosts {
			resp, err := Get(v.Addr, "/cgi-bin/whoami")
			if err != nil {
				t.Fatal(err)
			}
			w, err := ParseWhoami(resp.Body)
			if err != nil {
				t.Fatalf("%s: %v", v.Name, err)
			}
			if resp.Status != 200 || resp.Server != netip.MustParseAddrPort(v.Addr) || w.Local != resp.Server || w.Remote != resp.Client {
				t.Errorf("%s: status %d, connection %v->%v, Apache saw %v->%v", v.Name, resp.Status, resp.Client, resp.Server, w.Remote, w.Local)
			}
			if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", w.PID)); !strings.Contains(string(cmdline), a.Conf) {
				t.Errorf("%s: serving pid %d is not one of this Apache's (%q)", v.Name, w.PID, cmdline)
			}
			if w.CGIPID == 0 || w.CGIPID == w.PID || w.Cgroup() == "" || len(w.CGICgroups) == 0 {
				t.Errorf("%s: incomplete whoami %+v", v.Name, w)
			}
			m, err := capture.Conn(resp.Server, resp.Client)
			if err != nil {
				t.Error(err)
			}
			if !m.All(0) || m.SynAck != 0 || !m.FIN {
				t.Errorf("%s: server packets to %v: %v; want DSCP 0 throughout and a FIN", v.Name, resp.Client, m)
			}
			conns = append(conns, conn{v.Name, resp.Client, resp.Server, w.PID})
		}
	}
	entries, err := a.Log()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		found := false
		for _, e := range entries {
			if e.Client == c.client && e.Local == c.server {
				found = true
				if e.VHost != c.vhost || e.PID != c.pid || e.Status != 200 || e.Path != "/cgi-bin/whoami" {
					t.Errorf("access log for %v: %+v, want vhost %s pid %d", c.client, e, c.vhost, c.pid)
				}
			}
		}
		if !found {
			t.Errorf("%s: no access log line for the connection from %v", c.vhost, c.client)
		}
	}

	resp, err := Get("127.0.0.4:8080", "http://static.example/index.html")
	if err != nil || resp.Status != 200 || resp.Body != IndexHTML {
		t.Errorf("static file: %+v, %v", resp, err)
	}

	// Three requests on one kept-alive connection: one serving process.
	k, err := DialKeepAlive("127.0.0.3:8080")
	if err != nil {
		t.Fatal(err)
	}
	pids := map[int]bool{}
	for i := 0; i < 3; i++ {
		resp, err := k.Get("/cgi-bin/whoami")
		if err != nil {
			t.Fatal(err)
		}
		w, err := ParseWhoami(resp.Body)
		if err != nil || resp.Client != k.Client {
			t.Fatalf("kept-alive request %d: %v, client %v (connection %v)", i, err, resp.Client, k.Client)
		}
		pids[w.PID] = true
	}
	if m, err := capture.Conn(k.Server, k.Client); err != nil || !m.All(0) || m.Packets() < 3 || m.FIN {
		t.Errorf("kept-alive connection: %v, %v; want at least 3 packets, DSCP 0, no FIN yet", m, err)
	}
	k.Close()
	if len(pids) != 1 {
		t.Errorf("one kept-alive connection served by %v", pids)
	}

	start := time.Now()
	resp, err = Get("127.0.0.2:8080", "/cgi-bin/burn?2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseWhoami(resp.Body); err != nil || time.Since(start) < time.Second {
		t.Errorf("burn CGI: %v after %v: %q", err, time.Since(start), resp.Body)
	}

	if st := a.Stop(); st.ExitCode() != 0 {
		t.Errorf("Apache exited with %v after SIGTERM\n%s", st, a.Output())
	}
}

// serveOnce accepts one connection on a listener with the given socket
// options, reads a request, answers it and closes. listenerOpt is applied
// to the listening socket, connOpt to the accepted one.
func serveOnce(t *testing.T, addr string, listenerOpt, connOpt func(fd int) error) string {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		if listenerOpt != nil {
			c.Control(func(fd uintptr) { err = listenerOpt(int(fd)) })
		}
		return err
	}}
	l, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer l.Close()
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if connOpt != nil {
			raw, _ := c.(*net.TCPConn).SyscallConn()
			raw.Control(func(fd uintptr) {
				if err := connOpt(int(fd)); err != nil {
					t.Error(err)
				}
			})
		}
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil || line == "\r\n" {
				break
			}
		}
		fmt.Fprint(c, "HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nmarked")
	}()
	return l.Addr().String()
}

func setTOS(tos int) func(fd int) error {
	return func(fd int) error { return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TOS, tos) }
}

func setTClass(tclass int) func(fd int) error {
	return func(fd int) error { return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_TCLASS, tclass) }
}

// The capture tells marks apart, so a check against it can fail: a server
// that marks its own sockets is seen with that mark, the SYN-ACK with the
// listener's, the unmarked client with none.
func TestHarnessCaptureSeesMarks(t *testing.T) {
	capture, err := StartCapture()
	if err != nil {
		t.Fatal(err)
	}
	defer capture.Stop()
	for _, tc := range []struct {
		name                 string
		addr                 string
		listenerOpt, connOpt func(fd int) error
		wantSynAck, wantDSCP int
	}{
		{"IPv4 listener with IP_TOS 0xb8", "127.0.0.1:0", setTOS(0xb8), nil, 46, 46},
		{"IPv4 accepted socket with IP_TOS 0x28", "127.0.0.6:0", nil, setTOS(0x28), 0, 10},
		{"IPv6 listener with IPV6_TCLASS 0xb8", "[::1]:0", setTClass(0xb8), nil, 46, 46},
		{"IPv6 accepted socket with IPV6_TCLASS 0x88", "[::1]:0", nil, setTClass(0x88), 0, 34},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := serveOnce(t, tc.addr, tc.listenerOpt, tc.connOpt)
			resp, err := Get(addr, "/")
			if err != nil || resp.Body != "marked" {
				t.Fatalf("%+v, %v", resp, err)
			}
			m, err := capture.Conn(resp.Server, resp.Client)
			if err != nil {
				t.Error(err)
			}
			if !m.All(tc.wantDSCP) || m.SynAck != tc.wantSynAck || !m.FIN {
				t.Errorf("server side: %v; want DSCP %d throughout, SYN-ACK %d, FIN", m, tc.wantDSCP, tc.wantSynAck)
			}
			if m.All(0) {
				t.Errorf("All(0) holds for a marked connection: %v", m)
			}
			if cm, _ := capture.Conn(resp.Client, resp.Server); !cm.All(0) || cm.SynAck != -1 {
				t.Errorf("client side: %v; want DSCP 0 and no SYN-ACK", cm)
			}
		})
	}
}

// A process of the server that outlives it is found and killed.
func TestHarnessLeftovers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, err := StartApache(ctx, ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: "127.0.0.2:8080"}}, Servers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Remove()
	// A straggler in a session of its own, naming the server's directory,
	// with a child that does not.
	straggler := exec.Command("sh", "-c", "sleep 600; :", a.Dir)
	straggler.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := straggler.Start(); err != nil {
		t.Fatal(err)
	}
	go straggler.Wait()
	if st := a.Stop(); st.ExitCode() != 0 {
		t.Errorf("Apache exited with %v", st)
	}
	var left []string
	for deadline := time.Now().Add(patience); len(left) < 2 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond) // until sh has started sleep
		left = a.Leftovers()
	}
	sort.Strings(left)
	if len(left) != 2 || !strings.HasSuffix(left[0], " sleep 600") && !strings.HasSuffix(left[1], " sleep 600") ||
		!slices.ContainsFunc(left, func(l string) bool { return strings.HasPrefix(l, strconv.Itoa(straggler.Process.Pid)+" ") }) {
		t.Fatalf("leftovers %q, want the straggler %d and its sleep", left, straggler.Process.Pid)
	}
	if killed := a.KillLeftovers(); len(killed) != 2 {
		t.Errorf("killed %q", killed)
	}
	if left := a.Leftovers(); len(left) != 0 {
		t.Errorf("still there after KillLeftovers: %q", left)
	}
}
