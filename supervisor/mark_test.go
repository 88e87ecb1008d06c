package supervisor

import (
	"fmt"
	"log/slog"
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

func TestDecideMark(t *testing.T) {
	for _, tc := range []struct {
		name      string
		classDSCP int
		own       int
		marked    bool
		dscp      int
		write     bool
	}{
		{"class mark, listener never marked", 34, 0, false, 34, true},
		{"class mark, listener marked", 34, 10, true, 34, true},
		{"class mark CS0 is a mark", 0, 10, true, 0, true},
		{"no class mark, socket may carry a class's: the listener's own back", -1, 10, true, 10, true},
		{"no class mark, listener's own is unmarked", -1, 0, true, 0, true},
		{"no class mark, vhqos never marked: left as it is", -1, 10, false, -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dscp, write := decideMark(tc.classDSCP, tc.own, tc.marked)
			if write != tc.write || write && dscp != tc.dscp {
				t.Errorf("decideMark(%d, %d, %v) = %d, write %v; want %d, write %v", tc.classDSCP, tc.own, tc.marked, dscp, write, tc.dscp, tc.write)
			}
		})
	}
}

// markedSocket returns a TCP socket of family carrying DSCP dscp, as a
// server's own setsockopt would leave it.
func markedSocket(t *testing.T, family, dscp int) int {
	t.Helper()
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no socket of family %d: %v", family, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := markDSCP(fd, uint16(family), dscp); err != nil {
		t.Fatal(err)
	}
	return fd
}

func TestMarkDSCP(t *testing.T) {
	for _, tc := range []struct {
		name   string
		family int
		dscp   int
		tos    int // IP_TOS afterwards
		tclass int // IPV6_TCLASS afterwards, -1 for none
	}{
		{"IPv4", unix.AF_INET, 34, 34 << 2, -1},
		{"IPv4 unmarked", unix.AF_INET, 0, 0, -1},
		// An IPv6 socket may carry IPv4 traffic (v4-mapped peers),
		// which takes its mark from IP_TOS: it gets both.
		{"IPv6", unix.AF_INET6, 46, 46 << 2, 46 << 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fd := markedSocket(t, tc.family, tc.dscp)
			if tos, err := unix.GetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TOS); err != nil || tos != tc.tos {
				t.Errorf("IP_TOS %#x (%v), want %#x", tos, err, tc.tos)
			}
			if tc.tclass >= 0 {
				if tclass, err := unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_TCLASS); err != nil || tclass != tc.tclass {
					t.Errorf("IPV6_TCLASS %#x (%v), want %#x", tclass, err, tc.tclass)
				}
			}
			if got := currentDSCP(fd, uint16(tc.family)); got != tc.dscp {
				t.Errorf("read back DSCP %d, want %d", got, tc.dscp)
			}
		})
	}
	t.Run("not a socket", func(t *testing.T) {
		r, _ := kernelPipe(t)
		if err := markDSCP(r, unix.AF_INET, 34); err == nil {
			t.Error("marking a pipe did not fail")
		}
	})
}

// markConn sets the one option that marks the packets a connection sends:
// a connection to an IPv4 client through a dual-stack IPv6 listener sends
// IPv4 packets (IP_TOS), one to an IPv6 client IPv6 packets (IPV6_TCLASS).
func TestMarkConn(t *testing.T) {
	lfd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no IPv6 here: %v", err)
	}
	defer unix.Close(lfd)
	if err := unix.SetsockoptInt(lfd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(lfd, &unix.SockaddrInet6{}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(lfd, 4); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(lfd)
	port := sa.(*unix.SockaddrInet6).Port
	for _, tc := range []struct {
		name        string
		client      string
		tos, tclass int // afterwards (the accepted socket starts with 0); -1: not asked
	}{
		{"IPv4 client (v4-mapped)", fmt.Sprintf("127.0.0.1:%d", port), 46 << 2, 0},
		// Which IP_TOS an IPv6 socket reports after IPV6_TCLASS differs
		// between kernels; no IPv4 packet leaves it either way.
		{"IPv6 client", fmt.Sprintf("[::1]:%d", port), -1, 46 << 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, err := net.Dial("tcp", tc.client)
			if err != nil {
				t.Skipf("cannot dial %s: %v", tc.client, err)
			}
			defer client.Close()
			fd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			local, family, err := localAddrOf(fd)
			if err != nil {
				t.Fatal(err)
			}
			if err := markConn(fd, family, local.Addr(), 46); err != nil {
				t.Fatal(err)
			}
			if tos, err := unix.GetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TOS); tc.tos >= 0 && (err != nil || tos != tc.tos) {
				t.Errorf("IP_TOS %#x (%v), want %#x", tos, err, tc.tos)
			}
			if tclass, err := unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_TCLASS); err != nil || tclass != tc.tclass {
				t.Errorf("IPV6_TCLASS %#x (%v), want %#x", tclass, err, tc.tclass)
			}
		})
	}
}

// finish gives an accepted connection what decideMark says: the socket
// starts with the mark it inherited from its listener.
func TestFinishMarks(t *testing.T) {
	for _, tc := range []struct {
		name       string
		inherited  int // the mark the connection was made with
		own        int // the listener's own mark
		everMarked bool
		class      int
		want       int
	}{
		{"class mark", 0, 0, false, 34, 34},
		{"no class mark, listener never marked: its mark stays", 8, 8, false, -1, 8},
		{"no class mark, listener marked for a class since taken back", 34, 8, true, -1, 8},
		{"class mark replaces an old class's", 34, 8, true, 10, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Supervisor{log: slog.New(slog.DiscardHandler)}
			l := &listener{ownDSCP: tc.own, everMarked: tc.everMarked}
			c := &conn{fd: markedSocket(t, unix.AF_INET, tc.inherited), l: l, family: unix.AF_INET}
			d := Decision{Group: "g", DSCP: tc.class}
			s.finish(c, d)
			if c.decision != d {
				t.Errorf("decision %+v, want %+v", c.decision, d)
			}
			if got := currentDSCP(c.fd, unix.AF_INET); got != tc.want {
				t.Errorf("connection's DSCP %d, want %d", got, tc.want)
			}
		})
	}
}

// A listener marked for a class gets its own mark back, the server's,
// when the class loses its mark, however often it was marked in between.
func TestMarkListenerGivesOwnBack(t *testing.T) {
	s := &Supervisor{log: slog.New(slog.DiscardHandler)}
	lfd, _ := kernelListener(t, "127.0.0.1:0")
	if err := markDSCP(lfd, unix.AF_INET, 8); err != nil { // the server's own
		t.Fatal(err)
	}
	l := &listener{fd: lfd, family: unix.AF_INET, markedDSCP: -1}
	for _, step := range []struct {
		dscp, want int
	}{{34, 34}, {10, 10}, {-1, 8}, {46, 46}, {-1, 8}} {
		s.markListener(l, Decision{DSCP: step.dscp})
		if got := currentDSCP(lfd, unix.AF_INET); got != step.want || l.markedDSCP != step.dscp {
			t.Fatalf("after marking for %d: listener carries %d (recorded %d), want %d", step.dscp, got, l.markedDSCP, step.want)
		}
	}
	if l.ownDSCP != 8 {
		t.Errorf("own mark saved as %d, want 8", l.ownDSCP)
	}
}
