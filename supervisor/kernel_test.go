package supervisor

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Tests of kernel.go: each helper against real sockets, pipes, threads and
// processes.

// kernelListener listens on addr ("127.0.0.1:0", "[::1]:0") with a socket
// of the test's own, closed at the end of the test, and returns it with its
// address.
func kernelListener(t *testing.T, addr string) (int, netip.AddrPort) {
	t.Helper()
	fd, port, err := listenOn(addr, false)
	if err != nil {
		t.Skipf("listening on %s: %v", addr, err)
	}
	// Shut down first: that ends an accept still blocked on it, which
	// close alone does not.
	t.Cleanup(func() { unix.Shutdown(fd, unix.SHUT_RDWR); unix.Close(fd) })
	ap := netip.MustParseAddrPort(addr)
	return fd, netip.AddrPortFrom(ap.Addr(), uint16(port))
}

// kernelDial connects to ap and returns the client's connection, closed at
// the end of the test.
func kernelDial(t *testing.T, ap netip.AddrPort) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", ap.String(), patience)
	if err != nil {
		t.Fatalf("connecting to %v: %v", ap, err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// kernelAccept takes the next connection from listener fd, waiting for it.
func kernelAccept(t *testing.T, lfd int) *conn {
	t.Helper()
	c, errno := acceptFrom(lfd, false)
	if errno != 0 {
		t.Fatalf("accepting: %v", errno)
	}
	t.Cleanup(c.close)
	return c
}

// kernelPipe returns a pipe's read and write ends, closed at the end of
// the test.
func kernelPipe(t *testing.T) (r, w int) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
	return p[0], p[1]
}

// notOpen is an fd number no test opens.
const notOpen = 987

func checkNotOpen(t *testing.T) {
	t.Helper()
	if _, err := unix.FcntlInt(notOpen, unix.F_GETFD, 0); err != unix.EBADF {
		t.Skipf("fd %d is open", notOpen)
	}
}

func addrPortOfNetAddr(a net.Addr) netip.AddrPort { return a.(*net.TCPAddr).AddrPort() }

func TestAcceptFrom(t *testing.T) {
	for _, tc := range []struct {
		name     string
		addr     string
		queued   bool
		nonblock bool // asked for the connection
		errno    unix.Errno
		family   uint16
		peerLen  uint32
	}{
		{"IPv4", "127.0.0.1:0", true, false, 0, unix.AF_INET, unix.SizeofSockaddrInet4},
		{"IPv4, non-blocking connection", "127.0.0.1:0", true, true, 0, unix.AF_INET, unix.SizeofSockaddrInet4},
		{"IPv6", "[::1]:0", true, false, 0, unix.AF_INET6, unix.SizeofSockaddrInet6},
		{"empty non-blocking listener", "127.0.0.1:0", false, true, unix.EAGAIN, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lfd, ap := kernelListener(t, tc.addr)
			var client *net.TCPConn
			if tc.queued {
				client = kernelDial(t, ap)
			} else {
				// Whether accept waits is the listener's O_NONBLOCK
				// (the server's, shared by the supervisor's copy).
				unix.SetNonblock(lfd, true)
			}
			c, errno := acceptFrom(lfd, tc.nonblock)
			if errno != tc.errno {
				t.Fatalf("acceptFrom: errno %v, want %v", errno, tc.errno)
			}
			if errno != 0 {
				if c != nil {
					t.Errorf("a connection with errno %v", errno)
				}
				return
			}
			defer c.close()
			fl, _ := unix.FcntlInt(uintptr(c.fd), unix.F_GETFL, 0)
			fdfl, _ := unix.FcntlInt(uintptr(c.fd), unix.F_GETFD, 0)
			if nb := fl&unix.O_NONBLOCK != 0; nb != tc.nonblock || c.nonblock != tc.nonblock {
				t.Errorf("O_NONBLOCK %v (recorded %v), want %v", nb, c.nonblock, tc.nonblock)
			}
			if fdfl&unix.FD_CLOEXEC == 0 {
				t.Error("the supervisor's end is not close-on-exec")
			}
			peer, family := addrPortOf(&c.peer)
			if want := addrPortOfNetAddr(client.LocalAddr()); peer != want || family != tc.family || c.peerLen != tc.peerLen {
				t.Errorf("peer %v family %d length %d, want %v %d %d", peer, family, c.peerLen, want, tc.family, tc.peerLen)
			}
		})
	}
	t.Run("not listening", func(t *testing.T) {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		if _, errno := acceptFrom(fd, true); errno != unix.EINVAL {
			t.Errorf("accept on an unconnected socket: %v, want EINVAL", errno)
		}
	})
}

func TestReadable(t *testing.T) {
	lfd, ap := kernelListener(t, "127.0.0.1:0")
	if readable(lfd) {
		t.Error("an empty listener is readable")
	}
	kernelDial(t, ap)
	waitFor(t, "the listener readable with a connection queued", func() bool { return readable(lfd) })

	r, w := kernelPipe(t)
	if readable(r) {
		t.Error("an empty pipe is readable")
	}
	unix.Write(w, []byte("x"))
	if !readable(r) {
		t.Error("a pipe holding a byte is not readable")
	}
}

func TestPeerClosed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		client func(*net.TCPConn)
		closed bool
	}{
		{"open", func(*net.TCPConn) {}, false},
		{"bytes sent, still open", func(c *net.TCPConn) { c.Write([]byte("GET")) }, false},
		{"sending side shut", func(c *net.TCPConn) { c.Write([]byte("GET")); c.CloseWrite() }, true},
		{"closed", func(c *net.TCPConn) { c.Close() }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lfd, ap := kernelListener(t, "127.0.0.1:0")
			client := kernelDial(t, ap)
			c := kernelAccept(t, lfd)
			tc.client(client)
			if tc.closed {
				waitFor(t, "the client's end seen closed", func() bool { return peerClosed(c.fd) })
				return
			}
			// What the client sent has arrived when it is readable: a
			// FIN sent with it would have too.
			if tc.name != "open" {
				waitFor(t, "the client's bytes", func() bool { return readable(c.fd) })
			}
			if peerClosed(c.fd) {
				t.Error("an open connection seen closed")
			}
		})
	}
}

func TestAcceptQueueLen(t *testing.T) {
	for _, n := range []int{0, 1, 3} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			lfd, ap := kernelListener(t, "127.0.0.1:0")
			for range n {
				kernelDial(t, ap)
			}
			// /proc/net/tcp is the independent account of the queue.
			waitFor(t, fmt.Sprintf("%d connections queued", n), func() bool { return acceptQueue(t, ap.String()) == n })
			if got := acceptQueueLen(lfd); got != uint32(n) {
				t.Errorf("acceptQueueLen = %d, want %d", got, n)
			}
		})
	}
	t.Run("not a TCP socket", func(t *testing.T) {
		r, _ := kernelPipe(t)
		if got := acceptQueueLen(r); got != 1<<16 {
			t.Errorf("acceptQueueLen of a pipe = %d, want %d (a full backlog)", got, 1<<16)
		}
	})
}

func TestCurrentDSCP(t *testing.T) {
	for _, tc := range []struct {
		name       string
		family     int
		level, opt int
		tos        int
		want       int
	}{
		{"IPv4 unmarked", unix.AF_INET, 0, 0, 0, 0},
		{"IPv4 AF41", unix.AF_INET, unix.IPPROTO_IP, unix.IP_TOS, 34 << 2, 34},
		{"IPv4 EF", unix.AF_INET, unix.IPPROTO_IP, unix.IP_TOS, 46 << 2, 46},
		{"IPv6 AF11", unix.AF_INET6, unix.IPPROTO_IPV6, unix.IPV6_TCLASS, 10 << 2, 10},
		// An IPv6 socket is read by its traffic class, not its IP_TOS.
		{"IPv6 with only IP_TOS", unix.AF_INET6, unix.IPPROTO_IP, unix.IP_TOS, 34 << 2, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fd, err := unix.Socket(tc.family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Skipf("no socket of family %d: %v", tc.family, err)
			}
			defer unix.Close(fd)
			if tc.opt != 0 {
				if err := unix.SetsockoptInt(fd, tc.level, tc.opt, tc.tos); err != nil {
					t.Fatal(err)
				}
			}
			if got := currentDSCP(fd, uint16(tc.family)); got != tc.want {
				t.Errorf("currentDSCP = %d, want %d", got, tc.want)
			}
		})
	}
	t.Run("not a socket", func(t *testing.T) {
		r, _ := kernelPipe(t)
		if got := currentDSCP(r, unix.AF_INET); got != 0 {
			t.Errorf("currentDSCP of a pipe = %d, want 0", got)
		}
	})
}

func TestSocketKind(t *testing.T) {
	lfd, ap := kernelListener(t, "127.0.0.1:0")
	client := kernelDial(t, ap)
	served := kernelAccept(t, lfd)
	clientFile, err := client.File()
	if err != nil {
		t.Fatal(err)
	}
	defer clientFile.Close()
	lfd6, ap6 := kernelListener(t, "[::1]:0")
	newSocket := func(family, typ int) int {
		fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		return fd
	}
	unixListener := newSocket(unix.AF_UNIX, unix.SOCK_STREAM)
	if err := unix.Bind(unixListener, &unix.SockaddrUnix{Name: filepath.Join(t.TempDir(), "sock")}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(unixListener, 1); err != nil {
		t.Fatal(err)
	}
	// A UDP socket with a peer: only its type tells it from a connection.
	udp := newSocket(unix.AF_INET, unix.SOCK_DGRAM)
	if err := unix.Connect(udp, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
		t.Fatal(err)
	}
	pipe, _ := kernelPipe(t)
	for _, tc := range []struct {
		name       string
		fd         int
		isListener bool
		local      netip.AddrPort
		family     uint16
		ok         bool
	}{
		{"IPv4 listener", lfd, true, ap, unix.AF_INET, true},
		{"IPv6 listener", lfd6, true, ap6, unix.AF_INET6, true},
		{"accepted connection", served.fd, false, ap, unix.AF_INET, true},
		{"connection the process opened", int(clientFile.Fd()), false, addrPortOfNetAddr(client.LocalAddr()), unix.AF_INET, true},
		{"unconnected TCP socket", newSocket(unix.AF_INET, unix.SOCK_STREAM), false, netip.AddrPort{}, 0, false},
		{"connected UDP socket", udp, false, netip.AddrPort{}, 0, false},
		{"Unix listener", unixListener, false, netip.AddrPort{}, 0, false},
		{"pipe", pipe, false, netip.AddrPort{}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			isListener, local, family, ok := socketKind(tc.fd)
			if ok != tc.ok || isListener != tc.isListener || family != tc.family || ok && local != tc.local {
				t.Errorf("socketKind = listener %v, %v, family %d, ok %v; want %v, %v, %d, %v",
					isListener, local, family, ok, tc.isListener, tc.local, tc.family, tc.ok)
			}
		})
	}
}

// rawSockaddr builds a socket address as the kernel writes it: family in
// host order, port and address in network order.
func rawSockaddr(t *testing.T, ap netip.AddrPort, family uint16) *unix.RawSockaddrAny {
	t.Helper()
	var raw unix.RawSockaddrAny
	switch family {
	case unix.AF_INET:
		in := (*unix.RawSockaddrInet4)(unsafe.Pointer(&raw))
		in.Family = unix.AF_INET
		in.Addr = ap.Addr().As4()
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&in.Port))[:], ap.Port())
	case unix.AF_INET6:
		in6 := (*unix.RawSockaddrInet6)(unsafe.Pointer(&raw))
		in6.Family = unix.AF_INET6
		in6.Addr = ap.Addr().As16()
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&in6.Port))[:], ap.Port())
	default:
		raw.Addr.Family = family
	}
	return &raw
}

func TestAddrPortOf(t *testing.T) {
	for _, tc := range []struct {
		name   string
		raw    *unix.RawSockaddrAny
		want   netip.AddrPort
		family uint16
	}{
		{"IPv4", rawSockaddr(t, netip.MustParseAddrPort("10.1.2.3:8080"), unix.AF_INET), netip.MustParseAddrPort("10.1.2.3:8080"), unix.AF_INET},
		{"IPv6", rawSockaddr(t, netip.MustParseAddrPort("[2001:db8::1]:443"), unix.AF_INET6), netip.MustParseAddrPort("[2001:db8::1]:443"), unix.AF_INET6},
		{"IPv4-mapped", rawSockaddr(t, netip.MustParseAddrPort("[::ffff:10.1.2.3]:80"), unix.AF_INET6), netip.MustParseAddrPort("10.1.2.3:80"), unix.AF_INET6},
		{"high port", rawSockaddr(t, netip.MustParseAddrPort("127.0.0.1:65535"), unix.AF_INET), netip.MustParseAddrPort("127.0.0.1:65535"), unix.AF_INET},
		{"Unix", rawSockaddr(t, netip.AddrPort{}, unix.AF_UNIX), netip.AddrPort{}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, family := addrPortOf(tc.raw); got != tc.want || family != tc.family {
				t.Errorf("addrPortOf = %v, family %d; want %v, %d", got, family, tc.want, tc.family)
			}
		})
	}
}

func TestLocalAddrOf(t *testing.T) {
	lfd, ap := kernelListener(t, "127.0.0.1:0")
	lfd6, ap6 := kernelListener(t, "[::1]:0")
	// A dual-stack listener sees an IPv4 client as ::ffff:127.0.0.1.
	dual, dualAp := kernelListener(t, "[::]:0")
	kernelDial(t, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), dualAp.Port()))
	mapped := kernelAccept(t, dual)
	pipe, _ := kernelPipe(t)
	for _, tc := range []struct {
		name   string
		fd     int
		want   netip.AddrPort
		family uint16
		fails  bool
	}{
		{"IPv4", lfd, ap, unix.AF_INET, false},
		{"IPv6", lfd6, ap6, unix.AF_INET6, false},
		{"IPv6 wildcard", dual, netip.AddrPortFrom(netip.IPv6Unspecified(), dualAp.Port()), unix.AF_INET6, false},
		{"IPv4 client of an IPv6 listener", mapped.fd, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), dualAp.Port()), unix.AF_INET6, false},
		{"pipe", pipe, netip.AddrPort{}, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, family, err := localAddrOf(tc.fd)
			if (err != nil) != tc.fails || got != tc.want || family != tc.family {
				t.Errorf("localAddrOf = %v, family %d, err %v; want %v, %d, failing %v", got, family, err, tc.want, tc.family, tc.fails)
			}
		})
	}
}

// peerMemory is memory outside the Go heap, where the kernel writes what
// writePeer writes: the length word, then the address buffer with a guard
// after it, and an inaccessible page after that.
type peerMemory struct {
	mem     []byte
	lenOff  int
	addrOff int
}

const peerGuard = 0xAA

func newPeerMemory(t *testing.T) *peerMemory {
	t.Helper()
	page := os.Getpagesize()
	mem, err := unix.Mmap(-1, 0, 2*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	if err := unix.Mprotect(mem[page:], unix.PROT_NONE); err != nil {
		t.Fatal(err)
	}
	m := &peerMemory{mem: mem, lenOff: 0, addrOff: 64}
	for i := range page {
		mem[i] = peerGuard
	}
	return m
}

func (m *peerMemory) addr(off int) uint64 {
	return uint64(uintptr(unsafe.Pointer(&m.mem[0]))) + uint64(off)
}

func (m *peerMemory) length() int32 {
	return int32(binary.NativeEndian.Uint32(m.mem[m.lenOff:]))
}

func (m *peerMemory) setLength(n int32) {
	binary.NativeEndian.PutUint32(m.mem[m.lenOff:], uint32(n))
}

// writePeer does to a process's memory what the kernel's
// move_addr_to_user does: the buffer gets min(length, address's length)
// bytes and nothing beyond, the length word the address's full length; a
// negative length is EINVAL and leaves both alone; an address that cannot
// be read or written is EFAULT.
func TestWritePeer(t *testing.T) {
	page := os.Getpagesize()
	v4 := rawSockaddr(t, netip.MustParseAddrPort("192.0.2.7:4242"), unix.AF_INET)
	v6 := rawSockaddr(t, netip.MustParseAddrPort("[2001:db8::7]:4242"), unix.AF_INET6)
	const unreadable = -1 // an offset in the inaccessible page
	for _, tc := range []struct {
		name     string
		peer     *unix.RawSockaddrAny
		peerLen  uint32
		avail    int32
		addrOff  int // where the buffer is; unreadable for the PROT_NONE page
		lenOff   int
		errno    unix.Errno
		written  int   // bytes of the address written into the buffer
		lengthIs int32 // the length word afterwards
	}{
		{"IPv4, large buffer", v4, unix.SizeofSockaddrInet4, 128, 64, 0, 0, 16, 16},
		{"IPv4, exact buffer", v4, unix.SizeofSockaddrInet4, 16, 64, 0, 0, 16, 16},
		{"IPv4, short buffer is truncated", v4, unix.SizeofSockaddrInet4, 4, 64, 0, 0, 4, 16},
		{"IPv4, zero length", v4, unix.SizeofSockaddrInet4, 0, 64, 0, 0, 0, 16},
		{"IPv6", v6, unix.SizeofSockaddrInet6, 128, 64, 0, 0, 28, 28},
		{"IPv6, short buffer", v6, unix.SizeofSockaddrInet6, 20, 64, 0, 0, 20, 28},
		{"negative length", v4, unix.SizeofSockaddrInet4, -1, 64, 0, unix.EINVAL, 0, -1},
		{"most negative length", v4, unix.SizeofSockaddrInet4, -1 << 31, 64, 0, unix.EINVAL, 0, -1 << 31},
		{"buffer not writable", v4, unix.SizeofSockaddrInet4, 16, unreadable, 0, unix.EFAULT, 0, 16},
		{"length not readable", v4, unix.SizeofSockaddrInet4, 16, 64, unreadable, unix.EFAULT, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newPeerMemory(t)
			addrOff, lenOff := tc.addrOff, tc.lenOff
			if addrOff == unreadable {
				addrOff = page
			}
			if lenOff == unreadable {
				lenOff = page
			} else {
				m.setLength(tc.avail)
			}
			errno := writePeer(os.Getpid(), m.addr(addrOff), m.addr(lenOff), tc.peer, tc.peerLen)
			if errno != tc.errno {
				t.Fatalf("writePeer: errno %v, want %v", errno, tc.errno)
			}
			if tc.lenOff == unreadable {
				return
			}
			if got := m.length(); got != tc.lengthIs {
				t.Errorf("length word %d, want %d", got, tc.lengthIs)
			}
			if tc.addrOff == unreadable {
				return
			}
			peer := (*[unix.SizeofSockaddrAny]byte)(unsafe.Pointer(tc.peer))
			buf := m.mem[addrOff : addrOff+128+8]
			if !bytes.Equal(buf[:tc.written], peer[:tc.written]) {
				t.Errorf("buffer % x, want the address % x", buf[:tc.written], peer[:tc.written])
			}
			if rest := buf[tc.written:]; !bytes.Equal(rest, bytes.Repeat([]byte{peerGuard}, len(rest))) {
				t.Errorf("bytes past the %d allowed were written: % x", tc.written, rest)
			}
			// It runs for every emulated accept.
			if n := testing.AllocsPerRun(20, func() {
				m.setLength(tc.avail)
				writePeer(os.Getpid(), m.addr(addrOff), m.addr(lenOff), tc.peer, tc.peerLen)
			}); n != 0 {
				t.Errorf("%v allocations per call, want none", n)
			}
		})
	}
}

// childWithFd runs a process that holds f as its fd 3 until the test ends.
func childWithFd(t *testing.T, f *os.File) int {
	t.Helper()
	cmd := exec.Command("sleep", "3600")
	cmd.ExtraFiles = []*os.File{f}
	if err := cmd.Start(); err != nil {
		t.Skipf("starting a child: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd.Process.Pid
}

func TestSameFile(t *testing.T) {
	self := os.Getpid()
	if _, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(self), uintptr(self), kcmpFile, 0, 0, 0); e == unix.ENOSYS || e == unix.EPERM {
		t.Skipf("kcmp(2) is not available here: %v", e)
	}
	if !kcmpAvailable() {
		t.Error("kcmpAvailable = false where kcmp works")
	}
	r, w := kernelPipe(t)
	dup, err := unix.FcntlInt(uintptr(r), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dup)
	checkNotOpen(t)
	// The same pipe end opened again is another open file.
	reopened, err := unix.Open("/proc/self/fd/"+strconv.Itoa(r), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(reopened)
	forChild, err := unix.FcntlInt(uintptr(r), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	childEnd := os.NewFile(uintptr(forChild), "pipe")
	defer childEnd.Close()
	child := childWithFd(t, childEnd)
	for _, tc := range []struct {
		name    string
		pid, fd int
		ourFd   int
		same    bool
	}{
		{"the fd itself", self, r, r, true},
		{"a dup", self, r, dup, true},
		{"the other end", self, r, w, false},
		{"the same pipe opened again", self, r, reopened, false},
		{"an fd that is not open", self, notOpen, r, false},
		{"inherited by a child", child, 3, r, true},
		{"another file in the child", child, 3, w, false},
		{"an fd the child does not have", child, notOpen, r, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := sameFile(tc.pid, tc.fd, self, tc.ourFd); got != tc.same {
				t.Errorf("sameFile = %v, want %v", got, tc.same)
			}
		})
	}
}

func TestReadTgid(t *testing.T) {
	// A thread other than the main one, whose id is the process's: each
	// goroutine locked to a thread holds it, so the second is another.
	tids := make(chan int)
	release := make(chan struct{})
	defer close(release)
	thread := os.Getpid()
	for range 2 {
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			tids <- unix.Gettid()
			<-release
		}()
		if thread = <-tids; thread != os.Getpid() {
			break
		}
	}
	for _, tc := range []struct {
		name  string
		tid   int
		want  int
		fails bool
	}{
		{"main thread", os.Getpid(), os.Getpid(), false},
		{"another thread", thread, os.Getpid(), false},
		{"no such thread", 0, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readTgid(tc.tid)
			if (err != nil) != tc.fails || got != tc.want {
				t.Errorf("readTgid(%d) = %d, %v; want %d, failing %v", tc.tid, got, err, tc.want, tc.fails)
			}
		})
	}
}

func inodeOf(t *testing.T, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestSocketFds(t *testing.T) {
	lfd, ap := kernelListener(t, "127.0.0.1:0")
	kernelDial(t, ap)
	served := kernelAccept(t, lfd)
	r, _ := kernelPipe(t)
	fds := socketFds(os.Getpid())
	for _, tc := range []struct {
		name   string
		fd     int
		socket bool
	}{
		{"listener", lfd, true},
		{"connection", served.fd, true},
		{"pipe", r, false},
		{"not open", notOpen, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ino, listed := fds[tc.fd]
			inoOne, one := fdInode(os.Getpid(), tc.fd)
			if listed != tc.socket || one != tc.socket {
				t.Fatalf("listed by socketFds: %v, by fdInode: %v; want %v", listed, one, tc.socket)
			}
			if tc.socket && (ino != inodeOf(t, tc.fd) || inoOne != ino) {
				t.Errorf("inode %d (fdInode %d), want %d", ino, inoOne, inodeOf(t, tc.fd))
			}
		})
	}
	if got := socketFds(0); got != nil {
		t.Errorf("socketFds of no process = %v, want nil", got)
	}
}

func TestSocketInode(t *testing.T) {
	for _, tc := range []struct {
		target string
		ino    uint64
		ok     bool
	}{
		{"socket:[12345]", 12345, true},
		{"socket:[18446744073709551615]", 1<<64 - 1, true},
		{"pipe:[12345]", 0, false},
		{"socket:[]", 0, false},
		{"socket:[12a]", 0, false},
		{"socket:[12345", 0, false},
		{"/dev/null", 0, false},
	} {
		t.Run(tc.target, func(t *testing.T) {
			if ino, ok := socketInode(tc.target); ino != tc.ino || ok != tc.ok {
				t.Errorf("socketInode = %d, %v; want %d, %v", ino, ok, tc.ino, tc.ok)
			}
		})
	}
}

func TestBlockedAcceptFd(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		content string // "" for no file
		fd      int
		ok      bool
	}{
		{"accept", fmt.Sprintf("%d 0x5 0x7ffd1000 0x7ffd1010 0x0 0x0 0x0 0x7ffd0ff8 0x7f0000001234\n", unix.SYS_ACCEPT), 5, true},
		{"accept4", fmt.Sprintf("%d 0x1f 0x0 0x0 0x80000 0x0 0x0 0x7ffd0ff8 0x7f0000001234\n", unix.SYS_ACCEPT4), 31, true},
		{"another call", fmt.Sprintf("%d 0x5 0x0 0x0 0x0 0x0 0x0 0x7ffd0ff8 0x7f0000001234\n", unix.SYS_READ), 0, false},
		{"running", "running\n", 0, false},
		{"blocked outside a call", "-1 0x7ffd0ff8 0x7f0000001234\n", 0, false},
		{"empty", "\n", 0, false},
		{"no file", "", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name)
			if tc.content != "" {
				if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if fd, ok := blockedAcceptFd(path); fd != tc.fd || ok != tc.ok {
				t.Errorf("blockedAcceptFd = %d, %v; want %d, %v", fd, ok, tc.fd, tc.ok)
			}
		})
	}
	t.Run("a thread asleep in accept", func(t *testing.T) {
		lfd, ap := kernelListener(t, "127.0.0.1:0")
		tids := make(chan int, 1)
		accepted := make(chan error, 1)
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			tids <- unix.Gettid()
			nfd, _, e := unix.Syscall6(unix.SYS_ACCEPT4, uintptr(lfd), 0, 0, unix.SOCK_CLOEXEC, 0, 0)
			if e == 0 {
				unix.Close(int(nfd))
				accepted <- nil
				return
			}
			accepted <- e
		}()
		path := fmt.Sprintf("/proc/self/task/%d/syscall", <-tids)
		var fd int
		waitFor(t, "the thread asleep in accept", func() bool {
			var ok bool
			fd, ok = blockedAcceptFd(path)
			return ok
		})
		if fd != lfd {
			t.Errorf("blockedAcceptFd = %d, want the listener %d", fd, lfd)
		}
		kernelDial(t, ap)
		if err := <-accepted; err != nil {
			t.Fatalf("the thread's accept: %v", err)
		}
	})
}

// threads lists every thread of a process, none of one that is gone, and
// taskSyscallPath names the file blockedAcceptFd reads for each.
func TestThreads(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self, tid := unix.Getpid(), unix.Gettid()
	if got := threads(self); !slices.Contains(got, tid) || !slices.Contains(got, self) {
		t.Errorf("threads(%d) = %v, want the main thread %d and this one %d among them", self, got, self, tid)
	}
	if _, err := os.Stat(taskSyscallPath(self, tid)); err != nil {
		t.Errorf("taskSyscallPath: %v", err)
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if got := threads(cmd.Process.Pid); len(got) != 0 {
		t.Errorf("threads of exited process %d = %v, want none", cmd.Process.Pid, got)
	}
}
