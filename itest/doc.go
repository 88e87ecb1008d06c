// Package itest holds the integration tests: real servers from Debian
// packages run under vhqos inside network namespaces the tests make, on the
// host's kernel and, through itest/vm, on a VM with unified cgroup v2. The
// same test binary runs in both places, from any working directory:
//
//	go test ./itest/                                  # on the host, as root
//	go test -c -o build/itest.test ./itest            # for the VM (make test-vm)
//
// # Namespaces
//
// TestMain is Main: the test binary re-executes itself in a new network
// and mount namespace (CLONE_NEWNET|CLONE_NEWNS), makes every mount private,
// brings lo up (an ioctl, no ip(8) needed) and runs the tests there, so they
// can use any address in 127.0.0.0/8 and ::1 and any port without touching
// the host. One namespace serves the whole run: tests run one after the
// other and each stops what it started. When the run ends for any reason
// (a test timeout, a panic, a signal) whatever still runs in the namespace
// is stopped by the outer process: SIGTERM, then SIGKILL. Without root
// nothing runs.
//
// # The API
//
// Servers:
//
//	a := RunApache(t, ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: "127.0.0.2:8080"}, ...}})
//	a := RunApache(t, ApacheConfig{VHosts: ..., Prefix: []string{bin, "run", "--config", qos, "--"}})
//
// runs Debian's apache2 (prefork) with one IP-based vhost per address, in a
// process group of its own, and stops it when the test ends, failing the
// test if any of its processes outlive it. Its documents: /index.html
// (IndexHTML), /cgi-bin/whoami (the serving process's PID and cgroups, the
// CGI's, the connection's ends; ParseWhoami reads it), /cgi-bin/burn?N
// (keeps a CPU busy N seconds, then answers like whoami), /cgi-bin/hold?G
// (holds its request until a.OpenGate(G), then answers like whoami;
// a.Held(G) counts those waiting: requests served at once). a.Log() reads the
// access log: vhost, serving PID (%P), status, path, client address and
// port. a.Stop() sends SIGTERM and returns the exit state; a.Output() is
// what Apache (and vhqos) printed. StartApache is the same without a test
// (for the benchmarks).
//
//	p := RunPHPFPM(t, PHPFPMConfig{Addr: "127.0.0.1:9000", Workers: 4, Prefix: ...})
//	h := RunHAProxy(t, []ProxyRoute{{Bind: "127.0.0.5:80", Server: "127.0.0.1:8081", Version: 2}})
//	d := RunDaemon(t, DaemonConfig{Name: "nginx", Dir: dir, Argv: ..., Listen: ...})
//
// run Debian's php-fpm (one static pool on TCP; /whoami.php reports the
// worker and its cgroups as the whoami CGI does, /burn.php?gate=G spins
// until p.OpenGate(G), p.Burners(G) says who burns for which site),
// HAProxy in mode tcp with send-proxy or send-proxy-v2 per frontend, and
// any other server from a configuration the test wrote into a scratch
// directory, natively or under vhqos (Prefix), with RunApache's stop and
// leftovers checks. They wait for the server's listening sockets in
// /proc/net/tcp rather than connecting, so a server under vhqos sees only
// the test's connections.
//
// Threaded servers:
//
//	p := RunPythonThreads(t, PythonThreadsConfig{Prefix: ...})   // ThreadingHTTPServer
//	a := RunApache(t, ApacheConfig{MPM: "event", Lua: true, ...})
//
// serve handlers that run in the serving thread and report it
// (ParseThreadReport: /proc/thread-self/cgroup as the handler began and as
// it answered): the Python server's /whoami, /hold?gate=G&min=S (asleep)
// and /burn?gate=G (hashing, which releases the GIL); mod_lua's
// /lua/whoami and /lua/burn?G. p.Started(G) and a.LuaStarted(G) list the
// threads that began at gate G; OpenGate(G) lets them answer.
//
// Clients:
//
//	resp, err := Get("127.0.0.2:8080", "/cgi-bin/whoami")         // Connection: close
//	resp, err := Get("127.0.0.2:8080", "http://shop.example/x")   // with Host: shop.example
//	k, err := DialKeepAlive("127.0.0.2:8080"); resp, err = k.Get("/index.html")
//
// A Response has the status, header, body and the connection's ends
// (resp.Client, resp.Server). Get returns only once the server has closed
// the connection.
//
// Across a device:
//
//	v, err := NewVeth("vqb-srv", "vqb-cli", "169.254.77.1", "169.254.77.2"); defer v.Close()
//	v.InClients(func() error { c, err = net.Dial("tcp", "169.254.77.1:8081"); return err })
//
// makes a veth pair whose server end stays in the tests' namespace and whose
// other end is in a namespace of its own: connections (and processes)
// made in InClients cross the device and its qdisc, as loopback would not
// (the bandwidth tests and the bench's -rates use it).
//
// DSCP on the wire:
//
//	capture, err := StartCapture() // before the traffic; defer capture.Stop()
//	marks, err := capture.Conn(resp.Server, resp.Client)
//	marks.All(46)  // every data or FIN packet the server sent carried DSCP 46
//	marks.SynAck   // the SYN-ACK's DSCP (the listener's marking), -1 if none
//
// A packet socket on lo records, per direction of every TCP connection, the
// DSCP (IPv4 TOS or IPv6 traffic class, >>2) of the packets carrying data
// or FIN, and the SYN-ACK's separately; pure ACKs are left out (the kernel
// acknowledges a request before the server has accepted the connection).
// Conn first syncs: it sends a datagram of its own through lo and waits for
// the capture to see it, so everything a client has received is recorded;
// it fails if the kernel dropped packets. Last polls without syncing.
//
// vhqos: VhqosBinary returns $VHQOS_BIN, else REPO/build/vhqos, rebuilt
// once per run when a Go toolchain is there and the repository is writable
// (not in the VM, whose root is read-only); RepoRoot finds REPO from the
// working directory or the source path compiled into the binary. CgroupV2
// tells the VM's unified layout from the host's hybrid one.
package itest
