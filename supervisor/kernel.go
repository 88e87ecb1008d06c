package supervisor

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The raw kernel helpers of the data path: one system call or one /proc
// file each, no state and no locks, so that the files that use them read
// as decisions. Each is tested against real sockets, pipes and processes
// in kernel_test.go. (The seccomp ioctls are in notify.go, sock_diag in
// sockdiag.go.)

// Sockets.

// acceptFrom accepts one connection from our copy of a listener. The copy
// is always close-on-exec on our side; O_NONBLOCK is the caller's choice.
func acceptFrom(lfd int, nonblock bool) (*conn, unix.Errno) {
	c := &conn{peerLen: unix.SizeofSockaddrAny, nonblock: nonblock}
	flags := unix.SOCK_CLOEXEC
	if nonblock {
		flags |= unix.SOCK_NONBLOCK
	}
	fd, _, e := unix.Syscall6(unix.SYS_ACCEPT4, uintptr(lfd), uintptr(unsafe.Pointer(&c.peer)), uintptr(unsafe.Pointer(&c.peerLen)), uintptr(flags), 0, 0)
	if e != 0 {
		return nil, e
	}
	c.fd = int(fd)
	return c, 0
}

// readable polls fd without waiting.
func readable(fd int) bool {
	pfd := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, _, e := unix.Syscall(unix.SYS_POLL, uintptr(unsafe.Pointer(&pfd[0])), 1, 0)
	return e == 0 && n > 0 && pfd[0].Revents != 0
}

// peerClosed reports whether the client shut down its sending side, so no
// more bytes will come.
func peerClosed(fd int) bool {
	pfd := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
	n, _, e := unix.Syscall(unix.SYS_POLL, uintptr(unsafe.Pointer(&pfd[0])), 1, 0)
	return e == 0 && n > 0 && pfd[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
}

// acceptQueueLen is how many connections wait in a listener's accept
// queue; for a listening socket TCP_INFO reports it as tcpi_unacked. On
// error it assumes the backlog is full, so that nothing escapes a drain.
func acceptQueueLen(fd int) uint32 {
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 1 << 16
	}
	return info.Unacked
}

// currentDSCP reads the DSCP a socket of family marks its packets with
// (IP_TOS, or IPV6_TCLASS for IPv6), 0 when it cannot be read.
func currentDSCP(fd int, family uint16) int {
	level, opt := unix.IPPROTO_IP, unix.IP_TOS
	if family == unix.AF_INET6 {
		level, opt = unix.IPPROTO_IPV6, unix.IPV6_TCLASS
	}
	v, err := unix.GetsockoptInt(fd, level, opt)
	if err != nil {
		return 0
	}
	return v >> 2
}

// socketKind tells a TCP listener from an established TCP connection, and
// returns the socket's local address, in as few calls as it can (a reload
// asks it of every socket the server holds). ok is false for anything
// else: other families and types, unconnected sockets.
func socketKind(fd int) (isListener bool, local netip.AddrPort, family uint16, ok bool) {
	local, family, err := localAddrOf(fd)
	if err != nil || family == 0 {
		return false, local, 0, false
	}
	if typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || typ != unix.SOCK_STREAM {
		return false, local, 0, false
	}
	listening, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return false, local, 0, false
	}
	if listening != 0 {
		return true, local, family, true
	}
	if _, err := unix.Getpeername(fd); err != nil {
		return false, local, 0, false
	}
	return false, local, family, true
}

// Addresses.

// localAddrOf returns the address a socket is bound to and its family
// (getsockname(2)); a socket of a family other than AF_INET and AF_INET6
// gives family 0. Unlike unix.Getsockname it allocates nothing.
func localAddrOf(fd int) (netip.AddrPort, uint16, error) {
	var sa unix.RawSockaddrAny
	salen := uint32(unix.SizeofSockaddrAny)
	if _, _, e := unix.RawSyscall(unix.SYS_GETSOCKNAME, uintptr(fd), uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&salen))); e != 0 {
		return netip.AddrPort{}, 0, e
	}
	ap, family := addrPortOf(&sa)
	return ap, family, nil
}

// unixPathOf returns the path a Unix-domain socket is bound to, as
// getsockname(2) reports it (unix(7)): sun_path up to its NUL, or for an
// abstract socket "@" and its name; "" for an unnamed socket. ok is false
// for a socket of another family.
func unixPathOf(fd int) (path string, ok bool) {
	var sa unix.RawSockaddrAny
	salen := uint32(unix.SizeofSockaddrAny)
	if _, _, e := unix.RawSyscall(unix.SYS_GETSOCKNAME, uintptr(fd), uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&salen))); e != 0 {
		return "", false
	}
	return unixNameOf(&sa, salen)
}

// unixNameOf is the name in a unix-domain address of salen bytes (as
// getsockname and accept return it), written as unixPathOf writes it; ""
// for an unbound socket. ok is false if sa is not AF_UNIX.
func unixNameOf(sa *unix.RawSockaddrAny, salen uint32) (name string, ok bool) {
	if sa.Addr.Family != unix.AF_UNIX {
		return "", false
	}
	un := (*unix.RawSockaddrUnix)(unsafe.Pointer(sa))
	n := int(salen) - int(unsafe.Offsetof(un.Path))
	n = min(max(n, 0), len(un.Path))
	raw := make([]byte, n)
	for i := range n {
		raw[i] = byte(un.Path[i])
	}
	if n > 0 && raw[0] == 0 {
		// Abstract: every byte of the length counts, NULs included.
		return "@" + string(raw[1:]), true
	}
	if i := bytes.IndexByte(raw, 0); i >= 0 {
		raw = raw[:i]
	}
	return string(raw), true
}

// addrPortOf converts a socket address as the kernel writes it (accept,
// getsockname) to an address and port, with its family: AF_INET,
// AF_INET6, or 0 for any other. An IPv4 address seen by an IPv6 socket
// (::ffff:a.b.c.d) comes out as the IPv4 address, so that it compares
// equal to the same address seen by an IPv4 socket; the family stays
// AF_INET6, which decides how that socket is marked.
func addrPortOf(sa *unix.RawSockaddrAny) (netip.AddrPort, uint16) {
	switch sa.Addr.Family {
	case unix.AF_INET:
		in := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&in.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom4(in.Addr), port), unix.AF_INET
	case unix.AF_INET6:
		in6 := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&in6.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom16(in6.Addr).Unmap(), port), unix.AF_INET6
	}
	return netip.AddrPort{}, 0
}

// Other processes.

// writePeer does for an emulated accept what the kernel's
// move_addr_to_user (net/socket.c) does for a real one, in process pid's
// memory: read the caller's buffer length at addrlen; fail with EINVAL if
// it is negative; write as much of the peer address (peerLen bytes at
// peer) as fits at addr; then store the address's full length at addrlen.
// An unreadable or unwritable address fails with EFAULT.
//
// It allocates nothing: the iovecs live on the stack and go to the
// kernel through the raw system calls.
func writePeer(pid int, addr, addrlen uint64, peer *unix.RawSockaddrAny, peerLen uint32) unix.Errno {
	var avail int32
	local := [2]unix.Iovec{{Base: (*byte)(unsafe.Pointer(&avail)), Len: 4}}
	remote := [2]unix.RemoteIovec{{Base: uintptr(addrlen), Len: 4}}
	n, _, e := unix.Syscall6(unix.SYS_PROCESS_VM_READV, uintptr(pid), uintptr(unsafe.Pointer(&local[0])), 1, uintptr(unsafe.Pointer(&remote[0])), 1, 0)
	if e != 0 || n != 4 {
		return unix.EFAULT
	}
	if avail < 0 {
		return unix.EINVAL
	}
	fits := min(uint32(avail), peerLen)
	full := peerLen
	count := 0
	if fits > 0 {
		local[count] = unix.Iovec{Base: (*byte)(unsafe.Pointer(peer)), Len: uint64(fits)}
		remote[count] = unix.RemoteIovec{Base: uintptr(addr), Len: int(fits)}
		count++
	}
	local[count] = unix.Iovec{Base: (*byte)(unsafe.Pointer(&full)), Len: 4}
	remote[count] = unix.RemoteIovec{Base: uintptr(addrlen), Len: 4}
	count++
	w, _, e := unix.Syscall6(unix.SYS_PROCESS_VM_WRITEV, uintptr(pid), uintptr(unsafe.Pointer(&local[0])), uintptr(count), uintptr(unsafe.Pointer(&remote[0])), uintptr(count), 0)
	if e != 0 || w != uintptr(fits)+4 {
		return unix.EFAULT
	}
	return 0
}

// sameFile asks kcmp(2) whether fd in process pid and ourFd in process
// self are the same open file.
func sameFile(pid, fd, self, ourFd int) bool {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid), uintptr(self), kcmpFile, uintptr(fd), uintptr(ourFd), 0)
	return e == 0 && r == 0
}

const kcmpFile = 0 // KCMP_FILE

// kcmpAvailable reports whether kcmp(2) works here (CONFIG_KCMP, and not
// refused by a seccomp profile) and tells files apart.
func kcmpAvailable() bool {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return false
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	dup, err := unix.FcntlInt(uintptr(p[0]), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(dup)
	self := unix.Getpid()
	return sameFile(self, p[0], self, dup) && !sameFile(self, p[0], self, p[1])
}

// /proc.

// readTgid returns the process (thread group) that thread tid belongs to,
// from /proc/TID/status.
func readTgid(tid int) (int, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("reading the status of thread %d: %w", tid, err)
	}
	i := bytes.Index(data, []byte("\nTgid:"))
	if i < 0 {
		return 0, fmt.Errorf("no Tgid in /proc/%d/status", tid)
	}
	rest := bytes.TrimLeft(data[i+len("\nTgid:"):], " \t")
	if j := bytes.IndexByte(rest, '\n'); j >= 0 {
		rest = rest[:j]
	}
	return strconv.Atoi(string(rest))
}

// socketFds lists the fds of process tgid that are sockets, with the
// sockets' inodes.
func socketFds(tgid int) map[int]uint64 {
	dir := "/proc/" + strconv.Itoa(tgid) + "/fd"
	f, err := os.Open(dir)
	if err != nil {
		return nil // exited
	}
	names, _ := f.Readdirnames(-1)
	f.Close()
	out := make(map[int]uint64)
	for _, name := range names {
		target, err := os.Readlink(dir + "/" + name)
		if err != nil {
			continue
		}
		ino, ok := socketInode(target)
		if !ok {
			continue
		}
		if fd, err := strconv.Atoi(name); err == nil {
			out[fd] = ino
		}
	}
	return out
}

// fdInode returns the inode of the socket at fd in process pid, from
// /proc/PID/fd; false if fd is not open or not a socket.
func fdInode(pid, fd int) (uint64, bool) {
	target, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/" + strconv.Itoa(fd))
	if err != nil {
		return 0, false
	}
	return socketInode(target)
}

// socketInode parses a /proc/PID/fd link target "socket:[INODE]".
func socketInode(target string) (uint64, bool) {
	rest, ok := strings.CutPrefix(target, "socket:[")
	if !ok || !strings.HasSuffix(rest, "]") {
		return 0, false
	}
	ino, err := strconv.ParseUint(rest[:len(rest)-1], 10, 64)
	return ino, err == nil
}

// blockedAcceptFd reads a thread's /proc/.../syscall ("NR ARG0 ARG1 ..."
// while it is in a system call) and returns the fd it is accepting on.
func blockedAcceptFd(path string) (int, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	return parseAcceptFd(b)
}

// parseAcceptFd reads the contents of /proc/.../syscall and returns the fd
// of the accept or accept4 the thread is in.
func parseAcceptFd(b []byte) (int, bool) {
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0, false
	}
	nr, err := strconv.Atoi(string(f[0]))
	if err != nil || nr != unix.SYS_ACCEPT && nr != unix.SYS_ACCEPT4 {
		return 0, false
	}
	fd, err := strconv.ParseUint(string(bytes.TrimPrefix(f[1], []byte("0x"))), 16, 32)
	if err != nil {
		return 0, false
	}
	return int(int32(fd)), true
}

// taskSyscallPath is /proc/PID/task/TID/syscall: the system call thread
// tid of process pid is blocked in, with its arguments.
func taskSyscallPath(pid, tid int) string {
	return "/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(tid) + "/syscall"
}

// threads lists the thread ids of process pid; none once it has exited.
func threads(pid int) []int {
	entries, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	tids := make([]int, 0, len(entries))
	for _, e := range entries {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids
}
