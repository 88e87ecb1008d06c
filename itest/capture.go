package itest

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Capture records, from a packet socket on lo, the DSCP of the TCP packets
// sent on each connection: what a switch downstream would see. Start it
// before the traffic it must see; it records every TCP connection on lo
// from then on, keyed by direction (source and destination address and
// port).
type Capture struct {
	fd       int
	done     chan struct{}
	stopping atomic.Bool
	nonce    string // tells this capture's sync datagrams from others'
	syncSeq  atomic.Uint64

	mu     sync.Mutex
	cond   *sync.Cond
	synced uint64 // highest sync datagram seen
	flows  map[Flow]*flowMarks
	drops  uint64 // packets the kernel dropped for want of buffer
	err    error  // why the loop ended early, if it did
}

// Flow is one direction of a TCP connection.
type Flow struct {
	Src, Dst netip.AddrPort
}

type flowMarks struct {
	synAck int         // DSCP of the SYN-ACK sent on this flow, -1 if none
	dscp   map[int]int // DSCP -> packets carrying data or FIN
	last   int         // DSCP of the latest packet carrying data or FIN
	fin    bool
}

// Marks is what a capture saw one side of a connection send: the latest
// connection of its four-tuple, from its SYN on.
type Marks struct {
	// SynAck is the DSCP of the SYN-ACK, or -1 if none was seen. It goes
	// out before the server accepts, so it carries the listener's marking,
	// not the connection's.
	SynAck int
	// DSCP counts the packets that carried data or FIN, by DSCP. Pure ACKs
	// are left out: the kernel may acknowledge a request on behalf of a
	// connection nobody has accepted yet, with the listener's marking.
	DSCP map[int]int
	// Last is the DSCP of the latest packet with data or FIN, -1 if none.
	Last int
	// FIN tells whether this side closed the connection.
	FIN bool
}

// All reports whether at least one packet with data or FIN was seen and
// every one of them carried dscp.
func (m Marks) All(dscp int) bool {
	return len(m.DSCP) == 1 && m.DSCP[dscp] > 0
}

// Packets is the number of packets with data or FIN.
func (m Marks) Packets() int {
	n := 0
	for _, c := range m.DSCP {
		n += c
	}
	return n
}

func (m Marks) String() string {
	var parts []string
	keys := make([]int, 0, len(m.DSCP))
	for k := range m.DSCP {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d×%d", m.DSCP[k], k))
	}
	if len(parts) == 0 {
		parts = append(parts, "no data or FIN packets")
	}
	s := "DSCP " + strings.Join(parts, ", ") + ", SYN-ACK " + strconv.Itoa(m.SynAck)
	if m.FIN {
		s += ", FIN seen"
	}
	return s
}

// StartCapture opens a packet socket on lo (of the current network
// namespace); packets delivered from then on are recorded. Stop it when
// done.
func StartCapture() (*Capture, error) {
	proto := htons(unix.ETH_P_ALL)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
	if err != nil {
		return nil, fmt.Errorf("opening a packet socket: %w", err)
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: lo.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("binding the packet socket to lo: %w", err)
	}
	// The loop wakes up every 100 ms to notice Stop.
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000})
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20) != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 16<<20)
	}
	// Statistics count from the first read on; start from zero.
	unix.GetsockoptTpacketStats(fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	var n [8]byte
	rand.Read(n[:])
	c := &Capture{fd: fd, done: make(chan struct{}), nonce: hex.EncodeToString(n[:]), flows: map[Flow]*flowMarks{}}
	c.cond = sync.NewCond(&c.mu)
	go c.loop()
	return c, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// syncPort is where sync datagrams go: nothing listens there, the packet
// socket sees them anyway (the kernel's port-unreachable answer is harmless).
const syncPort = 9

const syncPrefix = "vhqos-capture-sync "

func (c *Capture) loop() {
	defer close(c.done)
	defer func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	}()
	buf := make([]byte, 1<<17) // lo's MTU is 65536, plus the link header
	for !c.stopping.Load() {
		n, from, err := unix.Recvfrom(c.fd, buf, 0)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		if err != nil {
			c.mu.Lock()
			c.err = fmt.Errorf("reading the packet socket: %w", err)
			c.mu.Unlock()
			return
		}
		// Each packet on lo is seen leaving and arriving; count it once,
		// arriving (so that once a socket has received it, so have we).
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		p, ok := parsePacket(buf[:n])
		if !ok {
			continue
		}
		c.mu.Lock()
		c.record(p)
		c.mu.Unlock()
	}
}

// record files one packet; c.mu is held.
func (c *Capture) record(p packet) {
	if p.proto == unix.IPPROTO_UDP {
		rest, ok := strings.CutPrefix(string(p.udpPayload), syncPrefix+c.nonce+" ")
		if p.dst.Port() != syncPort || !ok {
			return
		}
		if seq, err := strconv.ParseUint(rest, 10, 64); err == nil && seq > c.synced {
			c.synced = seq
			c.cond.Broadcast()
		}
		return
	}
	f := Flow{Src: p.src, Dst: p.dst}
	m := c.flows[f]
	if m == nil {
		m = &flowMarks{synAck: -1, dscp: map[int]int{}, last: -1}
		c.flows[f] = m
	}
	if p.flags&tcpSYN != 0 {
		// A SYN or SYN-ACK opens a new connection, and a client reuses
		// its ports (wrk runs through tens of thousands in seconds): what
		// an earlier connection of the same four-tuple sent is not this
		// one's.
		*m = flowMarks{synAck: -1, dscp: map[int]int{}, last: -1}
	}
	switch {
	case p.flags&tcpSYN != 0 && p.flags&tcpACK != 0:
		m.synAck = p.dscp
	case p.flags&tcpSYN != 0, p.flags&tcpRST != 0:
	case p.payload > 0 || p.flags&tcpFIN != 0:
		m.dscp[p.dscp]++
		m.last = p.dscp
		if p.flags&tcpFIN != 0 {
			m.fin = true
		}
	}
}

// Sync waits until every packet that any socket in this namespace has
// received before the call has been recorded: it sends a datagram of its
// own through lo and waits for the capture to see it (packets reach the
// packet socket in the order lo delivered them). It fails if the kernel
// dropped packets before the capture could read them, since the record is
// then incomplete.
func (c *Capture) Sync() error {
	seq := c.syncSeq.Add(1)
	conn, err := net.Dial("udp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(syncPort)))
	if err != nil {
		return fmt.Errorf("capture sync: %w", err)
	}
	_, err = fmt.Fprintf(conn, "%s%s %d", syncPrefix, c.nonce, seq)
	conn.Close()
	if err != nil {
		return fmt.Errorf("capture sync: %w", err)
	}
	// Generous: the capture's reader shares a busy machine (or the VM's
	// emulated CPU) with the servers it watches.
	const wait = time.Minute
	timeout := time.AfterFunc(wait, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer timeout.Stop()
	deadline := time.Now().Add(wait)
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.synced < seq {
		if c.err != nil {
			return c.err
		}
		if c.stopping.Load() {
			return errors.New("capture stopped")
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("capture sync: the capture did not see its own datagram within %v", wait)
		}
		c.cond.Wait()
	}
	if st, err := unix.GetsockoptTpacketStats(c.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
		c.drops += uint64(st.Drops)
	}
	if c.drops > 0 {
		return fmt.Errorf("the capture missed %d packets (socket buffer full): its record is incomplete", c.drops)
	}
	return nil
}

// Conn returns what the server sent on the connection between server and
// client, after Sync: with a client that has read the whole response
// (Get does), every packet of it is in. On error (see Sync) the marks are
// still returned, possibly incomplete.
func (c *Capture) Conn(server, client netip.AddrPort) (Marks, error) {
	err := c.Sync()
	return c.marks(Flow{Src: unmap(server), Dst: unmap(client)}), err
}

func (c *Capture) marks(f Flow) Marks {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := Marks{SynAck: -1, Last: -1, DSCP: map[int]int{}}
	if fm := c.flows[f]; fm != nil {
		m.SynAck, m.Last, m.FIN = fm.synAck, fm.last, fm.fin
		for k, v := range fm.dscp {
			m.DSCP[k] = v
		}
	}
	return m
}

// DSCP returns the DSCP values, with packet counts, of the packets with
// data or FIN the server sent to the client (after Sync; a failed Sync
// leaves the map possibly incomplete).
func (c *Capture) DSCP(server, client netip.AddrPort) map[int]int {
	m, _ := c.Conn(server, client)
	return m.DSCP
}

// Last returns the DSCP of the latest packet with data or FIN from server
// to client seen so far, or -1 if there was none. It does not wait: poll it.
func (c *Capture) Last(server, client netip.AddrPort) int {
	return c.marks(Flow{Src: unmap(server), Dst: unmap(client)}).Last
}

// Stop ends the capture and closes the packet socket.
func (c *Capture) Stop() {
	if c.stopping.Swap(true) {
		return
	}
	<-c.done
	unix.Close(c.fd)
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// packet is what the capture needs of one IP packet.
type packet struct {
	src, dst   netip.AddrPort
	proto      int
	dscp       int
	flags      byte   // TCP flags
	payload    int    // TCP payload length, from the IP header
	udpPayload []byte // UDP payload, as captured
}

// parsePacket reads a frame as a packet socket on lo delivers it (an
// Ethernet header with zero addresses, then IPv4 or IPv6). Only TCP and UDP
// directly after the IP header are understood. Lengths come from the
// headers, so a frame truncated after the TCP header still counts.
func parsePacket(b []byte) (packet, bool) {
	var p packet
	if len(b) < 14 {
		return p, false
	}
	ethertype := binary.BigEndian.Uint16(b[12:14])
	b = b[14:]
	var src, dst netip.Addr
	var l4 []byte
	var l4len int // the transport segment's length according to the IP header
	switch ethertype {
	case unix.ETH_P_IP:
		if len(b) < 20 || b[0]>>4 != 4 {
			return p, false
		}
		ihl := int(b[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(b[2:4]))
		if ihl < 20 || len(b) < ihl || total < ihl {
			return p, false
		}
		if frag := binary.BigEndian.Uint16(b[6:8]); frag&0x1fff != 0 {
			return p, false // not the first fragment: no transport header
		}
		p.proto = int(b[9])
		p.dscp = int(b[1] >> 2)
		src, dst = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
		l4, l4len = b[ihl:], total-ihl
	case unix.ETH_P_IPV6:
		if len(b) < 40 || b[0]>>4 != 6 {
			return p, false
		}
		tclass := (binary.BigEndian.Uint16(b[0:2]) >> 4) & 0xff
		p.proto = int(b[6])
		p.dscp = int(tclass >> 2)
		src, dst = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
		l4, l4len = b[40:], int(binary.BigEndian.Uint16(b[4:6]))
	default:
		return p, false
	}
	if len(l4) > l4len {
		l4 = l4[:l4len] // Ethernet padding
	}
	switch p.proto {
	case unix.IPPROTO_TCP:
		if len(l4) < 20 {
			return p, false
		}
		off := int(l4[12]>>4) * 4
		if off < 20 || off > l4len {
			return p, false
		}
		p.flags = l4[13]
		p.payload = l4len - off
	case unix.IPPROTO_UDP:
		if len(l4) < 8 {
			return p, false
		}
		p.udpPayload = l4[8:]
	default:
		return p, false
	}
	p.src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:2]))
	p.dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:4]))
	return p, true
}
