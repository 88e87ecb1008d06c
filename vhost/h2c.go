package vhost

import (
	"encoding/binary"

	"golang.org/x/net/http2/hpack"
)

// h2cPreface is the client connection preface of HTTP/2 (RFC 9113 §3.4).
const h2cPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

const (
	// maxH2C bounds the bytes from the preface to the end of the first
	// header block, like maxHTTPHead for HTTP/1.x: a frame that would end
	// past it gives NoName at once.
	maxH2C = 64 << 10
	// maxH2CString bounds a decoded field name or value (after Huffman
	// decoding, which expands by up to 8/5). nginx and Apache refuse fields
	// over 8 KiB (large_client_header_buffers, LimitRequestFieldSize);
	// nghttp's CONTINUATION test sends 4 KiB values.
	maxH2CString = 16 << 10
	// maxH2CFields bounds the fields of the header block, ten times what
	// Apache (LimitRequestFields) and nghttpx accept by default. Decoding
	// costs per field, not per byte: a one-byte reference to a dynamic
	// table entry emits up to 4 KiB, and every insertion into a full table
	// makes hpack shift the whole table.
	maxH2CFields = 1000
	// h2cChunk is how much of a header block the decoder gets at a time,
	// so that decoding stops soon after the fields overflow.
	h2cChunk = 1 << 10
	// h2cTableSize is the dynamic table size a client may assume before it
	// has read the server's SETTINGS (RFC 9113 §6.5.2). A client that
	// waited for a larger SETTINGS_HEADER_TABLE_SIZE and enlarges its
	// table in the first block gets NoName; keeping the table small also
	// keeps hpack's evictions (which shift the whole table) cheap.
	h2cTableSize = 4096
)

// HTTP/2 frame types and flags (RFC 9113 §6).
const (
	h2Data         = 0x0
	h2Headers      = 0x1
	h2Priority     = 0x2
	h2RSTStream    = 0x3
	h2Settings     = 0x4
	h2PushPromise  = 0x5
	h2Ping         = 0x6
	h2GoAway       = 0x7
	h2WindowUpdate = 0x8
	h2Continuation = 0x9

	h2FlagAck        = 0x1 // SETTINGS, PING
	h2FlagEndHeaders = 0x4
	h2FlagPadded     = 0x8
	h2FlagPriority   = 0x20

	h2FrameHeader = 9
)

// sniffH2C parses the start of an HTTP/2 connection with prior knowledge
// (RFC 9113 §3.3): the preface, a SETTINGS frame, then any SETTINGS,
// WINDOW_UPDATE, PING, PRIORITY and unknown frames up to the first HEADERS
// frame, whose header block (with its CONTINUATION frames, padding and
// priority fields taken off) it decodes with HPACK (RFC 7541). The name is
// :authority, or the host field when :authority is absent or empty,
// normalised as an HTTP Host. It answers only once the whole block is
// there, so more bytes never change an answer. NoName: a frame sequence a
// server refuses as a connection error, a block that would end past
// maxH2C bytes, an HPACK error, a string over maxH2CString, more than
// maxH2CFields fields, pseudo-header fields after regular ones, two
// :authority or two host fields, an authority with userinfo (RFC 9113
// §8.3.1) or an IP literal.
//
// Unlike the other sniffers it allocates while decoding: hpack's decoder
// and the strings of literal fields, bounded by the limits above.
func sniffH2C(data []byte) (string, Sniff) {
	n := min(len(data), len(h2cPreface))
	if string(data[:n]) != h2cPreface[:n] {
		return "", NoName
	}
	if n < len(h2cPreface) {
		return "", NeedMore
	}
	// First pass: walk the frames without decoding until the header block
	// is complete, so that a connection whose bytes trickle in is decoded
	// once.
	var (
		pos      = len(h2cPreface)
		first    = true
		stream   uint32 // of the HEADERS frame, once seen
		fragment []byte // of the HEADERS frame
		next     int    // offset of the frame after HEADERS
	)
	for {
		if pos+h2FrameHeader > maxH2C {
			return "", NoName
		}
		if pos+h2FrameHeader > len(data) {
			return "", NeedMore
		}
		h := data[pos : pos+h2FrameHeader]
		length := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
		typ, flags := h[3], h[4]
		id := binary.BigEndian.Uint32(h[5:]) &^ (1 << 31) // the reserved bit is ignored
		end := pos + h2FrameHeader + length
		if end > maxH2C {
			return "", NoName
		}
		if !h2FrameAllowed(typ, flags, id, length, first, stream) {
			return "", NoName
		}
		if end > len(data) {
			return "", NeedMore
		}
		payload := data[pos+h2FrameHeader : end]
		pos, first = end, false
		switch typ {
		case h2WindowUpdate:
			if binary.BigEndian.Uint32(payload)&^(1<<31) == 0 {
				return "", NoName // a zero increment (RFC 9113 §6.9)
			}
		case h2Headers:
			var ok bool
			if fragment, ok = h2HeadersFragment(payload, flags, id); !ok {
				return "", NoName
			}
			stream, next = id, end
		}
		if (typ == h2Headers || typ == h2Continuation) && flags&h2FlagEndHeaders != 0 {
			break
		}
	}

	var f h2cFields
	dec := hpack.NewDecoder(h2cTableSize, f.add)
	dec.SetMaxStringLength(maxH2CString)
	if !f.decode(dec, fragment) {
		return "", NoName
	}
	// The frames after HEADERS, up to the one with END_HEADERS, are its
	// CONTINUATION frames: the first pass checked that.
	for p := next; p < pos; {
		length := int(data[p])<<16 | int(data[p+1])<<8 | int(data[p+2])
		p += h2FrameHeader + length
		if !f.decode(dec, data[p-length:p]) {
			return "", NoName
		}
	}
	if dec.Close() != nil {
		return "", NoName // the block ends inside a field
	}
	return f.name()
}

// h2FrameAllowed reports whether a frame with this header may come at this
// point of a connection that has not yet sent a request: first is true for
// the frame after the preface, stream is that of a HEADERS frame whose
// block is not complete yet, or 0. A frame refused here is one Go's server
// treats as a connection error (RFC 9113 §3.4, §5.1, §6): a first frame
// other than SETTINGS, frames of the wrong size or stream, and DATA,
// RST_STREAM and others on an idle stream. (nginx is laxer: it takes any
// first frame and skips DATA for unknown streams. No real client sends
// those.)
func h2FrameAllowed(typ, flags byte, id uint32, length int, first bool, stream uint32) bool {
	switch {
	case first && typ != h2Settings:
		return false
	case stream != 0:
		return typ == h2Continuation && id == stream
	}
	switch typ {
	case h2Settings:
		if flags&h2FlagAck != 0 {
			return id == 0 && length == 0
		}
		return id == 0 && length%6 == 0
	case h2WindowUpdate:
		// Every stream is idle yet, so only the connection's window.
		return id == 0 && length == 4
	case h2Ping:
		return id == 0 && length == 8
	case h2Priority:
		// RFC 9113 §6.3 makes a wrong length a stream error, but Go's and
		// nginx's servers close the connection.
		return id != 0 && length == 5
	case h2Headers:
		return id%2 == 1 // client-initiated streams are odd
	case h2Data, h2RSTStream, h2PushPromise, h2GoAway, h2Continuation:
		return false
	}
	return true // unknown and extension frames are ignored (RFC 9113 §5.5)
}

// h2HeadersFragment returns the header block fragment of a HEADERS frame's
// payload (RFC 9113 §6.2), or ok false if its padding or priority fields do
// not fit or the stream depends on itself.
func h2HeadersFragment(payload []byte, flags byte, id uint32) (fragment []byte, ok bool) {
	pad := 0
	if flags&h2FlagPadded != 0 {
		if len(payload) < 1 {
			return nil, false
		}
		pad, payload = int(payload[0]), payload[1:]
	}
	if flags&h2FlagPriority != 0 {
		if len(payload) < 5 || binary.BigEndian.Uint32(payload)&^(1<<31) == id {
			return nil, false
		}
		payload = payload[5:]
	}
	if pad > len(payload) {
		return nil, false
	}
	return payload[:len(payload)-pad], true
}

// h2cFields collects what sniffH2C needs from the decoded fields of a
// header block.
type h2cFields struct {
	authority, host    string
	authorities, hosts int  // how many of each
	regular            bool // a regular field was seen
	bad                bool
	fields             int
}

// add is the decoder's emit function.
func (f *h2cFields) add(hf hpack.HeaderField) {
	if f.fields++; f.fields > maxH2CFields {
		f.bad = true
	}
	if hf.IsPseudo() {
		if f.regular {
			f.bad = true // RFC 9113 §8.3: pseudo-header fields come first
		}
		if hf.Name == ":authority" {
			f.authority = hf.Value
			f.authorities++
		}
		return
	}
	f.regular = true
	if hf.Name == "host" {
		f.host = hf.Value
		f.hosts++
	}
}

// decode feeds a fragment to dec in chunks and reports whether the fields
// so far are acceptable.
func (f *h2cFields) decode(dec *hpack.Decoder, fragment []byte) bool {
	for len(fragment) > 0 && !f.bad {
		k := min(len(fragment), h2cChunk)
		if _, err := dec.Write(fragment[:k]); err != nil {
			return false
		}
		fragment = fragment[k:]
	}
	return !f.bad
}

// name picks the name: :authority wins over host, as an absolute-form
// target does over Host in HTTP/1.1 and as Go's server does. RFC 9113
// §8.3.1 lets a server refuse a host that differs; one that does refuses
// the request anyway.
func (f *h2cFields) name() (string, Sniff) {
	if f.authorities > 1 || f.hosts > 1 {
		return "", NoName
	}
	// An empty :authority counts as none, as in Go's server, which then
	// takes host.
	hp := f.host
	switch {
	case f.authority != "":
		hp = f.authority
	case f.hosts == 0:
		return "", NoName
	}
	// Copied to the stack for hostPort, which takes bytes. Anything longer
	// than a name of 253, its trailing dot and a long port is no name.
	var raw [512]byte
	if len(hp) > len(raw) {
		return "", NoName
	}
	var buf [253]byte
	n, ok := hostPort(raw[:copy(raw[:], hp)], &buf)
	if !ok {
		return "", NoName
	}
	return string(buf[:n]), Found
}
