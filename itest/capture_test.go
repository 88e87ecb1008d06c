package itest

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// Hand-built frames as a packet socket on lo delivers them: a 14-byte
// Ethernet header with zero addresses, then the IP packet.

func ether(ethertype uint16, ip []byte) []byte {
	f := make([]byte, 14, 14+len(ip))
	binary.BigEndian.PutUint16(f[12:], ethertype)
	return append(f, ip...)
}

func tcpSegment(src, dst netip.AddrPort, flags byte, payload []byte) []byte {
	t := make([]byte, 20, 20+len(payload))
	binary.BigEndian.PutUint16(t[0:], src.Port())
	binary.BigEndian.PutUint16(t[2:], dst.Port())
	t[12] = 5 << 4
	t[13] = flags
	return append(t, payload...)
}

func udpDatagram(src, dst netip.AddrPort, payload []byte) []byte {
	u := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(u[0:], src.Port())
	binary.BigEndian.PutUint16(u[2:], dst.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(8+len(payload)))
	return append(u, payload...)
}

// ipv4 wraps a transport segment; options adds that many 4-byte words of
// IP options (NOPs).
func ipv4(src, dst netip.Addr, tos, proto byte, options int, l4 []byte) []byte {
	ihl := 5 + options
	h := make([]byte, ihl*4)
	h[0] = 4<<4 | byte(ihl)
	h[1] = tos
	binary.BigEndian.PutUint16(h[2:], uint16(len(h)+len(l4)))
	h[8] = 64
	h[9] = proto
	copy(h[12:16], src.AsSlice())
	copy(h[16:20], dst.AsSlice())
	for i := 20; i < len(h); i++ {
		h[i] = 1 // NOP
	}
	return append(h, l4...)
}

func ipv6(src, dst netip.Addr, tclass, proto byte, l4 []byte) []byte {
	h := make([]byte, 40)
	binary.BigEndian.PutUint32(h[0:], 6<<28|uint32(tclass)<<20|0x12345) // with a flow label
	binary.BigEndian.PutUint16(h[4:], uint16(len(l4)))
	h[6] = proto
	h[7] = 64
	copy(h[8:24], src.AsSlice())
	copy(h[24:40], dst.AsSlice())
	return append(h, l4...)
}

var (
	srv4 = netip.MustParseAddrPort("127.0.0.2:8080")
	cli4 = netip.MustParseAddrPort("127.0.0.1:40000")
	srv6 = netip.MustParseAddrPort("[::1]:8080")
	cli6 = netip.MustParseAddrPort("[::1]:40001")
)

func tcp4(tos, flags byte, payload string) []byte {
	return ether(unix.ETH_P_IP, ipv4(srv4.Addr(), cli4.Addr(), tos, unix.IPPROTO_TCP, 0, tcpSegment(srv4, cli4, flags, []byte(payload))))
}

func tcp6(tclass, flags byte, payload string) []byte {
	return ether(unix.ETH_P_IPV6, ipv6(srv6.Addr(), cli6.Addr(), tclass, unix.IPPROTO_TCP, tcpSegment(srv6, cli6, flags, []byte(payload))))
}

func TestParsePacket(t *testing.T) {
	withOptions := ether(unix.ETH_P_IP, ipv4(srv4.Addr(), cli4.Addr(), 0x28, unix.IPPROTO_TCP, 2, tcpSegment(srv4, cli4, tcpACK|tcpFIN, nil)))
	padded := append(tcp4(0xb8, tcpACK, ""), 0, 0, 0, 0, 0, 0) // Ethernet padding is not payload
	full := tcp4(0xb8, tcpACK|0x08, "HTTP/1.1 200 OK\r\n\r\nhello")
	truncated := full[:14+20+20+3] // headers say 24 bytes of payload, 3 captured
	ecn := tcp4(0xb8|0x03, tcpACK, "x")
	for _, tc := range []struct {
		name    string
		frame   []byte
		src     netip.AddrPort
		dscp    int
		flags   byte
		payload int
	}{
		{"IPv4 data, EF", full, srv4, 46, tcpACK | 0x08, 24},
		{"IPv4 SYN-ACK, CS0", tcp4(0, tcpSYN|tcpACK, ""), srv4, 0, tcpSYN | tcpACK, 0},
		{"IPv4 with options, FIN, AF11", withOptions, srv4, 10, tcpACK | tcpFIN, 0},
		{"IPv4 padded pure ACK", padded, srv4, 46, tcpACK, 0},
		{"IPv4 truncated capture", truncated, srv4, 46, tcpACK | 0x08, 24},
		{"ECN bits are not DSCP", ecn, srv4, 46, tcpACK, 1},
		{"IPv6 data, EF", tcp6(0xb8, tcpACK, "hello"), srv6, 46, tcpACK, 5},
		{"IPv6 FIN, AF41", tcp6(34<<2, tcpACK|tcpFIN, ""), srv6, 34, tcpACK | tcpFIN, 0},
		{"IPv6 SYN-ACK, CS1", tcp6(8<<2|1, tcpSYN|tcpACK, ""), srv6, 8, tcpSYN | tcpACK, 0},
	} {
		p, ok := parsePacket(tc.frame)
		if !ok {
			t.Errorf("%s: not parsed", tc.name)
			continue
		}
		if p.proto != unix.IPPROTO_TCP || p.src != tc.src || p.dscp != tc.dscp || p.flags != tc.flags || p.payload != tc.payload {
			t.Errorf("%s: got proto %d %v->%v dscp %d flags %#x payload %d, want TCP from %v dscp %d flags %#x payload %d",
				tc.name, p.proto, p.src, p.dst, p.dscp, p.flags, p.payload, tc.src, tc.dscp, tc.flags, tc.payload)
		}
	}

	udp := ether(unix.ETH_P_IP, ipv4(cli4.Addr(), netip.MustParseAddr("127.0.0.1"), 0, unix.IPPROTO_UDP, 0,
		udpDatagram(cli4, netip.MustParseAddrPort("127.0.0.1:9"), []byte("sync 1"))))
	if p, ok := parsePacket(udp); !ok || p.proto != unix.IPPROTO_UDP || p.dst.Port() != 9 || string(p.udpPayload) != "sync 1" {
		t.Errorf("UDP: got %+v, %v", p, ok)
	}

	fragment := tcp4(0, tcpACK, "x")
	binary.BigEndian.PutUint16(fragment[14+6:], 100) // fragment offset 800
	icmp := ether(unix.ETH_P_IP, ipv4(srv4.Addr(), cli4.Addr(), 0, unix.IPPROTO_ICMP, 0, make([]byte, 8)))
	arp := ether(unix.ETH_P_ARP, make([]byte, 28))
	shortTCP := tcp4(0, tcpACK, "")[:14+20+10]
	badOffset := tcp4(0, tcpACK, "")
	badOffset[14+20+12] = 15 << 4 // 60-byte TCP header in a 20-byte segment
	badIHL := tcp4(0, tcpACK, "")
	badIHL[14] = 4<<4 | 3
	v6hopByHop := ether(unix.ETH_P_IPV6, ipv6(srv6.Addr(), cli6.Addr(), 0, 0, make([]byte, 28)))
	for name, frame := range map[string][]byte{
		"empty": nil, "Ethernet header only": make([]byte, 14), "ARP": arp, "ICMP": icmp,
		"later fragment": fragment, "TCP header cut short": shortTCP, "TCP offset beyond segment": badOffset,
		"IHL below 5": badIHL, "IPv6 extension header": v6hopByHop, "IPv4 version in IPv6 frame": ether(unix.ETH_P_IPV6, make([]byte, 60)),
	} {
		if p, ok := parsePacket(frame); ok {
			t.Errorf("%s: parsed as %+v", name, p)
		}
	}
}

// What a connection's record keeps: the SYN-ACK apart, data and FIN
// counted by DSCP, pure ACKs, SYNs and RSTs left out, each direction apart.
func TestCaptureRecord(t *testing.T) {
	c := &Capture{flows: map[Flow]*flowMarks{}, nonce: "n"}
	c.cond = sync.NewCond(&c.mu)
	for _, frame := range [][]byte{
		tcp4(0, tcpSYN|tcpACK, ""),
		tcp4(0, tcpACK, ""), // the kernel's ACK of the request, before accept
		tcp4(0xb8, tcpACK, "HTTP/1.1 200 OK\r\n"),
		tcp4(0xb8, tcpACK|0x08, "body"),
		tcp4(0xb8, tcpACK|tcpFIN, ""),
		tcp4(0x20, tcpRST, ""),
		// the client's own packets, unmarked
		ether(unix.ETH_P_IP, ipv4(cli4.Addr(), srv4.Addr(), 0, unix.IPPROTO_TCP, 0, tcpSegment(cli4, srv4, tcpSYN, nil))),
		ether(unix.ETH_P_IP, ipv4(cli4.Addr(), srv4.Addr(), 0, unix.IPPROTO_TCP, 0, tcpSegment(cli4, srv4, tcpACK, []byte("GET / HTTP/1.0\r\n\r\n")))),
	} {
		p, ok := parsePacket(frame)
		if !ok {
			t.Fatalf("frame not parsed: %x", frame)
		}
		c.record(p)
	}
	m := c.marks(Flow{srv4, cli4})
	if m.SynAck != 0 || !m.All(46) || m.Packets() != 3 || m.Last != 46 || !m.FIN {
		t.Errorf("server side: %v (last %d), want SYN-ACK 0, 3 packets all 46, FIN", m, m.Last)
	}
	if m.All(0) {
		t.Error("All(0) true for a connection marked 46")
	}
	cm := c.marks(Flow{cli4, srv4})
	if cm.SynAck != -1 || !cm.All(0) || cm.Packets() != 1 || cm.FIN {
		t.Errorf("client side: %v, want no SYN-ACK, 1 packet with 0, no FIN", cm)
	}
	if none := c.marks(Flow{srv6, cli6}); none.SynAck != -1 || none.Last != -1 || none.All(0) || none.Packets() != 0 {
		t.Errorf("unknown connection: %v", none)
	}
	// A mapped address finds the same record.
	mapped := netip.AddrPortFrom(netip.AddrFrom16(srv4.Addr().As16()), srv4.Port())
	if c.Last(mapped, cli4) != 46 {
		t.Errorf("Last with a v4-mapped server address = %d, want 46", c.Last(mapped, cli4))
	}

	// Sync datagrams move the mark only for this capture's nonce.
	for _, payload := range []string{syncPrefix + "other 7", syncPrefix + "n 3", syncPrefix + "n 2"} {
		p, _ := parsePacket(ether(unix.ETH_P_IP, ipv4(cli4.Addr(), cli4.Addr(), 0, unix.IPPROTO_UDP, 0,
			udpDatagram(cli4, netip.AddrPortFrom(cli4.Addr(), syncPort), []byte(payload)))))
		c.record(p)
	}
	if c.synced != 3 {
		t.Errorf("synced = %d, want 3", c.synced)
	}
}
