package itest

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// sniff_bytes at its largest, 65536, with Apache and this kernel's socket
// buffers: a request head of exactly 65536 bytes is served in the vhost
// it names; one byte more falls back to the defaults (README: "a request
// head or ClientHello not complete by then falls back"). The wait for a
// name is a minute, so the byte count decides, not the clock. (Up to
// 16 KiB heads were the most that were read, whatever sniff_bytes said.)
func TestLargestSniffBytes(t *testing.T) {
	const addr = "127.0.0.2:8080"
	a := startUnderVhqos(t, "[settings]\nsniff_bytes = 65536\nsniff_timeout = \"60s\"\n"+nameQoS, ApacheConfig{VHosts: []VHost{
		{Name: "shop.example", Addr: addr},
		{Name: "blog.example", Addr: addr, Aliases: []string{"*.blog.example"}},
	}})
	vhqosPid := a.Cmd.Process.Pid
	for _, tc := range []struct {
		size  int
		group string
	}{{65536, "vhost-shop"}, {65537, "default"}} {
		w := bigHeadWhoami(t, addr, "shop.example", tc.size)
		if want := fmt.Sprintf("/vhqos.%d/%s", vhqosPid, tc.group); !strings.HasSuffix(w.Cgroup(), want) {
			t.Errorf("request head of %d bytes for shop.example: served in %q, want …%s", tc.size, w.Cgroup(), want)
		}
	}
}

// bigHeadWhoami asks for the whoami CGI with a request head of exactly
// size bytes: padding header fields of at most 8000 bytes each, under
// Apache's LimitRequestFieldSize.
func bigHeadWhoami(t *testing.T, addr, host string, size int) Whoami {
	t.Helper()
	head := "GET /cgi-bin/whoami HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n"
	for i := 0; ; i++ {
		field := fmt.Sprintf("X-Pad-%d: ", i)
		room := size - len(head) - len("\r\n") - len(field) - len("\r\n")
		if room <= 8000 {
			if room < 0 {
				t.Fatalf("no request head of %d bytes", size)
			}
			head += field + strings.Repeat("p", room) + "\r\n"
			break
		}
		head += field + strings.Repeat("p", 8000) + "\r\n"
	}
	head += "\r\n"
	if len(head) != size {
		t.Fatalf("built a head of %d bytes, want %d", len(head), size)
	}
	c, err := net.DialTimeout("tcp", addr, RequestTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(RequestTimeout))
	if _, err := c.Write([]byte(head)); err != nil {
		t.Fatalf("sending a head of %d bytes: %v", size, err)
	}
	resp, err := readResponse(bufio.NewReader(c), c)
	if err != nil {
		t.Fatalf("head of %d bytes: %v", size, err)
	}
	if resp.Status != 200 {
		t.Fatalf("head of %d bytes: status %d: %s", size, resp.Status, resp.Body)
	}
	w, err := ParseWhoami(resp.Body)
	if err != nil {
		t.Fatalf("head of %d bytes: %v", size, err)
	}
	return w
}
