package supervisor

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Refusals, as a client sees them: a complete HTTP response, then a clean
// end of the connection; the server's accept never returns the
// connection.
func TestAdmissionRefuses(t *testing.T) {
	shop := Decision{Group: "shop", DSCP: 34, Admission: &Admission{MaxConnections: 1, RefuseStatus: 508, RetryAfter: 7}}
	h := startServerWith(t, "127.0.0.1:0", false, admissionClassifier{d: shop, timeout: 300 * time.Millisecond})
	h.dial()
	h.keep() // the one connection shop may have
	h.command("nonblock")
	if l := h.line(); l != "ok" {
		t.Fatal(l)
	}
	body := strings.Repeat("x", 300<<10)
	for _, tc := range []struct {
		name, send   string
		wantResponse bool
		wantBody     bool
	}{
		{"GET", "GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n", true, true},
		{"HEAD", "HEAD / HTTP/1.1\r\nHost: shop.example\r\n\r\n", true, false},
		{"empty lines first", "\r\n\r\nGET / HTTP/1.0\r\n\r\n", true, true},
		{"POST with a body larger than the socket buffers", fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: shop.example\r\nContent-Length: %d\r\n\r\n%s", len(body), body), true, true},
		{"TLS", "\x16\x03\x01\x00\x05hello", false, false},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false, false},
		{"silent", "", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.sup.Admissions()["shop"].Refused
			c, _ := h.dial()
			go c.Write([]byte(tc.send))
			// The supervisor takes the connection when the server asks
			// for one, and refuses it: the server gets nothing.
			h.command("accept4 " + strconv.Itoa(unix.SOCK_NONBLOCK) + " full")
			if r := h.result(); r.Ret >= 0 || r.Errno != int(unix.EAGAIN) {
				t.Errorf("the server's accept got %+v; want EAGAIN: a refused connection never reaches it", r)
			}
			c.SetReadDeadline(time.Now().Add(patience))
			b, err := io.ReadAll(c)
			got := string(b)
			if err != nil {
				t.Fatalf("reading the refusal (got %q): %v; want a clean end of the connection", got, err)
			}
			if !tc.wantResponse {
				if got != "" {
					t.Errorf("got %q; want the connection closed without a word", got)
				}
			} else {
				head, gotBody, ok := strings.Cut(got, "\r\n\r\n")
				for _, want := range []string{"HTTP/1.1 508 Resource Limit Is Reached\r\n", "\r\nRetry-After: 7", "\r\nConnection: close", "\r\nContent-Length: "} {
					if !ok || !strings.Contains(head+"\r\n", want) {
						t.Errorf("response %q lacks %q", head, want)
					}
				}
				if hasBody := gotBody != ""; hasBody != tc.wantBody {
					t.Errorf("body %q; want one: %v", gotBody, tc.wantBody)
				}
				if tc.wantBody && !strings.Contains(head, "Content-Length: "+strconv.Itoa(len(gotBody))+"\r\n") {
					t.Errorf("Content-Length in %q does not match the body of %d bytes", head, len(gotBody))
				}
			}
			if n := h.sup.Admissions()["shop"].Refused - before; n != 1 {
				t.Errorf("refused counter went up by %d; want 1", n)
			}
		})
	}
}

func TestRequestHead(t *testing.T) {
	for _, tc := range []struct {
		in     string
		kind   headKind
		isHead bool
	}{
		{"", headNone, false},
		{"\r\n", headNone, false},
		{"GE", headPartial, false},
		{"GET / HTTP/1.1\r\nHost: a\r\n", headPartial, false},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", headComplete, false},
		{"GET / HTTP/1.0\n\n", headComplete, false},
		{"\r\n\r\nHEAD / HTTP/1.1\r\n\r\n", headComplete, true},
		{"HEAD /x HTTP/1.1\r\n", headPartial, true},
		{"get / HTTP/1.1\r\n\r\n", notHTTP, false},
		{"\x16\x03\x01", notHTTP, false},
		{"PRI * HTTP/2.0\r\n\r\n", notHTTP, false},
		{"GET /\r\n", notHTTP, false}, // HTTP/0.9
		{strings.Repeat("A", 40), notHTTP, false},
	} {
		kind, isHead := requestHead([]byte(tc.in))
		if kind != tc.kind || isHead != tc.isHead {
			t.Errorf("requestHead(%q) = %v, %v; want %v, %v", tc.in, kind, isHead, tc.kind, tc.isHead)
		}
	}
}

func TestRefusalResponse(t *testing.T) {
	for _, tc := range []struct {
		status, retry int
		head          bool
		want          []string
		not           []string
	}{
		{503, 1, false, []string{"HTTP/1.1 503 Service Unavailable\r\n", "Retry-After: 1\r\n", "Connection: close\r\n", "try again in 1 s"}, nil},
		{508, 30, false, []string{"HTTP/1.1 508 Resource Limit Is Reached\r\n", "Retry-After: 30\r\n"}, nil},
		{429, 0, false, []string{"HTTP/1.1 429 Too Many Requests\r\n"}, []string{"Retry-After"}},
		{599, 1, false, []string{"HTTP/1.1 599 Unavailable\r\n"}, nil},
		{503, 1, true, []string{"Content-Length: "}, []string{"try again"}},
	} {
		got := string(refusalResponse(tc.status, tc.retry, tc.head))
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("refusalResponse(%d, %d, head %v) = %q; lacks %q", tc.status, tc.retry, tc.head, got, w)
			}
		}
		for _, w := range tc.not {
			if strings.Contains(got, w) {
				t.Errorf("refusalResponse(%d, %d, head %v) = %q; has %q", tc.status, tc.retry, tc.head, got, w)
			}
		}
		head, body, _ := strings.Cut(got, "\r\n\r\n")
		if !tc.head && !strings.Contains(head, "Content-Length: "+strconv.Itoa(len(body))+"\r\n") {
			t.Errorf("refusalResponse(%d...): Content-Length does not match the body %q", tc.status, body)
		}
	}
}

// A client that sends its whole request body before it reads anything (as
// Python's http.client does) still gets the refusal: vhqos reads and drops
// the body as long as it keeps coming, as Apache's lingering close does,
// instead of closing on unread bytes, which would reset the connection.
func TestRefusalOfAClientThatSendsItsBodyFirst(t *testing.T) {
	shop := Decision{Group: "shop", DSCP: 34, Admission: &Admission{MaxConnections: 1, RefuseStatus: 503, RetryAfter: 1}}
	h := startServerWith(t, "127.0.0.1:0", false, admissionClassifier{d: shop, timeout: time.Second})
	h.dial()
	h.keep()
	h.command("nonblock")
	if l := h.line(); l != "ok" {
		t.Fatal(l)
	}
	c, _ := h.dial()
	h.command("accept4 " + strconv.Itoa(unix.SOCK_NONBLOCK) + " full")
	if r := h.result(); r.Ret >= 0 {
		t.Fatalf("the server got the refused connection: %+v", r)
	}
	body := strings.Repeat("x", 8<<20)
	c.SetDeadline(time.Now().Add(patience))
	if _, err := io.WriteString(c, fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: shop.example\r\nContent-Length: %d\r\n\r\n%s", len(body), body)); err != nil {
		t.Fatalf("sending an 8 MiB body to a refused connection: %v; want it read and dropped", err)
	}
	b, err := io.ReadAll(c)
	if err != nil || !strings.HasPrefix(string(b), "HTTP/1.1 503 ") {
		t.Errorf("after sending the body: %q, %v; want the whole 503 and a clean end", b, err)
	}
}

// Connections being refused count against no cap: while refusals are
// under way, a connection that finds room is admitted.
func TestRefusalsDoNotHoldPlaces(t *testing.T) {
	shop := Decision{Group: "shop", DSCP: 34, Admission: &Admission{MaxConnections: 2}}
	h := startServerWith(t, "127.0.0.1:0", false, admissionClassifier{d: shop, timeout: 20 * time.Second})
	var kept []acceptResult
	for range 2 {
		h.dial()
		kept = append(kept, h.keep())
	}
	h.command("nonblock")
	if l := h.line(); l != "ok" {
		t.Fatal(l)
	}
	for range 5 {
		// Silent: each is held, waiting for a request head, for 20 s.
		h.dial()
		h.command("accept4 " + strconv.Itoa(unix.SOCK_NONBLOCK) + " full")
		if r := h.result(); r.Ret >= 0 {
			t.Fatalf("a connection over the cap reached the server: %+v", r)
		}
	}
	if st := h.sup.Admissions()["shop"]; st.Open != 2 || st.Refused != 5 {
		t.Errorf("stats %+v; want 2 open (the refusals under way count against nothing), 5 refused", st)
	}
	h.command("close " + strconv.Itoa(kept[0].Ret))
	if l := h.line(); l != "ok" {
		t.Fatal(l)
	}
	h.dial()
	h.command("accept4 " + strconv.Itoa(unix.SOCK_NONBLOCK) + " keep")
	if r := h.result(); r.Ret < 0 {
		t.Errorf("after one of 2 closed, with 5 refusals under way, the next connection was refused: %+v", r)
	}
}

// After the response, a refusal lasts while the client keeps sending (up to
// refusalLinger), and ends refusalIdle after its last byte.
func TestRefusalLingersWhileTheClientSends(t *testing.T) {
	shop := Decision{Group: "shop", DSCP: 34, Admission: &Admission{MaxConnections: 1, RefuseStatus: 503}}
	h := startServerWith(t, "127.0.0.1:0", false, admissionClassifier{d: shop, timeout: time.Second})
	h.dial()
	h.keep()
	h.command("nonblock")
	if l := h.line(); l != "ok" {
		t.Fatal(l)
	}
	c, _ := h.dial()
	if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 100000\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	h.command("accept4 " + strconv.Itoa(unix.SOCK_NONBLOCK) + " full")
	if r := h.result(); r.Ret >= 0 {
		t.Fatalf("the server got the refused connection: %+v", r)
	}
	waitFor(t, "the refusal under way", func() bool { return h.sup.refusing.Load() == 1 })
	// A byte every refusalIdle/4 for longer than refusalIdle: the refusal
	// must still be there at the end.
	start := time.Now()
	var lastByte time.Time
	for time.Since(start) < refusalIdle+refusalIdle/2 {
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatalf("sending after %v: %v; the refusal ended while the client was sending", time.Since(start), err)
		}
		lastByte = time.Now()
		time.Sleep(refusalIdle / 4)
	}
	if n := h.sup.refusing.Load(); n != 1 {
		t.Errorf("refusals under way: %d while the client sends; want 1", n)
	}
	waitFor(t, "the refusal to end once the client went quiet", func() bool { return h.sup.refusing.Load() == 0 })
	// Measured from the last byte (the loop slept a quarter of the idle
	// time after it): it is what the idle time counts from.
	if quiet := time.Since(lastByte); quiet < refusalIdle-refusalIdle/4 {
		t.Errorf("the refusal ended %v after the client's last byte; want about %v", quiet, refusalIdle)
	}
}

// With maxRefusing refusals under way, another refused connection is
// closed at once, unanswered: a flood over a cap cannot take the
// supervisor's fds.
func TestRefusalsBeyondTheBoundAreClosed(t *testing.T) {
	shop := Decision{Group: "shop", DSCP: 34, Admission: &Admission{MaxConnections: 1, RefuseStatus: 503}}
	h := startServerWith(t, "127.0.0.1:0", false, admissionClassifier{d: shop, timeout: time.Second})
	h.dial()
	h.keep()
	h.command("nonblock")
	if l := h.line(); l != "ok" {
		t.Fatal(l)
	}
	h.sup.refusing.Store(maxRefusing) // as if that many were under way
	defer h.sup.refusing.Store(0)
	c, _ := h.dial()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	h.command("accept4 " + strconv.Itoa(unix.SOCK_NONBLOCK) + " full")
	if r := h.result(); r.Ret >= 0 {
		t.Fatalf("the server got the refused connection: %+v", r)
	}
	c.SetReadDeadline(time.Now().Add(patience))
	b, _ := io.ReadAll(c) // a reset is fine here: the client sent bytes no one read
	if len(b) != 0 {
		t.Errorf("got %q; want the connection closed unanswered beyond %d refusals", b, maxRefusing)
	}
	if n := h.sup.refusing.Load(); n != maxRefusing {
		t.Errorf("refusals under way: %d; the closed one must not be counted (want %d)", n, maxRefusing)
	}
	if st := h.sup.Admissions()["shop"]; st.Refused != 1 {
		t.Errorf("refused %d; want 1, counted however it was refused", st.Refused)
	}
}
