package supervisor

import (
	"encoding/binary"
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// liveSocketInodes asks the kernel (sock_diag) for the inode of every TCP
// socket of this network namespace, IPv4 and IPv6, in any state. A socket
// every process has closed is gone from the list (its TIME_WAIT remnant
// has inode 0), which is how followed connections are known to be over
// without following every process that ever held one.
func liveSocketInodes() (map[uint64]bool, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("opening a sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	live := map[uint64]bool{}
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		if err := dumpInodes(fd, family, live); err != nil {
			return nil, err
		}
	}
	return live, nil
}

// inetDiagReq is struct inet_diag_req_v2 (linux/inet_diag.h).
type inetDiagReq struct {
	family, protocol, ext, pad uint8
	states                     uint32
	sockid                     [48]byte
}

const (
	sockDiagByFamily  = 20 // SOCK_DIAG_BY_FAMILY
	inetDiagInodeOff  = 68 // offset of idiag_inode in struct inet_diag_msg
	inetDiagMsgMinLen = 72
)

func dumpInodes(fd int, family uint8, live map[uint64]bool) error {
	var req struct {
		hdr  unix.NlMsghdr
		body inetDiagReq
	}
	req.hdr = unix.NlMsghdr{
		Len:   uint32(unsafe.Sizeof(req)),
		Type:  sockDiagByFamily,
		Flags: unix.NLM_F_REQUEST | unix.NLM_F_DUMP,
		Seq:   1,
	}
	req.body = inetDiagReq{family: family, protocol: unix.IPPROTO_TCP, states: ^uint32(0)}
	buf := (*[unsafe.Sizeof(req)]byte)(unsafe.Pointer(&req))[:]
	if err := unix.Sendto(fd, buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("asking sock_diag for TCP sockets: %w", err)
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
			if len(m.Data) >= inetDiagMsgMinLen {
				if ino := binary.NativeEndian.Uint32(m.Data[inetDiagInodeOff:]); ino != 0 {
					live[uint64(ino)] = true
				}
			}
		}
	}
}
