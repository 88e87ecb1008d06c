package supervisor

// A small accepting server for the supervisor's tests. It runs as a separate
// process under the real seccomp filter (the test binary re-executed by the
// shim) and makes raw accept/accept4 calls, so each flag, buffer and errno
// case can be asked for exactly. Commands arrive one per line on stdin;
// each answer is one JSON line on stdout.

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const testServerEnv = "VHQOS_TESTSERVER"

// acceptResult is what the test server reports about one accept call.
type acceptResult struct {
	Ret      int    `json:"ret"`
	Errno    int    `json:"errno"`
	AddrLen  int    `json:"addrlen"`
	Family   int    `json:"family"`
	Port     int    `json:"port"`
	Nonblock bool   `json:"nonblock"`
	Cloexec  bool   `json:"cloexec"`
	TOS      int    `json:"tos"`
	Mark     uint32 `json:"mark"`   // SO_MARK
	Pacing   uint64 `json:"pacing"` // SO_MAX_PACING_RATE
	Pid      int    `json:"pid"`
	Guard    string `json:"guard"` // buffer bytes past what the kernel may write, hex
}

// testServerMain listens on the loopback address named by
// VHQOS_TESTSERVER_ADDR ("127.0.0.1:0" by default; "unix:/path" or
// "unix:@name" for a Unix-domain socket, PORT 0), says "ready PORT" and
// obeys commands:
//
//	accept MODE | accept4 FLAGS MODE    one accept on the listener; MODE is
//	                                    full, null, short, neg or fault;
//	                                    keep is full without closing the
//	                                    connection (ret is its fd)
//	on KIND accept4 FLAGS               accept on another kind of fd:
//	                                    badfd, pipe, unconnected, udp
//	connect IP:PORT                     open and keep a connection of the
//	                                    server's own; prints its fd
//	nonblock                            make the listener non-blocking
//	close FD                            close a connection kept by keep
//	tid                                 print the thread id accepts run on
//	children N                          start N processes that serve forever
//	reuseport N                         listen again with N sockets in one
//	                                    SO_REUSEPORT group on the same port,
//	                                    a polling child (pollsumchild) on each
func testServerMain() int {
	runtime.LockOSThread()
	signal.Ignore(syscall.SIGPIPE)
	// The signal test interrupts a blocked accept; Go restarts it (SA_RESTART),
	// which is what most servers do.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGUSR1)
	lfd, port, err := listenFromEnv()
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Printf("ready %d\n", port)
	in := bufio.NewScanner(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	var children []*exec.Cmd
	var fillers []int
	defer func() {
		for _, c := range children {
			c.Process.Kill()
			c.Wait()
		}
	}()
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "accept":
			out.Encode(doAccept(lfd, false, 0, f[1]))
		case "accept4":
			flags, _ := strconv.Atoi(f[1])
			out.Encode(doAccept(lfd, true, flags, f[2]))
		case "on":
			fd := otherFd(f[1])
			flags, _ := strconv.Atoi(f[3])
			out.Encode(doAccept(fd, true, flags, "full"))
		case "relisten":
			// Close the listener and bind its port again, as a server
			// does when its configuration drops and re-adds a Listen.
			unix.Close(lfd)
			deadline := time.Now().Add(patience)
			for {
				fd, _, err := listenFromEnvPort(port)
				if err == nil {
					lfd = fd
					fmt.Println("ok")
					break
				}
				if time.Now().After(deadline) {
					fmt.Println("error", err)
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
		case "nofile":
			// Lower the fd limit to what is open now, so the next accept
			// has no slot: EMFILE. "nofile restore" puts it back.
			var lim unix.Rlimit
			unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
			if len(f) > 1 && f[1] == "restore" {
				lim.Cur = lim.Max
			} else {
				entries, _ := os.ReadDir("/proc/self/fd")
				highest := 0
				for _, e := range entries {
					if n, err := strconv.Atoi(e.Name()); err == nil && n > highest {
						highest = n
					}
				}
				lim.Cur = uint64(highest + 1)
			}
			if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
				fmt.Println("error", err)
				continue
			}
			if len(f) > 1 && f[1] == "restore" {
				for _, fd := range fillers {
					unix.Close(fd)
				}
				fillers = nil
			} else {
				// Fill the free slots below the limit too.
				for {
					fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
					if err != nil {
						break
					}
					fillers = append(fillers, fd)
				}
			}
			fmt.Println("ok")
		case "serve":
			// Serve N connections one after the other in this one
			// process, each read to EOF and answered with a checksum.
			n, _ := strconv.Atoi(f[1])
			for range n {
				fd, _, e := unix.Syscall6(unix.SYS_ACCEPT4, uintptr(lfd), 0, 0, unix.SOCK_CLOEXEC, 0, 0)
				if e != 0 {
					fmt.Println("error", e)
					break
				}
				serveSum(int(fd))
			}
			fmt.Println("ok")
		case "connect":
			// Open a connection of the server's own (to a database,
			// say), kept open; print its fd.
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err == nil {
				host, portStr, _ := strings.Cut(f[1], ":")
				port, _ := strconv.Atoi(portStr)
				sa := &unix.SockaddrInet4{Port: port}
				copy(sa.Addr[:], parseIP(host)[12:])
				err = unix.Connect(fd, sa)
			}
			if err != nil {
				fmt.Println("error", err)
				continue
			}
			fmt.Println(fd)
		case "nonblock":
			unix.SetNonblock(lfd, true)
			fmt.Println("ok")
		case "close":
			// Close a connection kept by "accept... keep": the server is
			// done with it.
			fd, _ := strconv.Atoi(f[1])
			if err := unix.Close(fd); err != nil {
				fmt.Println("error", err)
				continue
			}
			fmt.Println("ok")
		case "reuseport":
			// As nginx's "listen ... reuseport": every worker its own
			// socket on one address, the kernel spreading connections
			// over them. The listener so far lacks SO_REUSEPORT and
			// must go first (before any accept: no copy of it is kept).
			n, _ := strconv.Atoi(f[1])
			unix.Close(lfd)
			var err error
			for i := 0; i < n && err == nil; i++ {
				var fd int
				if fd, err = listenReuseport(port); err != nil {
					break
				}
				if i == 0 {
					lfd = fd
				}
				c := exec.Command("/proc/self/exe")
				c.Env = append(os.Environ(), testServerEnv+"=pollsumchild")
				c.ExtraFiles = []*os.File{os.NewFile(uintptr(fd), "listener")}
				c.Stdout, c.Stderr = os.Stderr, os.Stderr
				if err = c.Start(); err == nil {
					children = append(children, c)
				}
			}
			if err != nil {
				fmt.Println("error", err)
				continue
			}
			fmt.Println("ok")
		case "tid":
			fmt.Println(unix.Gettid())
		case "children", "pollchildren", "pollsumchildren":
			mode := map[string]string{"children": "child", "pollchildren": "pollchild", "pollsumchildren": "pollsumchild"}[f[0]]
			n, _ := strconv.Atoi(f[1])
			for i := 0; i < n; i++ {
				c := exec.Command("/proc/self/exe")
				c.Env = append(os.Environ(), testServerEnv+"="+mode)
				c.ExtraFiles = []*os.File{os.NewFile(uintptr(lfd), "listener")}
				c.Stdout = os.Stderr
				c.Stderr = os.Stderr
				if err := c.Start(); err != nil {
					fmt.Println("error", err)
					return 1
				}
				children = append(children, c)
			}
			fmt.Println("ok")
		}
	}
	return 0
}

// testChildMain serves the listener inherited as fd 3 until killed: the
// prefork pattern, many processes blocked in accept on one socket.
func testChildMain() int {
	for {
		r := doAccept(3, true, unix.SOCK_CLOEXEC, "full")
		if r.Ret < 0 && r.Errno != int(unix.EINTR) {
			return 1
		}
	}
}

// testPollChildMain serves fd 3 the way event-driven servers do: the
// listener is non-blocking and the process waits in poll() until it is
// readable, then accepts.
func testPollChildMain() int {
	unix.SetNonblock(3, true)
	for {
		pfd := []unix.PollFd{{Fd: 3, Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, -1); err != nil && err != unix.EINTR {
			return 1
		}
		r := doAccept(3, true, unix.SOCK_CLOEXEC, "full")
		if r.Ret < 0 && r.Errno != int(unix.EAGAIN) && r.Errno != int(unix.EINTR) {
			return 1
		}
	}
}

// testPollSumChildMain is testPollChildMain answering with serveSum.
func testPollSumChildMain() int {
	unix.SetNonblock(3, true)
	for {
		pfd := []unix.PollFd{{Fd: 3, Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, -1); err != nil && err != unix.EINTR {
			return 1
		}
		fd, _, e := unix.Syscall6(unix.SYS_ACCEPT4, 3, 0, 0, unix.SOCK_CLOEXEC, 0, 0)
		switch e {
		case 0:
			serveSum(int(fd))
		case unix.EAGAIN, unix.EINTR:
		default:
			return 1
		}
	}
}

// serveSum reads a connection to EOF and answers "PID SHA256 TOS": who
// served it, a checksum of every byte the server received, and the mark
// its socket carried.
func serveSum(fd int) {
	h := sha256.New()
	buf := make([]byte, 4096)
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if n <= 0 {
			break
		}
		h.Write(buf[:n])
	}
	tos, _ := unix.GetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TOS)
	unix.Write(fd, fmt.Appendf(nil, "%d %x %d\n", os.Getpid(), h.Sum(nil), tos))
	unix.Close(fd)
}

// listenReuseport listens on the test server's address and port with
// SO_REUSEPORT.
func listenReuseport(port int) (int, error) {
	addr := os.Getenv("VHQOS_TESTSERVER_ADDR")
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	host := addr[:strings.LastIndex(addr, ":")]
	fd, _, err := listenOn(host+":"+strconv.Itoa(port), true)
	return fd, err
}

func listenFromEnvPort(port int) (int, int, error) {
	addr := os.Getenv("VHQOS_TESTSERVER_ADDR")
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	host := addr[:strings.LastIndex(addr, ":")]
	os.Setenv("VHQOS_TESTSERVER_ADDR", host+":"+strconv.Itoa(port))
	defer os.Setenv("VHQOS_TESTSERVER_ADDR", addr)
	return listenFromEnv()
}

func listenFromEnv() (fd, port int, err error) {
	addr := os.Getenv("VHQOS_TESTSERVER_ADDR")
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	return listenOn(addr, false)
}

// listenOn listens on addr ("127.0.0.1:0", "[::1]:8080", or a
// Unix-domain socket: "unix:/path", "unix:@abstract", whose port is 0),
// with SO_REUSEPORT if reuseport.
func listenOn(addr string, reuseport bool) (fd, port int, err error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		fd, err = unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return 0, 0, err
		}
		if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
			return 0, 0, err
		}
		return fd, 0, unix.Listen(fd, 512)
	}
	host, portStr, _ := strings.Cut(addr, ":")
	if strings.HasPrefix(addr, "[") {
		i := strings.LastIndex(addr, "]:")
		host, portStr = addr[1:i], addr[i+2:]
	}
	p, _ := strconv.Atoi(portStr)
	var sa unix.Sockaddr
	family := unix.AF_INET
	if strings.Contains(host, ":") {
		family = unix.AF_INET6
		var a [16]byte
		copy(a[:], parseIP(host))
		sa = &unix.SockaddrInet6{Port: p, Addr: a}
	} else {
		var a [4]byte
		copy(a[:], parseIP(host)[12:])
		sa = &unix.SockaddrInet4{Port: p, Addr: a}
	}
	fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, 0, err
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if reuseport {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return 0, 0, err
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return 0, 0, err
	}
	if err := unix.Listen(fd, 512); err != nil {
		return 0, 0, err
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		return 0, 0, err
	}
	switch a := got.(type) {
	case *unix.SockaddrInet4:
		port = a.Port
	case *unix.SockaddrInet6:
		port = a.Port
	}
	return fd, port, nil
}

func parseIP(s string) []byte {
	ip := make([]byte, 16)
	if !strings.Contains(s, ":") {
		ip[10], ip[11] = 0xff, 0xff
		for i, part := range strings.Split(s, ".") {
			v, _ := strconv.Atoi(part)
			ip[12+i] = byte(v)
		}
		return ip
	}
	if s == "::1" {
		ip[15] = 1
	}
	return ip
}

func otherFd(kind string) int {
	switch kind {
	case "badfd":
		return 987
	case "pipe":
		var p [2]int
		unix.Pipe2(p[:], unix.O_CLOEXEC)
		return p[0]
	case "unconnected":
		fd, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		return fd
	case "udp":
		fd, _ := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		return fd
	}
	return -1
}

// doAccept makes one raw accept/accept4 call and, on success, answers the
// client with this process's pid before closing the connection.
func doAccept(lfd int, is4 bool, flags int, mode string) acceptResult {
	const guardLen = 8
	var buf [128 + guardLen]byte
	for i := range buf {
		buf[i] = 0xAA
	}
	addrLen := int32(128)
	addr, lenp := uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&addrLen))
	limit := 128
	switch mode {
	case "null":
		addr, lenp = 0, 0
	case "short":
		addrLen, limit = 4, 4
	case "neg":
		addrLen = -1
	case "fault":
		addr = 8 // unmapped page
	}
	var r1 uintptr
	var e syscall.Errno
	if is4 {
		r1, _, e = unix.Syscall6(unix.SYS_ACCEPT4, uintptr(lfd), addr, lenp, uintptr(flags), 0, 0)
	} else {
		r1, _, e = unix.Syscall(unix.SYS_ACCEPT, uintptr(lfd), addr, lenp)
	}
	runtime.KeepAlive(&addrLen)
	r := acceptResult{Ret: int(r1), Errno: int(e), Pid: os.Getpid()}
	if e != 0 {
		r.Ret = -1
		return r
	}
	fd := int(r1)
	r.AddrLen = int(addrLen)
	if mode == "full" || mode == "short" {
		r.Guard = fmt.Sprintf("%x", buf[limit:limit+guardLen])
	}
	if mode == "full" || mode == "keep" {
		r.Family = int(binary.NativeEndian.Uint16(buf[0:2]))
		r.Port = int(binary.BigEndian.Uint16(buf[2:4]))
	}
	fl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	r.Nonblock = fl&unix.O_NONBLOCK != 0
	fdfl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	r.Cloexec = fdfl&unix.FD_CLOEXEC != 0
	if tos, err := unix.GetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TOS); err == nil {
		r.TOS = tos
	}
	sh := currentShaping(fd)
	r.Mark, r.Pacing = sh.mark, sh.pacing
	if r.Family == unix.AF_INET6 {
		if tc, err := unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_TCLASS); err == nil {
			r.TOS = tc
		}
	}
	unix.SetNonblock(fd, false)
	unix.Write(fd, []byte(strconv.Itoa(os.Getpid())+"\n"))
	if mode != "keep" {
		unix.Close(fd)
	}
	return r
}
