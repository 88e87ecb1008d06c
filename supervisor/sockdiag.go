package supervisor

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Asking the kernel which sockets exist (sock_diag, netlink;
// linux/inet_diag.h, linux/unix_diag.h). A TCP socket every process has
// closed keeps no inode: its remnant (FIN_WAIT, TIME_WAIT) has inode 0; a
// unix socket every process has closed is gone. That is how vhqos knows a
// connection is over without following every process that held it.

// liveSocketInodes asks the kernel for the inode of every TCP listener
// (IPv4 and IPv6), of every TCP connection if withConnections, and of
// every unix-domain socket of this network namespace that some process
// still holds. The kernel leaves out the TIME_WAIT and SYN_RECV remnants,
// which have no inode: a server that closes thousands of connections a
// second has thousands of them, and the sweep would read each. Asked for
// listeners only, it skips its table of connections altogether: that walk
// visits every bucket of a table sized by the machine's memory (some 2 ms
// a sweep here, most of an idle supervisor's CPU).
func liveSocketInodes(withConnections bool) (map[uint64]bool, error) {
	live := map[uint64]bool{}
	states := uint32(1 << unix.BPF_TCP_LISTEN)
	if withConnections {
		states |= heldConnectionStates
	}
	err := eachTCPSocket(states, func(m diagMsg) {
		if ino := m.inode(); ino != 0 {
			live[uint64(ino)] = true
		}
	})
	if err != nil {
		return live, err
	}
	err = eachUnixSocket(func(ino uint32) { live[uint64(ino)] = true })
	return live, err
}

// liveConnectionCookies calls held with the cookie (SO_COOKIE), the
// socket's inode and the local address of every TCP connection of this
// network namespace that some process still holds open: established, or
// closed by the client but not yet by the server. Listeners and the
// kernel's remnants of closed connections are left out by the kernel
// itself.
func liveConnectionCookies(held func(cookie, inode uint64, local netip.AddrPort)) error {
	return eachTCPSocket(heldConnectionStates, func(m diagMsg) {
		if ino := m.inode(); ino != 0 {
			held(m.cookie(), uint64(ino), m.local())
		}
	})
}

// heldConnectionStates are the TCP states (a bit per state, as
// inet_diag_req_v2.idiag_states takes them; include/net/tcp_states.h) a
// connection can be in while a process holds it: all but LISTEN,
// TIME_WAIT and the two SYN_RECV forms, which never have a file.
const heldConnectionStates = ^uint32(1<<unix.BPF_TCP_LISTEN | 1<<unix.BPF_TCP_TIME_WAIT | 1<<unix.BPF_TCP_SYN_RECV | 1<<unix.BPF_TCP_NEW_SYN_RECV)

// inetDiagReq is struct inet_diag_req_v2 (linux/inet_diag.h).
type inetDiagReq struct {
	family, protocol, ext, pad uint8
	states                     uint32
	sockid                     [48]byte
}

// diagMsg is one struct inet_diag_msg of a dump.
type diagMsg []byte

const (
	sockDiagByFamily  = 20 // SOCK_DIAG_BY_FAMILY
	inetDiagSportOff  = 4  // idiag_sport in struct inet_diag_msg's id
	inetDiagSrcOff    = 8  // idiag_src[4]
	inetDiagCookieOff = 44 // idiag_cookie[2] in struct inet_diag_msg's id
	inetDiagInodeOff  = 68 // idiag_inode
	inetDiagMsgMinLen = 72
)

func (m diagMsg) inode() uint32 { return binary.NativeEndian.Uint32(m[inetDiagInodeOff:]) }

// local is the socket's own address (idiag_src, idiag_sport, in network
// byte order), IPv4 also when an IPv6 socket carries it (v4-mapped).
func (m diagMsg) local() netip.AddrPort {
	port := binary.BigEndian.Uint16(m[inetDiagSportOff:])
	if m[0] == unix.AF_INET {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(m[inetDiagSrcOff:inetDiagSrcOff+4])), port)
	}
	return netip.AddrPortFrom(netip.AddrFrom16([16]byte(m[inetDiagSrcOff:inetDiagSrcOff+16])).Unmap(), port)
}

// cookie joins idiag_cookie's two halves, low word first, as
// sock_diag_save_cookie stores them.
func (m diagMsg) cookie() uint64 {
	return uint64(binary.NativeEndian.Uint32(m[inetDiagCookieOff:])) | uint64(binary.NativeEndian.Uint32(m[inetDiagCookieOff+4:]))<<32
}

// eachTCPSocket dumps the TCP sockets of both families in the given
// states and calls each for every one.
func eachTCPSocket(states uint32, each func(diagMsg)) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return fmt.Errorf("opening a sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		if err := dumpTCP(fd, family, states, each); err != nil {
			return err
		}
	}
	return nil
}

func dumpTCP(fd int, family uint8, states uint32, each func(diagMsg)) error {
	var req struct {
		hdr  unix.NlMsghdr
		body inetDiagReq
	}
	req.body = inetDiagReq{family: family, protocol: unix.IPPROTO_TCP, states: states}
	return dumpSockDiag(fd, unsafe.Pointer(&req), int(unsafe.Sizeof(req)), &req.hdr, inetDiagMsgMinLen, func(m []byte) { each(diagMsg(m)) })
}

// unixDiagReq is struct unix_diag_req (linux/unix_diag.h).
type unixDiagReq struct {
	family, protocol uint8
	pad              uint16
	states, ino      uint32
	show             uint32
	cookie           [2]uint32
}

const (
	unixDiagInodeOff  = 4 // udiag_ino in struct unix_diag_msg
	unixDiagMsgMinLen = 16
)

// eachUnixSocket dumps the unix-domain sockets of this network namespace,
// of every type and state, and calls each with every one's inode.
func eachUnixSocket(each func(ino uint32)) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return fmt.Errorf("opening a sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	var req struct {
		hdr  unix.NlMsghdr
		body unixDiagReq
	}
	req.body = unixDiagReq{family: unix.AF_UNIX, states: ^uint32(0)}
	return dumpSockDiag(fd, unsafe.Pointer(&req), int(unsafe.Sizeof(req)), &req.hdr, unixDiagMsgMinLen, func(m []byte) {
		if ino := binary.NativeEndian.Uint32(m[unixDiagInodeOff:]); ino != 0 {
			each(ino)
		}
	})
}

// dumpSockDiag sends the SOCK_DIAG_BY_FAMILY dump request of size bytes at
// req, whose netlink header is hdr, and calls each with every answer of at
// least minLen bytes.
func dumpSockDiag(fd int, req unsafe.Pointer, size int, hdr *unix.NlMsghdr, minLen int, each func([]byte)) error {
	*hdr = unix.NlMsghdr{
		Len:   uint32(size),
		Type:  sockDiagByFamily,
		Flags: unix.NLM_F_REQUEST | unix.NLM_F_DUMP,
		Seq:   1,
	}
	if err := unix.Sendto(fd, unsafe.Slice((*byte)(req), size), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("asking sock_diag for sockets: %w", err)
	}
	rb := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, rb, 0)
		if err != nil {
			return fmt.Errorf("reading sock_diag's answer: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(rb[:n])
		if err != nil {
			return fmt.Errorf("parsing sock_diag's answer: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if code := int32(binary.NativeEndian.Uint32(m.Data)); code != 0 {
						return fmt.Errorf("sock_diag: %w", unix.Errno(-code))
					}
				}
				return nil
			}
			if len(m.Data) >= minLen {
				each(m.Data)
			}
		}
	}
}
