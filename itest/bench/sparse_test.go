package main

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// answering listens on loopback and answers every connection's request
// with reply, closing it after.
func answering(t *testing.T, reply string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 512)
				var got string
				for !strings.Contains(got, "\r\n\r\n") {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					got += string(buf[:n])
				}
				io.WriteString(c, reply)
			}()
		}
	}()
	return ln.Addr().String()
}

func TestOpenAtRate(t *testing.T) {
	for _, tc := range []struct {
		name, reply string
		rate        int
		wantFailed  bool
	}{
		{"served", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 20, false},
		{"not found", "HTTP/1.1 404 Not Found\r\n\r\n", 20, true},
		{"closed without an answer", "", 20, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := answering(t, tc.reply)
			failed := openAtRate(addr, tc.rate, 200*time.Millisecond)
			if (failed > 0) != tc.wantFailed {
				t.Errorf("%d connections failed; want failures: %v", failed, tc.wantFailed)
			}
		})
	}
}
