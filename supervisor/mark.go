package supervisor

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// markDSCP sets the DiffServ code point of every packet the socket sends
// from now on. TOS/traffic class carry DSCP in their upper six bits; the ECN
// bits are the kernel's. An IPv6 socket may carry IPv4 traffic (v4-mapped
// peers), which takes its mark from IP_TOS, so it gets both.
func markDSCP(fd int, family uint16, dscp int) error {
	tos := dscp << 2
	switch family {
	case unix.AF_INET:
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TOS, tos); err != nil {
			return fmt.Errorf("setting IP_TOS=%#x: %w", tos, err)
		}
	case unix.AF_INET6:
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_TCLASS, tos); err != nil {
			return fmt.Errorf("setting IPV6_TCLASS=%#x: %w", tos, err)
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TOS, tos); err != nil {
			return fmt.Errorf("setting IP_TOS=%#x on an IPv6 socket: %w", tos, err)
		}
	}
	return nil
}
