// listen accepts one TCP connection on 127.0.0.1:PORT and saves the first
// bytes the client sends (until 500 ms pass without more) to OUT.
package main

import (
	"net"
	"os"
	"time"
)

func main() {
	ln, err := net.Listen("tcp", "127.0.0.1:"+os.Args[1])
	if err != nil {
		panic(err)
	}
	c, err := ln.Accept()
	if err != nil {
		panic(err)
	}
	var got []byte
	buf := make([]byte, 65536)
	for {
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			break
		}
	}
	c.Close()
	if err := os.WriteFile(os.Args[2], got, 0o644); err != nil {
		panic(err)
	}
}
