// cgidlisten stands in for mod_cgid's daemon: it listens on the Unix
// socket PATH (world-writable, so that Apache's children, running as
// www-data, can connect), and for each of N connections saves what the
// client sends (until 500 ms pass without more) to OUTDIR/NAME.bin, NAME
// taken in order from the remaining arguments ("-": not kept). The socket
// appears at PATH only once it listens, so that a client that finds it is
// not refused. File descriptors passed along (mod_cgid sends its stderr
// pipe with the request) are closed. A request for a script's pid
// (GETPID_REQ, type 3) is answered with pid 0, which makes the Apache
// child give up on the request at once (503) instead of waiting for a
// script that never runs.
//
// usage: cgidlisten PATH OUTDIR NAME...
package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	path, out, names := os.Args[1], os.Args[2], os.Args[3:]
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	check(err)
	tmp := path + ".new"
	check(unix.Bind(fd, &unix.SockaddrUnix{Name: tmp}))
	check(os.Chmod(tmp, 0o777))
	check(unix.Listen(fd, 8))
	check(os.Rename(tmp, path))
	for _, name := range names {
		c, _, err := unix.Accept(fd)
		check(err)
		got := record(c)
		if len(got) >= 4 && binary.LittleEndian.Uint32(got) == 3 {
			_, err := unix.Write(c, make([]byte, 4))
			check(err)
		}
		unix.Close(c)
		if name == "-" {
			continue
		}
		check(os.WriteFile(filepath.Join(out, name+".bin"), got, 0o644))
		fmt.Printf("%s.bin: %d bytes\n", name, len(got))
	}
	unix.Close(fd)
	os.Remove(path)
}

// record reads c until it has been silent for 500 ms or is closed.
func record(c int) []byte {
	var got []byte
	buf := make([]byte, 65536)
	oob := make([]byte, unix.CmsgSpace(4*16))
	tv := unix.NsecToTimeval(int64(500 * time.Millisecond))
	check(unix.SetsockoptTimeval(c, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv))
	for {
		n, oobn, _, _, err := unix.Recvmsg(c, buf, oob, 0)
		if oobn > 0 {
			msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
			check(err)
			for _, m := range msgs {
				if fds, err := unix.ParseUnixRights(&m); err == nil {
					for _, f := range fds {
						unix.Close(f)
					}
				}
			}
		}
		if err != nil || n == 0 {
			return got
		}
		got = append(got, buf[:n]...)
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "cgidlisten:", err)
		os.Exit(1)
	}
}
