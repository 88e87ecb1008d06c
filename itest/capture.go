package itest

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Capture records, from a packet socket on lo, the DSCP of the TCP packets
// servers send: what a switch downstream would see.
type Capture struct {
	fd       int
	done     chan struct{}
	stopping atomic.Bool
	mu       sync.Mutex
	// flows maps a server->client flow to the DSCP values of its packets
	// that carried data or FIN (sent after accept; the SYN-ACK and early
	// ACKs go out before the server could mark anything).
	flows map[Flow]map[int]int
	last  map[Flow]int // DSCP of the latest such packet
}

// Flow is one direction of a TCP connection.
type Flow struct {
	Src, Dst netip.AddrPort
}

// StartCapture opens the packet socket; traffic from then on is seen.
func StartCapture() (*Capture, error) {
	proto := int(htons(unix.ETH_P_ALL))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return nil, fmt.Errorf("opening a packet socket: %w", err)
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: lo.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("binding the packet socket to lo: %w", err)
	}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000})
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	c := &Capture{fd: fd, done: make(chan struct{}), flows: map[Flow]map[int]int{}, last: map[Flow]int{}}
	go c.loop()
	return c, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *Capture) loop() {
	defer close(c.done)
	buf := make([]byte, 65536)
	for {
		if c.stopping.Load() {
			return
		}
		n, from, err := unix.Recvfrom(c.fd, buf, 0)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		if err != nil {
			return
		}
		// Each packet on lo is seen leaving and arriving; count it once.
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if f, dscp, ok := parseFrame(buf[:n]); ok {
			c.mu.Lock()
			if c.flows[f] == nil {
				c.flows[f] = map[int]int{}
			}
			c.flows[f][dscp]++
			c.last[f] = dscp
			c.mu.Unlock()
		}
	}
}

// parseFrame reads an Ethernet frame as lo delivers it and returns the flow
// and DSCP of a TCP packet carrying data or FIN.
func parseFrame(b []byte) (Flow, int, bool) {
	if len(b) < 14 {
		return Flow{}, 0, false
	}
	ethertype := binary.BigEndian.Uint16(b[12:14])
	b = b[14:]
	var src, dst netip.Addr
	var dscp int
	var tcp []byte
	switch ethertype {
	case 0x0800:
		if len(b) < 20 || b[9] != unix.IPPROTO_TCP {
			return Flow{}, 0, false
		}
		ihl := int(b[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(b[2:4]))
		if ihl < 20 || len(b) < ihl || total > len(b) {
			return Flow{}, 0, false
		}
		dscp = int(b[1] >> 2)
		src, dst = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
		tcp = b[ihl:total]
	case 0x86dd:
		if len(b) < 40 || b[6] != unix.IPPROTO_TCP {
			return Flow{}, 0, false
		}
		tclass := (binary.BigEndian.Uint16(b[0:2]) >> 4) & 0xff
		dscp = int(tclass >> 2)
		src, dst = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
		plen := int(binary.BigEndian.Uint16(b[4:6]))
		if 40+plen > len(b) {
			return Flow{}, 0, false
		}
		tcp = b[40 : 40+plen]
	default:
		return Flow{}, 0, false
	}
	if len(tcp) < 20 {
		return Flow{}, 0, false
	}
	off := int(tcp[12]>>4) * 4
	flags := tcp[13]
	const fin = 0x01
	if off > len(tcp) || (len(tcp) == off && flags&fin == 0) {
		return Flow{}, 0, false
	}
	f := Flow{
		Src: netip.AddrPortFrom(src, binary.BigEndian.Uint16(tcp[0:2])),
		Dst: netip.AddrPortFrom(dst, binary.BigEndian.Uint16(tcp[2:4])),
	}
	return f, dscp, true
}

// DSCP returns the DSCP values seen on the flow from server to client, with
// packet counts, waiting up to a second for the capture to catch up.
func (c *Capture) DSCP(server, client netip.AddrPort) map[int]int {
	f := Flow{Src: server, Dst: client}
	deadline := time.Now().Add(time.Second)
	for {
		c.mu.Lock()
		got := c.flows[f]
		out := make(map[int]int, len(got))
		for k, v := range got {
			out[k] = v
		}
		c.mu.Unlock()
		if len(out) > 0 || time.Now().After(deadline) {
			return out
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Last returns the DSCP of the latest data or FIN packet from server to
// client, or -1 if there was none.
func (c *Capture) Last(server, client netip.AddrPort) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d, ok := c.last[Flow{Src: server, Dst: client}]; ok {
		return d
	}
	return -1
}

// Stop closes the packet socket.
func (c *Capture) Stop() {
	c.stopping.Store(true)
	<-c.done
	unix.Close(c.fd)
}
