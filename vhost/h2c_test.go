package vhost

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2/hpack"
)

// h2frame builds an HTTP/2 frame (RFC 9113 §4.1).
func h2frame(typ, flags byte, id uint32, payload []byte) []byte {
	n := len(payload)
	f := []byte{byte(n >> 16), byte(n >> 8), byte(n), typ, flags, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(f[5:], id)
	return append(f, payload...)
}

// h2conn is the client preface followed by frames.
func h2conn(frames ...[]byte) []byte {
	return append([]byte(h2cPreface), bytes.Join(frames, nil)...)
}

var (
	// h2settings and h2window are what curl sends before its HEADERS.
	h2settings = h2frame(h2Settings, 0, 0, []byte{0, 3, 0, 0, 0, 100, 0, 4, 0, 2, 0, 0, 0, 2, 0, 0, 0, 0})
	h2window   = h2frame(h2WindowUpdate, 0, 0, []byte{0, 0xff, 0, 1})
)

// h2headers is a HEADERS frame on stream 1 with END_STREAM and END_HEADERS.
func h2headers(block []byte) []byte {
	return h2frame(h2Headers, 0x1|h2FlagEndHeaders, 1, block)
}

// hpackBlock encodes name, value pairs with hpack's encoder, which indexes
// every field and Huffman-codes a string when that is shorter, as curl's
// nghttp2 does.
func hpackBlock(pairs ...string) []byte {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for i := 0; i < len(pairs); i += 2 {
		if err := enc.WriteField(hpack.HeaderField{Name: pairs[i], Value: pairs[i+1]}); err != nil {
			panic(err)
		}
	}
	return buf.Bytes()
}

// request is a GET's header block: :method, :scheme and :path, then the
// given pairs.
func request(pairs ...string) []byte {
	return hpackBlock(append([]string{":method", "GET", ":scheme", "http", ":path", "/"}, pairs...)...)
}

// hpackInt encodes an HPACK integer with an n-bit prefix after the bits in
// first (RFC 7541 §5.1).
func hpackInt(first byte, n uint, v int) []byte {
	max := 1<<n - 1
	if v < max {
		return []byte{first | byte(v)}
	}
	out := []byte{first | byte(max)}
	for v -= max; v >= 128; v >>= 7 {
		out = append(out, byte(v%128+128))
	}
	return append(out, byte(v))
}

// rawString is an HPACK string literal without Huffman coding.
func rawString(s string) []byte { return append(hpackInt(0, 7, len(s)), s...) }

// literal is a literal field without indexing, with a new name and neither
// string Huffman-coded (RFC 7541 §6.2.2).
func literal(name, value string) []byte {
	return bytes.Join([][]byte{{0}, rawString(name), rawString(value)}, nil)
}

// literalIndexed is a literal field with incremental indexing whose name is
// static table entry idx (RFC 7541 §6.2.1).
func literalIndexed(idx int, value string) []byte {
	return append(hpackInt(0x40, 6, idx), rawString(value)...)
}

// Static table entries (RFC 7541 Appendix A) the raw blocks use.
const (
	staticAuthority = 1
	staticGet       = 2
	staticPath      = 4
	staticHTTP      = 6
	staticAccept    = 19 // accept with an empty value
	staticHost      = 38
)

// indexedNew is a literal field with incremental indexing and a new name.
func indexedNew(name, value string) []byte {
	return bytes.Join([][]byte{{0x40}, rawString(name), rawString(value)}, nil)
}

// evicted is a block that fills the 4096-byte dynamic table so that its
// first regular entry is evicted, then references entry ref: 62 is x-b, 63
// x-a, 64 was x-first and is gone (RFC 7541 §4.4). Go's server serves the
// kept one (TestSniffH2CGoServer) and closes the connection on the other.
func evicted(ref int) []byte {
	return rawRequest(
		hpackHuffman(staticAuthority, hpack.AppendHuffmanString(nil, "a.example")), // not indexed
		indexedNew("x-first", "1"),                           // 7+1+32 = 40
		indexedNew("x-a", strings.Repeat("a", 4096-40-32-3)), // fills the table to 4096
		indexedNew("x-b", "c"),                               // evicts x-first
		hpackInt(0x80, 7, ref),
	)
}

// manyFields is a request for a.example of n fields: the four pseudo-header
// fields and accept (empty) over and over.
func manyFields(n int) []byte {
	return rawRequest(literalIndexed(staticAuthority, "a.example"), bytes.Repeat([]byte{0x80 | staticAccept}, n-4))
}

// rawRequest is :method GET, :path /, :scheme http, all indexed, then the
// given representations.
func rawRequest(reps ...[]byte) []byte {
	return append([]byte{0x80 | staticGet, 0x80 | staticPath, 0x80 | staticHTTP}, bytes.Join(reps, nil)...)
}

// hpackHuffman is a literal field without indexing, name static entry idx,
// with a Huffman-coded value of the given bytes.
func hpackHuffman(idx int, coded []byte) []byte {
	return bytes.Join([][]byte{hpackInt(0, 4, idx), hpackInt(0x80, 7, len(coded)), coded}, nil)
}

var h2cCases = []struct {
	label string
	data  []byte
	name  string
	want  Sniff
}{
	{"empty", nil, "", NeedMore},
	{"preface prefix", []byte("PRI * HTTP/2.0\r\n"), "", NeedMore},
	{"preface alone", []byte(h2cPreface), "", NeedMore},
	{"SETTINGS alone", h2conn(h2settings), "", NeedMore},
	{"frame header cut", h2conn(h2settings, h2window[:5]), "", NeedMore},
	{"HEADERS cut", h2conn(h2settings, h2headers(request(":authority", "a.example"))[:15]), "", NeedMore},
	{"not the preface", []byte("PRI * HTTP/2.1\r\n\r\nSM\r\n\r\n"), "", NoName},
	{"HTTP/1.1", []byte("GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"), "", NoName},

	// What clients send.
	{"SETTINGS, WINDOW_UPDATE, HEADERS", h2conn(h2settings, h2window, h2headers(request(":authority", "shop.example.com"))), "shop.example.com", Found},
	{"SETTINGS ACK first", h2conn(h2frame(h2Settings, h2FlagAck, 0, nil), h2headers(request(":authority", "a.example"))), "a.example", Found},
	{"empty SETTINGS", h2conn(h2frame(h2Settings, 0, 0, nil), h2headers(request(":authority", "a.example"))), "a.example", Found},
	{"port stripped", h2conn(h2settings, h2headers(request(":authority", "shop.example.com:8080"))), "shop.example.com", Found},
	{"empty port", h2conn(h2settings, h2headers(request(":authority", "a.example:"))), "a.example", Found},
	{"case and dot", h2conn(h2settings, h2headers(request(":authority", "Shop.Example.COM."))), "shop.example.com", Found},
	{"host instead of :authority", h2conn(h2settings, h2headers(request("host", "shop.example.com:80", "accept", "*/*"))), "shop.example.com", Found},
	{"empty :authority and host", h2conn(h2settings, h2headers(request(":authority", "", "host", "a.example"))), "a.example", Found},
	{":authority wins over host", h2conn(h2settings, h2headers(request(":authority", "a.example", "host", "b.example"))), "a.example", Found},
	{"not Huffman-coded", h2conn(h2settings, h2headers(rawRequest(literalIndexed(staticAuthority, "shop.example.com")))), "shop.example.com", Found},
	{"Huffman-coded", h2conn(h2settings, h2headers(rawRequest(hpackHuffman(staticAuthority, hpack.AppendHuffmanString(nil, "a.example"))))), "a.example", Found},
	{"Huffman-coded host", h2conn(h2settings, h2headers(rawRequest(hpackHuffman(staticHost, hpack.AppendHuffmanString(nil, "a.example"))))), "a.example", Found},
	{"reserved bit of stream id", h2conn(h2settings, h2frame(h2Headers, h2FlagEndHeaders, 1<<31|1, request(":authority", "a.example"))), "a.example", Found},
	{"stream 13", h2conn(h2settings, h2frame(h2Headers, h2FlagEndHeaders, 13, request(":authority", "a.example"))), "a.example", Found},
	{"without END_STREAM", h2conn(h2settings, h2frame(h2Headers, h2FlagEndHeaders, 1, request(":authority", "a.example"))), "a.example", Found},
	{"padded", h2conn(h2settings, h2frame(h2Headers, h2FlagEndHeaders|h2FlagPadded, 1,
		append(append([]byte{5}, request(":authority", "a.example")...), 0, 0, 0, 0, 0))), "a.example", Found},
	{"padded, no padding", h2conn(h2settings, h2frame(h2Headers, h2FlagEndHeaders|h2FlagPadded, 1,
		append([]byte{0}, request(":authority", "a.example")...))), "a.example", Found},
	{"PRIORITY flag", h2conn(h2settings, h2frame(h2Headers, h2FlagEndHeaders|h2FlagPriority, 3,
		append([]byte{0x80, 0, 0, 1, 200}, request(":authority", "a.example")...))), "a.example", Found},
	{"padded and PRIORITY", h2conn(h2settings, h2frame(h2Headers, h2FlagEndHeaders|h2FlagPadded|h2FlagPriority, 1,
		append(append([]byte{2, 0, 0, 0, 0, 15}, request(":authority", "a.example")...), 0, 0))), "a.example", Found},
	{"CONTINUATION", h2conn(h2settings,
		h2frame(h2Headers, 0, 1, request(":authority", "a.example")[:4]),
		h2frame(h2Continuation, h2FlagEndHeaders, 1, request(":authority", "a.example")[4:])), "a.example", Found},
	{"empty HEADERS, empty CONTINUATIONs", h2conn(h2settings,
		h2frame(h2Headers, 0, 1, nil),
		h2frame(h2Continuation, 0, 1, nil),
		h2frame(h2Continuation, 0, 1, request(":authority", "a.example")),
		h2frame(h2Continuation, h2FlagEndHeaders, 1, nil)), "a.example", Found},
	{"frames skipped", h2conn(h2settings,
		h2frame(h2Settings, h2FlagAck, 0, nil),
		h2frame(h2Ping, 0, 0, make([]byte, 8)),
		h2frame(h2Priority, 0, 3, []byte{0, 0, 0, 0, 200}),
		h2frame(0x10, 0, 0, []byte{0, 0, 0, 1, 'u', '=', '1'}), // PRIORITY_UPDATE (RFC 9218)
		h2frame(0xfa, 0xff, 7, []byte("unknown")),
		h2window,
		h2headers(request(":authority", "a.example"))), "a.example", Found},
	{"dynamic table: own inserts referenced", h2conn(h2settings, h2headers(rawRequest(
		literalIndexed(staticAuthority, "a.example"),  // entry 62
		indexedNew("x-a", "b"),                        // entry 62, :authority 63
		[]byte{0x80 | 62},                             // x-a: b
		append(hpackInt(0, 4, 62), rawString("c")...), // x-a: c
	))), "a.example", Found},
	{"dynamic table: reference to an evicted entry", h2conn(h2settings, h2headers(evicted(64))), "", NoName},
	{"dynamic table: reference to a kept entry", h2conn(h2settings, h2headers(evicted(63))), "a.example", Found},
	{"dynamic table size update to 0", h2conn(h2settings, h2headers(append([]byte{0x20}, request(":authority", "a.example")...))), "a.example", Found},

	// No name.
	{"no :authority nor host", h2conn(h2settings, h2headers(request("accept", "*/*"))), "", NoName},
	{"empty block", h2conn(h2settings, h2headers(nil)), "", NoName},
	{"IPv4 :authority", h2conn(h2settings, h2headers(request(":authority", "127.0.0.1:8080"))), "", NoName},
	{"IPv6 :authority", h2conn(h2settings, h2headers(request(":authority", "[::1]:8080"))), "", NoName},
	{"userinfo", h2conn(h2settings, h2headers(request(":authority", "user@a.example"))), "", NoName},
	{"userinfo with password and port", h2conn(h2settings, h2headers(request(":authority", "u:p@a.example:80"))), "", NoName},
	{"empty :authority", h2conn(h2settings, h2headers(request(":authority", ""))), "", NoName},
	{"bad port", h2conn(h2settings, h2headers(request(":authority", "a.example:8x"))), "", NoName},
	{"space in :authority", h2conn(h2settings, h2headers(request(":authority", " a.example"))), "", NoName},
	{"two :authority", h2conn(h2settings, h2headers(request(":authority", "a.example", ":authority", "a.example"))), "", NoName},
	{"empty and non-empty :authority", h2conn(h2settings, h2headers(request(":authority", "", ":authority", "a.example"))), "", NoName},
	{"two host", h2conn(h2settings, h2headers(request("host", "a.example", "host", "a.example"))), "", NoName},
	{":authority and two host", h2conn(h2settings, h2headers(request(":authority", "a.example", "host", "a.example", "host", "b.example"))), "", NoName},
	{"duplicate :authority from the dynamic table", h2conn(h2settings, h2headers(rawRequest(
		literalIndexed(staticAuthority, "a.example"), []byte{0x80 | 62}))), "", NoName},
	{"pseudo-header after regular", h2conn(h2settings, h2headers(request("accept", "*/*", ":authority", "a.example"))), "", NoName},
	{"upper-case Host", h2conn(h2settings, h2headers(rawRequest(literal("Host", "a.example")))), "", NoName},
	{"long :authority", h2conn(h2settings, h2headers(request(":authority", strings.Repeat("a", 600)))), "", NoName},

	// Frames a server refuses.
	{"HEADERS first", h2conn(h2headers(request(":authority", "a.example"))), "", NoName},
	{"SETTINGS of 5 bytes", h2conn(h2frame(h2Settings, 0, 0, make([]byte, 5))), "", NoName},
	{"SETTINGS on stream 1", h2conn(h2frame(h2Settings, 0, 1, nil)), "", NoName},
	{"SETTINGS ACK with payload", h2conn(h2settings, h2frame(h2Settings, h2FlagAck, 0, make([]byte, 6))), "", NoName},
	{"WINDOW_UPDATE on a stream", h2conn(h2settings, h2frame(h2WindowUpdate, 0, 1, []byte{0, 0, 1, 0})), "", NoName},
	{"WINDOW_UPDATE of 0", h2conn(h2settings, h2frame(h2WindowUpdate, 0, 0, []byte{0x80, 0, 0, 0})), "", NoName},
	{"WINDOW_UPDATE of 3 bytes", h2conn(h2settings, h2frame(h2WindowUpdate, 0, 0, []byte{0, 0, 1})), "", NoName},
	{"PING of 7 bytes", h2conn(h2settings, h2frame(h2Ping, 0, 0, make([]byte, 7))), "", NoName},
	{"PING on a stream", h2conn(h2settings, h2frame(h2Ping, 0, 1, make([]byte, 8))), "", NoName},
	{"PRIORITY of 2 bytes", h2conn(h2settings, h2frame(h2Priority, 0, 3, []byte{0, 0})), "", NoName},
	{"PRIORITY on stream 0", h2conn(h2settings, h2frame(h2Priority, 0, 0, make([]byte, 5))), "", NoName},
	{"DATA", h2conn(h2settings, h2frame(h2Data, 0, 1, []byte("x"))), "", NoName},
	{"RST_STREAM", h2conn(h2settings, h2frame(h2RSTStream, 0, 1, make([]byte, 4))), "", NoName},
	{"PUSH_PROMISE", h2conn(h2settings, h2frame(h2PushPromise, 0, 1, make([]byte, 4))), "", NoName},
	{"GOAWAY", h2conn(h2settings, h2frame(h2GoAway, 0, 0, make([]byte, 8))), "", NoName},
	{"CONTINUATION without HEADERS", h2conn(h2settings, h2frame(h2Continuation, h2FlagEndHeaders, 1, request(":authority", "a.example"))), "", NoName},
	{"HEADERS on stream 0", h2conn(h2settings, h2frame(h2Headers, h2FlagEndHeaders, 0, request(":authority", "a.example"))), "", NoName},
	{"HEADERS on stream 2", h2conn(h2settings, h2frame(h2Headers, h2FlagEndHeaders, 2, request(":authority", "a.example"))), "", NoName},
	{"padding past the payload", h2conn(h2settings, h2frame(h2Headers, h2FlagEndHeaders|h2FlagPadded, 1, append([]byte{200}, request(":authority", "a.example")...))), "", NoName},
	{"PADDED without payload", h2conn(h2settings, h2frame(h2Headers, h2FlagEndHeaders|h2FlagPadded, 1, nil)), "", NoName},
	{"PRIORITY flag without room", h2conn(h2settings, h2frame(h2Headers, h2FlagEndHeaders|h2FlagPriority, 1, []byte{0, 0, 0})), "", NoName},
	{"padding eats the priority", h2conn(h2settings, h2frame(h2Headers, h2FlagEndHeaders|h2FlagPriority|h2FlagPadded, 1, []byte{1, 0, 0, 0, 0})), "", NoName},
	{"stream depends on itself", h2conn(h2settings, h2frame(h2Headers, h2FlagEndHeaders|h2FlagPriority, 1,
		append([]byte{0, 0, 0, 1, 16}, request(":authority", "a.example")...))), "", NoName},
	{"PING inside the block", h2conn(h2settings,
		h2frame(h2Headers, 0, 1, request(":authority", "a.example")),
		h2frame(h2Ping, 0, 0, make([]byte, 8))), "", NoName},
	{"CONTINUATION of another stream", h2conn(h2settings,
		h2frame(h2Headers, 0, 1, request(":authority", "a.example")),
		h2frame(h2Continuation, h2FlagEndHeaders, 3, nil)), "", NoName},
	{"HEADERS inside the block", h2conn(h2settings,
		h2frame(h2Headers, 0, 1, request(":authority", "a.example")),
		h2frame(h2Headers, h2FlagEndHeaders, 1, nil)), "", NoName},
	{"HEADERS of 16 MiB", h2conn(h2settings, []byte{0xff, 0xff, 0xff, h2Headers, h2FlagEndHeaders, 0, 0, 0, 1}), "", NoName},
	{"unknown frame of 64 KiB", h2conn(h2settings, []byte{0x01, 0, 0, 0xfa, 0, 0, 0, 0, 0}), "", NoName},

	// HPACK errors (RFC 7541) and bounds.
	{"block ends inside a field", h2conn(h2settings, h2headers(rawRequest(literalIndexed(staticAuthority, "a.example"), literal("x-a", "bbbb")[:4]))), "", NoName},
	{"index 0", h2conn(h2settings, h2headers(rawRequest([]byte{0x80}))), "", NoName},
	{"index past the static table", h2conn(h2settings, h2headers(rawRequest([]byte{0x80 | 62}))), "", NoName},
	{"name index past the static table", h2conn(h2settings, h2headers(rawRequest(literalIndexed(62, "a.example")))), "", NoName},
	{"table size update over 4096", h2conn(h2settings, h2headers(append(hpackInt(0x20, 5, 4097), request(":authority", "a.example")...))), "", NoName},
	{"table size update after a field", h2conn(h2settings, h2headers(rawRequest(literalIndexed(staticAuthority, "a.example"), []byte{0x20}))), "", NoName},
	{"Huffman EOS", h2conn(h2settings, h2headers(rawRequest(hpackHuffman(staticAuthority, []byte{0xff, 0xff, 0xff, 0xff})))), "", NoName},
	{"Huffman padding not ones", h2conn(h2settings, h2headers(rawRequest(hpackHuffman(staticAuthority, []byte{0x00})))), "", NoName},
	{"string over the limit", h2conn(h2settings, h2headers(rawRequest(
		literalIndexed(staticAuthority, "a.example"), literal("x-big", strings.Repeat("b", maxH2CString+1))))), "", NoName},
	{"string at the limit", h2conn(h2settings, h2headers(rawRequest(
		literalIndexed(staticAuthority, "a.example"), literal("x-big", strings.Repeat("b", maxH2CString))))), "a.example", Found},
	{"Huffman string over the limit", h2conn(h2settings, h2headers(rawRequest(
		literalIndexed(staticAuthority, "a.example"),
		hpackHuffman(staticPath, hpack.AppendHuffmanString(nil, strings.Repeat("0", maxH2CString+1)))))), "", NoName},
	{"fields at the limit", h2conn(h2settings, h2headers(manyFields(maxH2CFields))), "a.example", Found},
	{"fields over the limit", h2conn(h2settings, h2headers(manyFields(maxH2CFields+1))), "", NoName},
	{"many small fields", h2conn(h2settings, h2headers(rawRequest(
		literalIndexed(staticAuthority, "a.example"), bytes.Repeat([]byte{0x80 | staticAccept}, 16000)))), "", NoName},
	{"long port", h2conn(h2settings, h2headers(request(":authority", "a.example:"+strings.Repeat("0", 300)+"80"))), "a.example", Found},
}

func TestSniffH2C(t *testing.T) {
	for _, c := range h2cCases {
		t.Run(c.label, func(t *testing.T) {
			in := bytes.Clone(c.data)
			name, got := sniffH2C(c.data)
			if got != c.want || name != c.name {
				t.Errorf("sniffH2C = %q, %v; want %q, %v", name, got, c.name, c.want)
			}
			if !bytes.Equal(in, c.data) {
				t.Errorf("sniffH2C modified its input")
			}
			checkSniffer(t, sniffH2C, c.data)
			if c.want == Found {
				checkH2CPrefixes(t, c.data)
			}
		})
	}
}

// checkH2CPrefixes asserts that every proper prefix of data needs more.
func checkH2CPrefixes(t *testing.T, data []byte) {
	t.Helper()
	for n := range len(data) {
		if name, got := sniffH2C(data[:n]); got != NeedMore {
			t.Errorf("prefix of %d/%d bytes gives %q, %v; want need more", n, len(data), name, got)
			return
		}
	}
}

// The header block split into HEADERS and CONTINUATION frames at every
// pair of byte boundaries decodes the same: fields, strings and integers
// cut anywhere.
func TestSniffH2CContinuationSplits(t *testing.T) {
	block := request(":authority", "shop.example.com:8080", "user-agent", "curl/7.88.1", "accept", "*/*")
	for i := 0; i <= len(block); i++ {
		for j := i; j <= len(block); j++ {
			data := h2conn(h2settings,
				h2frame(h2Headers, 0, 1, block[:i]),
				h2frame(h2Continuation, 0, 1, block[i:j]),
				h2frame(h2Continuation, h2FlagEndHeaders, 1, block[j:]))
			if name, got := sniffH2C(data); got != Found || name != "shop.example.com" {
				t.Fatalf("split at %d and %d of %d: %q, %v", i, j, len(block), name, got)
			}
		}
	}
	frames := [][]byte{h2settings, h2frame(h2Headers, 0, 1, block[:1])}
	for k := 1; k < len(block); k++ {
		frames = append(frames, h2frame(h2Continuation, 0, 1, block[k:k+1]))
	}
	frames[len(frames)-1][4] = h2FlagEndHeaders
	data := h2conn(frames...)
	if name, got := sniffH2C(data); got != Found || name != "shop.example.com" {
		t.Fatalf("a CONTINUATION per byte: %q, %v", name, got)
	}
	checkH2CPrefixes(t, data)
}

// h2Fill is literal fields of exactly n bytes (n >= 263).
func h2Fill(n int) []byte {
	var out []byte
	for n > 0 {
		size := n
		switch {
		case n > 16000:
			size = 8000
		case n > 8000:
			size = n / 2
		}
		// 0, name length, "x-f", 3 bytes of value length, value.
		f := literal("x-f", strings.Repeat("f", size-8))
		if len(f) != size {
			panic(fmt.Sprintf("filler of %d bytes is %d", size, len(f)))
		}
		out = append(out, f...)
		n -= size
	}
	return out
}

func TestSniffH2CLimit(t *testing.T) {
	head := h2conn(h2settings)
	base := rawRequest(literalIndexed(staticAuthority, "a.example"))
	exact := func(total int) []byte {
		block := append(bytes.Clone(base), h2Fill(total-len(head)-h2FrameHeader-len(base))...)
		return append(bytes.Clone(head), h2headers(block)...)
	}
	atLimit, over := exact(maxH2C), exact(maxH2C+1)
	if len(atLimit) != maxH2C || len(over) != maxH2C+1 {
		t.Fatalf("built %d and %d bytes", len(atLimit), len(over))
	}
	for _, c := range []struct {
		label string
		data  []byte
		name  string
		want  Sniff
	}{
		{"block ending at the limit", atLimit, "a.example", Found},
		{"all but its last byte", atLimit[:maxH2C-1], "", NeedMore},
		{"block ending one byte past the limit", over, "", NoName},
		{"the same cut at the limit", over[:maxH2C], "", NoName},
		{"only its frame header", over[:len(head)+h2FrameHeader], "", NoName},
		{"frame header ending at the limit", h2conn(h2settings, h2frame(0xfa, 0, 0, make([]byte, maxH2C-len(head)-2*h2FrameHeader))), "", NeedMore},
		{"frame header past the limit", h2conn(h2settings, h2frame(0xfa, 0, 0, make([]byte, maxH2C-len(head)-2*h2FrameHeader+1))), "", NoName},
	} {
		if name, got := sniffH2C(c.data); got != c.want || name != c.name {
			t.Errorf("%s: sniffH2C = %q, %v; want %q, %v", c.label, name, got, c.name, c.want)
		}
	}
	if host, _ := goServerHost(t, atLimit); host != "a.example" {
		t.Errorf("Go's server sees Host %q in the block ending at the limit", host)
	}
}

// Captured from real clients (see testdata/h2c/README).
var h2cCaptures = map[string]string{
	"curl.bin":                "shop.example.com",
	"curl-ip.bin":             "", // :authority 127.0.0.1:PORT
	"nghttp.bin":              "shop.example.com",
	"nghttp-ip.bin":           "",
	"nghttp-nodep.bin":        "shop.example.com",
	"nghttp-padded.bin":       "shop.example.com",
	"nghttp-continuation.bin": "shop.example.com",
	"nghttp-tablesize0.bin":   "shop.example.com",
}

func readH2C(tb testing.TB, file string) []byte {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "h2c", file))
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

func TestSniffH2CCaptures(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "h2c", "*.bin"))
	if len(files) != len(h2cCaptures) {
		t.Errorf("testdata has %d captures, the test knows %d", len(files), len(h2cCaptures))
	}
	for file, name := range h2cCaptures {
		t.Run(file, func(t *testing.T) {
			data := readH2C(t, file)
			if got, r := sniffH2C(data); got != name || r != wantOf(name) {
				t.Errorf("sniffH2C = %q, %v; want %q, %v", got, r, name, wantOf(name))
			}
			checkSniffer(t, sniffH2C, data)
			checkH2CPrefixes(t, data)
		})
	}
}

// Go's own HTTP/2 server, served the same bytes, sees the same host in
// every case that sniffH2C finds one: the cases test the protocol, not
// this parser's reading of it.
func TestSniffH2CGoServer(t *testing.T) {
	type input struct {
		label string
		data  []byte
		name  string
	}
	var inputs []input
	for _, c := range h2cCases {
		if c.want == Found {
			inputs = append(inputs, input{c.label, c.data, c.name})
		}
	}
	for file, name := range h2cCaptures {
		if name != "" {
			inputs = append(inputs, input{file, readH2C(t, file), name})
		}
	}
	for _, in := range inputs {
		t.Run(in.label, func(t *testing.T) {
			host, ok := goServerHost(t, in.data)
			if !ok {
				t.Fatalf("Go's server closes the connection; sniffH2C finds %q", in.name)
			}
			var buf [253]byte
			n, ok := normalizeHost(host, &buf)
			if !ok || string(buf[:n]) != in.name {
				t.Errorf("Go's server sees Host %q; sniffH2C finds %q", host, in.name)
			}
		})
	}
}

// goServerHost serves data over a pipe to a net/http server that speaks
// HTTP/2 with prior knowledge and returns the Host of the request its
// handler gets, or ok false if the server closes the connection first.
func goServerHost(t *testing.T, data []byte) (host string, ok bool) {
	t.Helper()
	client, server := net.Pipe()
	hosts := make(chan string, 1)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case hosts <- r.Host:
			default:
			}
		}),
		Protocols: new(http.Protocols),
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	srv.Protocols.SetUnencryptedHTTP2(true)
	ln := &oneConnListener{conn: server, closed: make(chan struct{})}
	go srv.Serve(ln)
	defer srv.Close()
	defer client.Close()
	closed := make(chan struct{})
	go func() {
		io.Copy(io.Discard, client) // the server's frames, until it closes
		close(closed)
	}()
	go client.Write(data)
	select {
	case host := <-hosts:
		return host, true
	case <-closed:
		select {
		case host := <-hosts:
			return host, true
		default:
			return "", false
		}
	case <-time.After(time.Minute):
		t.Fatal("Go's HTTP/2 server neither served a request nor closed the connection within a minute")
		return "", false
	}
}

// oneConnListener hands out one connection, then blocks until closed.
type oneConnListener struct {
	conn   net.Conn
	once   sync.Once
	closed chan struct{}
	done   sync.Once
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	var c net.Conn
	l.once.Do(func() { c = l.conn })
	if c != nil {
		return c, nil
	}
	<-l.closed
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.done.Do(func() { close(l.closed) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.conn.LocalAddr() }

// The seed corpus of FuzzSniffH2C is the captures, in the fuzzer's file
// format.
func TestSniffH2CCorpus(t *testing.T) {
	for file := range h2cCaptures {
		seed := filepath.Join("testdata", "fuzz", "FuzzSniffH2C", strings.TrimSuffix(file, ".bin"))
		text, err := os.ReadFile(seed)
		if err != nil {
			t.Error(err)
			continue
		}
		want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", readH2C(t, file))
		if string(text) != want {
			t.Errorf("%s is not testdata/h2c/%s", seed, file)
		}
	}
}

func FuzzSniffH2C(f *testing.F) {
	for _, c := range h2cCases {
		// The fuzzer minimizes every input that finds new coverage, up to
		// a minute each for the large ones; those test the limits, which
		// the table test covers.
		if len(c.data) <= 4<<10 {
			f.Add(c.data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in := bytes.Clone(data)
		checkSniffer(t, sniffH2C, data)
		if !bytes.Equal(in, data) {
			t.Fatal("sniffH2C modified its input")
		}
	})
}

func BenchmarkSniffH2C(b *testing.B) {
	// A block that is all one-byte references to a 4 KiB entry.
	bomb := append(indexedNew("x-a", strings.Repeat("b", 4000)), bytes.Repeat([]byte{0x80 | 62}, 60000)...)
	// A 6000-byte value in one-byte CONTINUATION frames, which hpack
	// buffers again on every frame.
	long := rawRequest(literalIndexed(staticAuthority, "a.example"), literal("x-long", strings.Repeat("l", 6000)))
	trickle := [][]byte{h2settings, h2frame(h2Headers, 0, 1, long[:1])}
	for k := 1; k < len(long); k++ {
		trickle = append(trickle, h2frame(h2Continuation, 0, 1, long[k:k+1]))
	}
	trickle[len(trickle)-1][4] = h2FlagEndHeaders
	for _, bc := range []struct {
		label string
		data  []byte
		want  Sniff
	}{
		{"curl", readH2C(b, "curl.bin"), Found},
		{"nghttp", readH2C(b, "nghttp.bin"), Found},
		{"nghttp-continuation", readH2C(b, "nghttp-continuation.bin"), Found},
		{"header-list-bomb", h2conn(h2settings, h2headers(rawRequest(literalIndexed(staticAuthority, "a.example"), bomb))), NoName},
		{"small-fields", h2conn(h2settings, h2headers(rawRequest(literalIndexed(staticAuthority, "a.example"), bytes.Repeat([]byte{0x80 | staticAccept}, 65000)))), NoName},
		{"evictions", h2conn(h2settings, h2headers(rawRequest(literalIndexed(staticAuthority, "a.example"), bytes.Repeat(indexedNew("x", ""), 16000)))), NoName},
		{"huffman-max-string", h2conn(h2settings, h2headers(rawRequest(literalIndexed(staticAuthority, "a.example"),
			hpackHuffman(staticPath, hpack.AppendHuffmanString(nil, strings.Repeat("0", maxH2CString)))))), Found},
		{"one-byte-continuations", h2conn(trickle...), Found},
	} {
		if len(bc.data) > maxH2C {
			b.Fatalf("%s: %d bytes", bc.label, len(bc.data))
		}
		b.Run(bc.label, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.data)))
			for b.Loop() {
				if _, r := sniffH2C(bc.data); r != bc.want {
					b.Fatal(r)
				}
			}
		})
	}
}
