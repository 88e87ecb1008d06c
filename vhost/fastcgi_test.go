package vhost

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// FastCGI records built by hand cover what nginx and Apache never send:
// small and padded records, multiplexing, long length forms, bad input.

// fcgiRec is one record of type typ for request id with pad bytes of
// padding.
func fcgiRec(typ byte, id int, content []byte, pad int) []byte {
	n := len(content)
	b := []byte{fcgiVersion1, typ, byte(id >> 8), byte(id), byte(n >> 8), byte(n), byte(pad), 0}
	b = append(b, content...)
	return append(b, make([]byte, pad)...)
}

// fcgiBegin is the FCGI_BEGIN_REQUEST record of a responder.
func fcgiBegin(id int) []byte {
	return fcgiRec(fcgiBeginRequest, id, []byte{0, fcgiResponder, 0, 0, 0, 0, 0, 0}, 0)
}

// fcgiLen is a name or value length: one byte below 128 unless long, else
// four.
func fcgiLen(n int, long bool) []byte {
	if n < 128 && !long {
		return []byte{byte(n)}
	}
	return []byte{byte(n>>24) | 0x80, byte(n >> 16), byte(n >> 8), byte(n)}
}

// fcgiPairs encodes "NAME=value" pairs; "4:NAME=value" gives both lengths
// in the four-byte form.
func fcgiPairs(kv ...string) []byte {
	var b []byte
	for _, s := range kv {
		s, long := strings.CutPrefix(s, "4:")
		name, value, _ := strings.Cut(s, "=")
		b = append(b, fcgiLen(len(name), long)...)
		b = append(b, fcgiLen(len(value), long)...)
		b = append(b, name...)
		b = append(b, value...)
	}
	return b
}

// fcgiParamsRecs cuts a params stream of request id into FCGI_PARAMS
// records of at most size bytes, each with pad bytes of padding.
func fcgiParamsRecs(id int, params []byte, size, pad int) []byte {
	var b []byte
	for len(params) > 0 {
		k := min(size, len(params))
		b = append(b, fcgiRec(fcgiParams, id, params[:k], pad)...)
		params = params[k:]
	}
	return b
}

// fcgiEnd is the empty FCGI_PARAMS record that ends the params of id.
func fcgiEnd(id int) []byte { return fcgiRec(fcgiParams, id, nil, 0) }

// fcgiReq is a whole request head of id 1: the params in one record, the
// end of the params.
func fcgiReq(kv ...string) []byte {
	return cat(fcgiBegin(1), fcgiRec(fcgiParams, 1, fcgiPairs(kv...), 0), fcgiEnd(1))
}

// fcgiOpen is fcgiReq without the end of the params.
func fcgiOpen(kv ...string) []byte {
	return cat(fcgiBegin(1), fcgiRec(fcgiParams, 1, fcgiPairs(kv...), 0))
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// fcgiStream splits data the way the common case is laid out: a
// FCGI_BEGIN_REQUEST record, then complete FCGI_PARAMS records of its
// request, up to the empty one if ended, then rest. ok is false for
// anything else.
func fcgiStream(data []byte) (begin, params []byte, ended bool, rest []byte, ok bool) {
	if len(data) < fcgiHeaderLen || data[0] != fcgiVersion1 || data[1] != fcgiBeginRequest {
		return
	}
	recLen := func(h []byte) int { return fcgiHeaderLen + (int(h[4])<<8 | int(h[5])) + int(h[6]) }
	if len(data) < recLen(data) {
		return
	}
	begin, rest = data[:recLen(data)], data[recLen(data):]
	params = []byte{}
	for !ended && len(rest) > 0 {
		if len(rest) < fcgiHeaderLen || rest[0] != fcgiVersion1 || rest[1] != fcgiParams ||
			rest[2] != begin[2] || rest[3] != begin[3] || len(rest) < recLen(rest) {
			return nil, nil, false, nil, false
		}
		n := int(rest[4])<<8 | int(rest[5])
		params = append(params, rest[fcgiHeaderLen:fcgiHeaderLen+n]...)
		ended = n == 0
		rest = rest[recLen(rest):]
	}
	return begin, params, ended, rest, true
}

// fcgiReframe is data with its params cut into records of size bytes with
// pad bytes of padding each; data must be laid out as fcgiStream wants.
func fcgiReframe(tb testing.TB, data []byte, size, pad int) []byte {
	tb.Helper()
	begin, params, ended, rest, ok := fcgiStream(data)
	if !ok {
		tb.Fatalf("not a FastCGI request head: % x...", data[:min(len(data), 16)])
	}
	b := cat(begin, fcgiParamsRecs(int(begin[2])<<8|int(begin[3]), params, size, pad))
	if ended {
		b = cat(b, fcgiEnd(int(begin[2])<<8|int(begin[3])))
	}
	return cat(b, rest)
}

// sniffFCGI is sniffFastCGI without alt, as SniffName answers.
func sniffFCGI(data []byte) (string, Sniff) {
	name, _, r := sniffFastCGI(data)
	return name, r
}

func checkFastCGI(t *testing.T, label string, data []byte, wantName string, want Sniff) {
	t.Helper()
	if name, got := sniffFCGI(data); got != want || name != wantName {
		t.Errorf("%s: sniffFastCGI = %q, %v; want %q, %v", label, name, got, wantName, want)
	}
}

// checkFastCGIArrival feeds data a byte at a time, as segments may split
// it anywhere: the answer is need more until some prefix decides, and from
// there on the answer for all of data.
func checkFastCGIArrival(t *testing.T, label string, data []byte, wantName string, want Sniff) {
	t.Helper()
	decided := false
	for n := 0; n <= len(data); n++ {
		name, got := sniffFCGI(data[:n])
		if got == NeedMore && !decided {
			continue
		}
		if got != want || name != wantName {
			t.Errorf("%s: %d/%d bytes give %q, %v; want %q, %v", label, n, len(data), name, got, wantName, want)
			return
		}
		decided = true
	}
}

// fcgiAnother is what may follow a decided request: the stdin, another
// request on the same connection, asking for another name.
var fcgiAnother = cat(fcgiRec(fcgiStdin, 1, nil, 0), fcgiReq("HTTP_HOST=other.example"))

// name253 is a name of the longest length, 253.
var name253 = strings.Repeat("abcdefg.", 30) + "abcde.example"

var fastCGICases = []struct {
	label string
	data  []byte
	name  string
	want  Sniff
}{
	// HTTP_HOST, as an HTTP Host.
	{"HTTP_HOST", fcgiReq("HTTP_HOST=shop.example.com"), "shop.example.com", Found},
	{"HTTP_HOST with a port", fcgiReq("HTTP_HOST=shop.example.com:8080"), "shop.example.com", Found},
	{"HTTP_HOST empty port", fcgiReq("HTTP_HOST=shop.example.com:"), "shop.example.com", Found},
	{"HTTP_HOST case and dot", fcgiReq("HTTP_HOST=Shop.Example.COM.:80"), "shop.example.com", Found},
	{"HTTP_HOST of 253", fcgiReq("HTTP_HOST=" + name253), name253, Found},
	{"HTTP_HOST longest value", fcgiReq("HTTP_HOST=" + strings.ToUpper(name253) + ".:65535"), name253, Found},
	{"HTTP_HOST wins over SERVER_NAME before", fcgiReq("SERVER_NAME=a.example", "HTTP_HOST=b.example"), "b.example", Found},
	{"HTTP_HOST wins over SERVER_NAME after", fcgiReq("HTTP_HOST=b.example", "SERVER_NAME=a.example"), "b.example", Found},
	{"HTTP_HOST decides before the end", fcgiOpen("A=1", "HTTP_HOST=b.example"), "b.example", Found},
	{"HTTP_HOST among others", fcgiReq("QUERY_STRING=", "REQUEST_METHOD=GET", "HTTP_HOST=b.example", "HTTP_ACCEPT=*/*"), "b.example", Found},
	{"HTTP_HOST first of two", fcgiOpen("HTTP_HOST=a.example", "HTTP_HOST=b.example"), "a.example", Found},
	// An HTTP_HOST that is no name leaves the decision to SERVER_NAME.
	{"HTTP_HOST IPv4, SERVER_NAME after it", fcgiReq("HTTP_HOST=192.0.2.1:80", "SERVER_NAME=a.example"), "a.example", Found},
	{"HTTP_HOST IPv4, SERVER_NAME before it", fcgiReq("SERVER_NAME=a.example", "HTTP_HOST=192.0.2.1:80"), "a.example", Found},
	{"HTTP_HOST IPv4, then a valid one", fcgiReq("HTTP_HOST=192.0.2.1", "HTTP_HOST=b.example", "SERVER_NAME=a.example"), "a.example", Found},
	{"HTTP_HOST IPv6", fcgiReq("HTTP_HOST=[::1]:80"), "", NoName},
	{"HTTP_HOST numeric label", fcgiReq("HTTP_HOST=example.123"), "", NoName},
	{"HTTP_HOST empty", fcgiReq("HTTP_HOST=", "SERVER_NAME=a.example"), "a.example", Found},
	{"HTTP_HOST bad port", fcgiReq("HTTP_HOST=a.example:8x"), "", NoName},
	{"HTTP_HOST two colons", fcgiReq("HTTP_HOST=a.example:1:2"), "", NoName},
	{"HTTP_HOST space", fcgiReq("HTTP_HOST=a example"), "", NoName},
	{"HTTP_HOST NUL", fcgiReq("HTTP_HOST=a.example\x00.evil"), "", NoName},
	{"HTTP_HOST empty label", fcgiReq("HTTP_HOST=a..example"), "", NoName},
	{"HTTP_HOST too long", fcgiReq("HTTP_HOST=" + strings.Repeat("a.", 127) + "ab"), "", NoName},
	{"HTTP_HOST value over 260", fcgiReq("HTTP_HOST=a.example:" + strings.Repeat("0", 252)), "", NoName},
	{"HTTP_HOST value over 260, SERVER_NAME", fcgiReq("HTTP_HOST=a.example:"+strings.Repeat("0", 252), "SERVER_NAME=a.example"), "a.example", Found},
	{"http_host is another name", fcgiReq("http_host=a.example"), "", NoName},

	// SERVER_NAME once the params ended without HTTP_HOST.
	{"SERVER_NAME", fcgiReq("SERVER_NAME=a.example"), "a.example", Found},
	{"SERVER_NAME with a port", fcgiReq("SERVER_NAME=A.Example.:8080"), "a.example", Found},
	{"SERVER_NAME last of two", fcgiReq("SERVER_NAME=a.example", "SERVER_NAME=b.example"), "b.example", Found},
	{"SERVER_NAME invalid then valid", fcgiReq("SERVER_NAME=192.0.2.1", "SERVER_NAME=b.example"), "b.example", Found},
	{"SERVER_NAME valid then invalid", fcgiReq("SERVER_NAME=a.example", "SERVER_NAME=192.0.2.1"), "", NoName},
	{"SERVER_NAME valid then too long", fcgiReq("SERVER_NAME=a.example", "SERVER_NAME="+strings.Repeat("a", 300)), "", NoName},
	{"SERVER_NAME IP", fcgiReq("SERVER_NAME=192.0.2.1"), "", NoName},
	{"SERVER_NAME empty", fcgiReq("SERVER_NAME="), "", NoName},
	{"SERVER_NAME open", fcgiOpen("SERVER_NAME=a.example"), "", NeedMore},
	{"no name", fcgiReq("REQUEST_METHOD=GET", "SCRIPT_NAME=/x.php"), "", NoName},
	{"no params", cat(fcgiBegin(1), fcgiEnd(1)), "", NoName},
	{"near names", fcgiReq("HTTP_HOS=a.example", "HTTP_HOSTS=a.example", "SERVER_NAMES=a.example", "SERVER_NAMX=a.example", "HTTP_HOSX=a.example"), "", NoName},
	{"empty pairs", fcgiReq("=", "=", "SERVER_NAME=a.example", "="), "a.example", Found},

	// Name and value lengths, 1- and 4-byte forms.
	{"4-byte lengths", fcgiReq("4:HTTP_HOST=a.example"), "a.example", Found},
	{"4-byte SERVER_NAME", fcgiReq("4:SERVER_NAME=a.example"), "a.example", Found},
	{"4-byte name only", cat(fcgiBegin(1), fcgiRec(fcgiParams, 1, cat(fcgiLen(9, true), fcgiLen(9, false), []byte("HTTP_HOSTa.example")), 0)), "a.example", Found},
	{"4-byte value only", cat(fcgiBegin(1), fcgiRec(fcgiParams, 1, cat(fcgiLen(9, false), fcgiLen(9, true), []byte("HTTP_HOSTa.example")), 0)), "a.example", Found},
	{"value of 127 then host", fcgiReq("X="+strings.Repeat("v", 127), "HTTP_HOST=a.example"), "a.example", Found},
	{"value of 128 then host", fcgiReq("X="+strings.Repeat("v", 128), "HTTP_HOST=a.example"), "a.example", Found},
	{"name of 128 then host", fcgiReq(strings.Repeat("N", 128)+"=v", "HTTP_HOST=a.example"), "a.example", Found},
	{"value of 40000 then host", fcgiReq("X="+strings.Repeat("v", 40000), "HTTP_HOST=a.example"), "a.example", Found},

	// Records: padding, several, multiplexed, management, roles.
	{"padded records", cat(fcgiRec(fcgiBeginRequest, 1, []byte{0, 1, 0, 0, 0, 0, 0, 0}, 255),
		fcgiRec(fcgiParams, 1, fcgiPairs("A=b"), 7), fcgiRec(fcgiParams, 1, fcgiPairs("HTTP_HOST=a.example"), 255)), "a.example", Found},
	{"padded end", cat(fcgiBegin(1), fcgiRec(fcgiParams, 1, fcgiPairs("SERVER_NAME=a.example"), 3), fcgiRec(fcgiParams, 1, nil, 9)), "a.example", Found},
	{"pair per record", cat(fcgiBegin(1), fcgiRec(fcgiParams, 1, fcgiPairs("A=b"), 0), fcgiRec(fcgiParams, 1, fcgiPairs("SERVER_NAME=a.example"), 0),
		fcgiRec(fcgiParams, 1, fcgiPairs("C=d"), 0), fcgiEnd(1)), "a.example", Found},
	{"name across records", cat(fcgiBegin(1), fcgiParamsRecs(1, fcgiPairs("HTTP_HOST=a.example"), 6, 1)), "a.example", Found},
	{"4-byte lengths across records", cat(fcgiBegin(1), fcgiParamsRecs(1, fcgiPairs("4:HTTP_HOST=a.example"), 3, 0)), "a.example", Found},
	{"multiplexed", cat(fcgiBegin(1), fcgiBegin(2), fcgiRec(fcgiParams, 2, fcgiPairs("HTTP_HOST=other.example"), 2),
		fcgiRec(fcgiParams, 1, fcgiPairs("HTTP_HOST=a.example"), 0)), "a.example", Found},
	{"multiplexed per byte", cat(fcgiBegin(1), fcgiBegin(2), fcgiInterleave(
		fcgiParamsRecs(1, fcgiPairs("SERVER_NAME=a.example"), 1, 0), fcgiParamsRecs(2, fcgiPairs("HTTP_HOST=b.example"), 1, 1)), fcgiEnd(1)), "a.example", Found},
	{"another request's end", cat(fcgiBegin(1), fcgiBegin(2), fcgiRec(fcgiParams, 1, fcgiPairs("SERVER_NAME=a.example"), 0),
		fcgiEnd(2), fcgiRec(fcgiStdin, 2, []byte("body"), 4)), "", NeedMore},
	{"another request's end, then ours", cat(fcgiBegin(1), fcgiBegin(2), fcgiRec(fcgiParams, 1, fcgiPairs("SERVER_NAME=a.example"), 0),
		fcgiEnd(2), fcgiEnd(1)), "a.example", Found},
	{"id high byte differs", cat(fcgiBegin(0x0001), fcgiRec(fcgiParams, 0x0101, fcgiPairs("HTTP_HOST=b.example"), 0),
		fcgiRec(fcgiParams, 0x0001, fcgiPairs("HTTP_HOST=a.example"), 0)), "a.example", Found},
	{"id 65535", cat(fcgiBegin(0xffff), fcgiRec(fcgiParams, 0xffff, fcgiPairs("HTTP_HOST=a.example"), 0)), "a.example", Found},
	{"management record between", cat(fcgiBegin(1), fcgiRec(9, 0, fcgiPairs("FCGI_MPXS_CONNS="), 0),
		fcgiRec(fcgiParams, 1, fcgiPairs("HTTP_HOST=a.example"), 0)), "a.example", Found},
	{"authorizer", cat(fcgiRec(fcgiBeginRequest, 7, []byte{0, 2, 0, 0, 0, 0, 0, 0}, 0), fcgiRec(fcgiParams, 7, fcgiPairs("HTTP_HOST=a.example"), 0)), "a.example", Found},
	{"filter, keep-conn", cat(fcgiRec(fcgiBeginRequest, 7, []byte{0, 3, 1, 0, 0, 0, 0, 0}, 0), fcgiRec(fcgiParams, 7, fcgiPairs("HTTP_HOST=a.example"), 0)), "a.example", Found},
	{"empty stdin first (php-fpm)", cat(fcgiRec(fcgiStdin, 1, nil, 0), fcgiRec(fcgiStdin, 9, nil, 0), fcgiReq("HTTP_HOST=a.example")), "a.example", Found},
	{"padded empty stdin first", cat(fcgiRec(fcgiStdin, 1, nil, 1), fcgiReq("HTTP_HOST=a.example")), "", NoName},
	{"stdin first", cat(fcgiRec(fcgiStdin, 1, []byte("x"), 0), fcgiReq("HTTP_HOST=a.example")), "", NoName},

	// Not FastCGI, or broken.
	{"HTTP after the version", []byte("\x01GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"), "", NoName},
	{"version 2", cat([]byte{2}, fcgiReq("HTTP_HOST=a.example")[1:]), "", NoName},
	{"params first", fcgiRec(fcgiParams, 1, fcgiPairs("HTTP_HOST=a.example"), 0), "", NoName},
	{"management first", cat(fcgiRec(9, 0, nil, 0), fcgiReq("HTTP_HOST=a.example")), "", NoName},
	{"null request id", cat(fcgiRec(fcgiBeginRequest, 0, []byte{0, 1, 0, 0, 0, 0, 0, 0}, 0), fcgiRec(fcgiParams, 0, fcgiPairs("HTTP_HOST=a.example"), 0)), "", NoName},
	{"begin body of 9", cat(fcgiRec(fcgiBeginRequest, 1, []byte{0, 1, 0, 0, 0, 0, 0, 0, 0}, 0), fcgiRec(fcgiParams, 1, fcgiPairs("HTTP_HOST=a.example"), 0)), "", NoName},
	{"begin body of 264", []byte{1, 1, 0, 1, 1, 8}, "", NoName},
	{"role 0", []byte{1, 1, 0, 1, 0, 8, 0, 0, 0, 0}, "", NoName},
	{"role 4", []byte{1, 1, 0, 1, 0, 8, 0, 0, 0, 4}, "", NoName},
	{"role 257", []byte{1, 1, 0, 1, 0, 8, 0, 0, 1, 1}, "", NoName},
	{"later record version 0", cat(fcgiBegin(1), []byte{0}), "", NoName},
	{"later record version 2", cat(fcgiBegin(1), fcgiRec(fcgiParams, 1, fcgiPairs("A=b"), 0), []byte{2, fcgiParams, 0, 1}), "", NoName},
	{"stdin before the end", cat(fcgiOpen("SERVER_NAME=a.example"), fcgiRec(fcgiStdin, 1, []byte("x"), 0)), "", NoName},
	{"empty stdin before the end", cat(fcgiOpen("SERVER_NAME=a.example"), fcgiRec(fcgiStdin, 1, nil, 0)), "", NoName},
	{"abort", cat(fcgiOpen("SERVER_NAME=a.example"), fcgiRec(2, 1, nil, 0)), "", NoName},
	{"second begin of ours", cat(fcgiOpen("SERVER_NAME=a.example"), fcgiBegin(1)), "", NoName},
	{"end inside a value", cat(fcgiBegin(1), fcgiRec(fcgiParams, 1, fcgiPairs("HTTP_HOST=a.example")[:15], 0), fcgiEnd(1)), "", NoName},
	{"end inside a name", cat(fcgiBegin(1), fcgiRec(fcgiParams, 1, fcgiPairs("HTTP_HOST=a.example")[:5], 0), fcgiEnd(1)), "", NoName},
	{"end between lengths", cat(fcgiBegin(1), fcgiRec(fcgiParams, 1, []byte{9}, 0), fcgiEnd(1)), "", NoName},
	{"end inside a 4-byte length", cat(fcgiBegin(1), fcgiRec(fcgiParams, 1, []byte{9, 0x80, 0}, 0), fcgiEnd(1)), "", NoName},
	{"end inside a skipped value", cat(fcgiBegin(1), fcgiRec(fcgiParams, 1, fcgiPairs("A=bcd")[:3], 0), fcgiEnd(1)), "", NoName},
	{"garbage", []byte("\x01\x01\x00\x01\x00\x08\x00\x00\x00\x01\xff\xff\xff\xff\xff\xff\x00\x00\x00\x00"), "", NoName},

	// Claims of more than maxFastCGI bytes are refused at once.
	{"name length 2^31-1", cat(fcgiBegin(1), fcgiRec(fcgiParams, 1, []byte{0xff, 0xff, 0xff, 0xff, 1}, 0)), "", NoName},
	{"value length 2^31-1", cat(fcgiBegin(1), fcgiRec(fcgiParams, 1, []byte{9, 0xff, 0xff, 0xff, 0xff}, 0)), "", NoName},
	{"value length 65537", cat(fcgiBegin(1), fcgiRec(fcgiParams, 1, cat([]byte{1}, fcgiLen(65537, true)), 0)), "", NoName},
	{"HTTP_HOST value of 2^31-1", cat(fcgiBegin(1), fcgiRec(fcgiParams, 1, cat([]byte{9, 0xff, 0xff, 0xff, 0xff}, []byte("HTTP_HOST")), 0)), "", NoName},
	{"skipped pair past the limit", cat(fcgiBegin(1), fcgiRec(fcgiParams, 1, cat([]byte{1}, fcgiLen(65520, true), []byte("X")), 0)), "", NoName},
	{"other request's record past the limit", cat(fcgiBegin(1), fcgiRec(fcgiParams, 2, nil, 0)[:4], []byte{0xff, 0xff, 0, 0}), "", NoName},
	{"padded record past the limit", cat(fcgiBegin(1), []byte{1, fcgiParams, 0, 2, 0xff, 0xf0, 0xff, 0}), "", NoName},
	{"params record of 65535", cat(fcgiBegin(1), []byte{1, fcgiParams, 0, 1, 0xff, 0xff, 0, 0}, fcgiPairs("HTTP_HOST=a.example")), "a.example", Found},
	{"value length 60000", cat(fcgiBegin(1), fcgiRec(fcgiParams, 1, cat([]byte{1}, fcgiLen(60000, true)), 0)), "", NeedMore},

	{"empty", nil, "", NeedMore},
	{"version byte", []byte{1}, "", NeedMore},
	{"begin header", fcgiBegin(1)[:8], "", NeedMore},
	{"begin", fcgiBegin(1), "", NeedMore},
	{"begin padding", fcgiRec(fcgiBeginRequest, 1, []byte{0, 1, 0, 0, 0, 0, 0, 0}, 8)[:20], "", NeedMore},
	{"params open", fcgiOpen("A=b"), "", NeedMore},
}

// fcgiInterleave alternates the records of two record sequences.
func fcgiInterleave(a, b []byte) []byte {
	var out []byte
	next := func(s []byte) ([]byte, []byte) {
		if len(s) == 0 {
			return nil, nil
		}
		n := fcgiHeaderLen + (int(s[4])<<8 | int(s[5])) + int(s[6])
		return s[:n], s[n:]
	}
	for len(a) > 0 || len(b) > 0 {
		var ra, rb []byte
		ra, a = next(a)
		rb, b = next(b)
		out = cat(out, ra, rb)
	}
	return out
}

func TestSniffFastCGI(t *testing.T) {
	for _, c := range fastCGICases {
		checkFastCGI(t, c.label, c.data, c.name, c.want)
		checkFastCGIArrival(t, c.label, c.data, c.name, c.want)
		if c.want != NeedMore {
			checkFastCGI(t, c.label+" + more", cat(c.data, fcgiAnother), c.name, c.want)
		}
	}
}

// TestSniffFastCGIRecordSplits cuts the params of requests into records of
// every size from one byte to all of them, with and without padding, and
// feeds each a byte at a time: the answer is the same however the records
// and the segments split the request.
func TestSniffFastCGIRecordSplits(t *testing.T) {
	for _, c := range []struct {
		label string
		data  []byte
		name  string
	}{
		{"HTTP_HOST last", fcgiReq("REQUEST_METHOD=GET", "SERVER_NAME=a.example", "X="+strings.Repeat("x", 130), "HTTP_HOST=b.example:8080"), "b.example"},
		{"SERVER_NAME", fcgiReq("4:REQUEST_METHOD=GET", "SERVER_NAME=a.example", "X="+strings.Repeat("x", 130)), "a.example"},
		{"4-byte HTTP_HOST", fcgiReq("A=", "4:HTTP_HOST=b.example"), "b.example"},
	} {
		_, params, _, _, _ := fcgiStream(c.data)
		for size := 1; size <= len(params); size++ {
			for _, pad := range []int{0, 1, 7, 255} {
				split := fcgiReframe(t, c.data, size, pad)
				label := fmt.Sprintf("%s in records of %d, padding %d", c.label, size, pad)
				checkFastCGI(t, label, split, c.name, Found)
				if (size <= 3 || size == len(params)) && pad <= 7 {
					checkFastCGIArrival(t, label, split, c.name, Found)
				}
			}
		}
	}
}

// TestSniffFastCGILimit puts the deciding byte at the last of the
// maxFastCGI bytes looked at, and one past it.
func TestSniffFastCGILimit(t *testing.T) {
	// A request of exactly n bytes whose last byte decides: HTTP_HOST's
	// value, or the end of the params for SERVER_NAME.
	of := func(n int, last string) []byte {
		tail := fcgiPairs(last)
		end := []byte(nil)
		if strings.HasPrefix(last, "SERVER_NAME") {
			end = fcgiEnd(1)
		}
		filler := n - len(fcgiBegin(1)) - 2*fcgiHeaderLen - len(tail) - len(end) - len("X") - 5
		params := cat(fcgiPairs("X="+strings.Repeat("f", filler)), tail)
		if len(params) > 0xffff {
			t.Fatalf("params of %d bytes do not fit a record", len(params))
		}
		// Two records, so that a record boundary is crossed too.
		data := cat(fcgiBegin(1), fcgiRec(fcgiParams, 1, params[:1000], 0), fcgiRec(fcgiParams, 1, params[1000:], 0), end)
		if len(data) != n {
			t.Fatalf("built %d bytes, want %d", len(data), n)
		}
		return data
	}
	for _, last := range []string{"HTTP_HOST=a.example", "SERVER_NAME=a.example"} {
		at := of(maxFastCGI, last)
		checkFastCGI(t, last+" ending at the limit", at, "a.example", Found)
		checkFastCGI(t, last+" ending at the limit + more", cat(at, fcgiAnother), "a.example", Found)
		checkFastCGI(t, last+" ending at the limit, one byte short", at[:len(at)-1], "", NeedMore)
		over := of(maxFastCGI+1, last)
		checkFastCGI(t, last+" ending past the limit", over, "", NoName)
		checkFastCGI(t, last+" ending past the limit, cut there", over[:maxFastCGI], "", NoName)
	}
	// A value claiming past the limit is refused when its length is read.
	over := of(maxFastCGI+1, "HTTP_HOST=a.example")
	valueLen := len(over) - len("a.example") // where the value starts
	checkFastCGI(t, "value past the limit, at its length", over[:valueLen], "", NoName)
	checkFastCGI(t, "name before a value past the limit", over[:valueLen-len("HTTP_HOST")], "", NeedMore)
}

// Requests nginx and Apache (mod_proxy_fcgi) send to a FastCGI backend,
// captured by testdata/capture/fastcgi.sh: see testdata/fastcgi/README.
var fastCGICaptures = map[string]string{
	"nginx-get.bin":                        "shop.example.com",
	"nginx-post-keepconn.bin":              "shop.example.com",
	"nginx-http10-nohost.bin":              "shop.example.com", // Debian's HTTP_HOST $host: the server name
	"nginx-ip.bin":                         "shop.example.com", // HTTP_HOST 127.0.0.1: the block's SERVER_NAME
	"nginx-upstream-port.bin":              "shop.example.com", // HTTP_HOST shop.example.com:8080
	"nginx-upstream-http10-nohost.bin":     "shop.example.com", // SERVER_NAME only
	"apache-get.bin":                       "shop.example.com", // HTTP_HOST shop.example.com:8081
	"apache-post.bin":                      "shop.example.com",
	"apache-http10-nohost.bin":             "shop.example.com", // SERVER_NAME only
	"apache-ip.bin":                        "",                 // HTTP_HOST 127.0.0.1:8081
	"apache-multirecord-http10-nohost.bin": "shop.example.com", // SERVER_NAME in the second params record
}

func readFastCGI(tb testing.TB, file string) []byte {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "fastcgi", file))
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

func TestSniffFastCGICaptures(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "fastcgi", "*.bin"))
	if len(files) != len(fastCGICaptures) {
		t.Errorf("testdata has %d captures, the test knows %d", len(files), len(fastCGICaptures))
	}
	other := readFastCGI(t, "nginx-get.bin")
	for file, name := range fastCGICaptures {
		data := readFastCGI(t, file)
		want := wantOf(name)
		checkFastCGI(t, file, data, name, want)
		checkFastCGI(t, file+" + another request", cat(data, fcgiAnother), name, want)
		checkFastCGI(t, file+" + bytes to past the limit", cat(data, make([]byte, maxFastCGI)), name, want)
		checkFastCGIArrival(t, file, data, name, want)
		for _, size := range []int{1, 2, 3, 5, 8, 100, 255, 1000, 0xffff} {
			split := fcgiReframe(t, data, size, size%8)
			label := fmt.Sprintf("%s in records of %d", file, size)
			if len(split) > maxFastCGI {
				continue // a real request in 1-byte records: 9 times as long
			}
			checkFastCGI(t, label, split, name, want)
			if size == 1 {
				checkFastCGIArrival(t, label, split, name, want)
			}
		}
		// Multiplexed with another request for another name, record by
		// record, its records first.
		begin, params, _, _, _ := fcgiStream(data)
		_, params2, _, _, _ := fcgiStream(other)
		params2 = bytes.ReplaceAll(params2, []byte("shop.example.com"), []byte("othr.example.com"))
		mux := cat(begin, fcgiBegin(2), fcgiInterleave(fcgiParamsRecs(2, params2, 50, 2), fcgiParamsRecs(1, params, 50, 0)), fcgiEnd(1))
		checkFastCGI(t, file+" multiplexed", mux, name, want)
	}
}

// TestFastCGICorpus keeps the fuzz seed corpus, where go test and the
// fuzzer find it, the same as the captures the other tests read.
func TestFastCGICorpus(t *testing.T) {
	for file := range fastCGICaptures {
		path := filepath.Join("testdata", "fuzz", "FuzzSniffFastCGI", strings.TrimSuffix(file, ".bin"))
		corpus, err := os.ReadFile(path)
		if err != nil {
			t.Error(err)
			continue
		}
		want := "go test fuzz v1\n[]byte(" + strconv.Quote(string(readFastCGI(t, file))) + ")\n"
		if string(corpus) != want {
			t.Errorf("%s is not %s in the fuzz corpus format", path, file)
		}
	}
}

func TestSniffFastCGIAllocs(t *testing.T) {
	inputs := [][]byte{
		readFastCGI(t, "nginx-get.bin"),
		readFastCGI(t, "apache-http10-nohost.bin"),
		readFastCGI(t, "nginx-ip.bin"),
		fcgiReframe(t, readFastCGI(t, "apache-get.bin"), 3, 1),
	}
	for _, in := range inputs {
		if n := testing.AllocsPerRun(100, func() { sniffFastCGI(in) }); n > 2 {
			t.Errorf("sniffFastCGI(% x...) allocates %v times; want at most 2 (the name and alt)", in[:16], n)
		}
	}
}

func BenchmarkSniffFastCGI(b *testing.B) {
	for _, file := range []string{"nginx-get.bin", "apache-get.bin", "apache-http10-nohost.bin", "apache-multirecord-http10-nohost.bin"} {
		data := readFastCGI(b, file)
		b.Run(strings.TrimSuffix(file, ".bin"), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, r := sniffFCGI(data); r != Found {
					b.Fatal(r)
				}
			}
		})
	}
}

// FuzzSniffFastCGI holds sniffFastCGI to checkSniffer's rules and to the
// one this parser adds: how records cut the params stream does not matter.
func FuzzSniffFastCGI(f *testing.F) {
	for file := range fastCGICaptures {
		data := readFastCGI(f, file)
		f.Add(fcgiReframe(f, data, 50, 3))
	}
	for _, c := range fastCGICases {
		f.Add(c.data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkSniffer(t, sniffFCGI, data)
		name, r := sniffFCGI(data)
		if len(data) > maxFastCGI {
			if name2, r2 := sniffFCGI(data[:maxFastCGI]); r2 != r || name2 != name {
				t.Fatalf("looks past %d bytes: %q, %v there, %q, %v with them", maxFastCGI, name2, r2, name, r)
			}
		}
		if r == NeedMore || len(data) > maxFastCGI {
			return
		}
		if _, params, ended, _, ok := fcgiStream(data); ok {
			for _, size := range []int{1, 2, max(len(params)-1, 1)} {
				split := fcgiReframe(t, data, size, size%3)
				if len(split) > maxFastCGI {
					continue
				}
				name2, r2 := sniffFCGI(split)
				if r == NoName && r2 == NeedMore && !ended && len(split) < len(data) {
					// Cut off mid-stream, data may claim bytes past the
					// limit that a shorter framing still has room for.
					continue
				}
				if r2 != r || name2 != name {
					t.Fatalf("params in records of %d give %q, %v; as sent %q, %v", size, name2, r2, name, r)
				}
			}
		}
	})
}

// With HTTP_HOST, the SERVER_NAME before it comes back as alt: nginx sends
// its fastcgi_params (SERVER_NAME, the server block's name) before the
// request's headers; Apache sends the headers first, so there is none.
func TestSniffFastCGIAlt(t *testing.T) {
	for _, tc := range []struct {
		label     string
		data      []byte
		name, alt string
		want      Sniff
	}{
		{"SERVER_NAME first", fcgiReq("SERVER_NAME=b.example", "HTTP_HOST=a.example"), "a.example", "b.example", Found},
		{"HTTP_HOST first", fcgiReq("HTTP_HOST=a.example", "SERVER_NAME=b.example"), "a.example", "", Found},
		{"the last SERVER_NAME before it", fcgiReq("SERVER_NAME=c.example", "SERVER_NAME=b.example:80", "HTTP_HOST=a.example"), "a.example", "b.example", Found},
		{"an invalid SERVER_NAME", fcgiReq("SERVER_NAME=192.0.2.1", "HTTP_HOST=a.example"), "a.example", "", Found},
		{"nginx", readFastCGI(t, "nginx-get.bin"), "shop.example.com", "shop.example.com", Found},
		{"Apache", readFastCGI(t, "apache-get.bin"), "shop.example.com", "", Found},
	} {
		name, alt, r := sniffFastCGI(tc.data)
		if name != tc.name || alt != tc.alt || r != tc.want {
			t.Errorf("%s: sniffFastCGI = %q, %q, %v; want %q, %q, %v", tc.label, name, alt, r, tc.name, tc.alt, tc.want)
		}
		if n2, a2, r2 := SniffNames(tc.data); n2 != name || a2 != alt || r2 != r {
			t.Errorf("%s: SniffNames = %q, %q, %v; sniffFastCGI %q, %q, %v", tc.label, n2, a2, r2, name, alt, r)
		}
	}
}
