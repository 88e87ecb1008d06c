package itest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// activatedAddr is where systemd-socket-activate listens for the servers of
// TestSocketActivation; the table's vhost "shop" matches its address.
const activatedAddr = "127.0.0.2:8080"

const activationQoS = `
[[vhost]]
name = "shop"
match = ["127.0.0.2"]
dscp = "EF"
`

// sdPy is a socket-activated server as sd_listen_fds(3) describes one: it
// serves the socket at fd 3 only when LISTEN_PID is its own pid and
// LISTEN_FDS is 1, and otherwise exits saying what it found. Its answer
// reports what it was started with: pid, the LISTEN_ variables, its open
// fds and fd 3's flags, read before it opened anything.
const sdPy = `
import fcntl, json, os, socket, sys
start = {
    "pid": os.getpid(),
    "listen_pid": os.environ.get("LISTEN_PID"),
    "listen_fds": os.environ.get("LISTEN_FDS"),
    "listen_fdnames": os.environ.get("LISTEN_FDNAMES"),
    "fds": sorted(int(f) for f in os.listdir("/proc/self/fd")),
}
try:
    start["fd3_fl"] = fcntl.fcntl(3, fcntl.F_GETFL)
    start["fd3_fd"] = fcntl.fcntl(3, fcntl.F_GETFD)
except OSError as e:
    start["fd3_error"] = str(e)
if start["listen_pid"] != str(start["pid"]) or start["listen_fds"] != "1":
    print("sd.py: not socket-activated:", json.dumps(start), file=sys.stderr)
    sys.exit(3)
body = json.dumps(start).encode()
s = socket.socket(fileno=3)
while True:
    c, _ = s.accept()
    try:
        req = b""
        while b"\r\n\r\n" not in req:
            chunk = c.recv(4096)
            if not chunk:
                break
            req += chunk
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    except OSError:
        pass
    c.close()
`

// sdReport is sd.py's answer.
type sdReport struct {
	PID           int    `json:"pid"`
	ListenPID     string `json:"listen_pid"`
	ListenFDs     string `json:"listen_fds"`
	ListenFDNames string `json:"listen_fdnames"`
	FDs           []int  `json:"fds"`
	FD3Flags      int    `json:"fd3_fl"`
	FD3FdFlags    int    `json:"fd3_fd"`
	FD3Error      string `json:"fd3_error"`
}

// activatedServer is one server that takes its listening socket from the
// program that starts it.
type activatedServer struct {
	name string
	bin  string // its program, looked up in PATH
	// argv starts the server on the socket it finds at fd 3; dir is a
	// scratch directory of its own.
	argv func(t *testing.T, dir string) []string
	// env is set for the server by systemd-socket-activate (-E).
	env []string
	// body is what its answer must contain.
	body string
	// accepting returns the process that accepts connections, given the
	// one started: itself, or nginx's worker.
	accepting func(t *testing.T, server int) int
	// ownEnviron says /proc/PID/environ still shows what the server was
	// exec'd with (nginx writes its process title over it).
	ownEnviron bool
	// compare, if set, checks the answer under vhqos against the native
	// one.
	compare func(t *testing.T, native, wrapped *Response)
}

func acceptsItself(t *testing.T, server int) int { return server }

func activatedServers() []activatedServer {
	return []activatedServer{
		{
			name: "python sd_listen_fds",
			bin:  "python3",
			argv: func(t *testing.T, dir string) []string {
				script := filepath.Join(dir, "sd.py")
				writeFileT(t, script, sdPy)
				return []string{"python3", script}
			},
			body:       `"listen_fds": "1"`,
			accepting:  acceptsItself,
			ownEnviron: true,
			compare:    compareSdReports,
		},
		{
			// lighttpd takes LISTEN_FDS sockets when told to, and binds
			// the configured address itself otherwise.
			name: "lighttpd",
			bin:  "lighttpd",
			argv: func(t *testing.T, dir string) []string {
				writeFileT(t, filepath.Join(dir, "www", "index.html"), "lighttpd activated\n")
				conf := filepath.Join(dir, "lighttpd.conf")
				writeFileT(t, conf, fmt.Sprintf(`server.document-root = %q
server.bind = "127.0.0.2"
server.port = 8080
server.systemd-socket-activation = "enable"
server.errorlog = "/dev/stderr"
server.pid-file = %q
index-file.names = ("index.html")
`, filepath.Join(dir, "www"), filepath.Join(dir, "lighttpd.pid")))
				return []string{"lighttpd", "-D", "-f", conf}
			},
			body:       "lighttpd activated",
			accepting:  acceptsItself,
			ownEnviron: true,
		},
		{
			// systemd's own socket-activated proxy, in front of a backend
			// the test runs.
			name: "systemd-socket-proxyd",
			bin:  proxyd,
			argv: func(t *testing.T, dir string) []string {
				return []string{proxyd, startBackend(t, "proxied backend\n")}
			},
			body:       "proxied backend",
			accepting:  acceptsItself,
			ownEnviron: true,
		},
		{
			// nginx does not read LISTEN_FDS; a unit gives it the
			// activated socket with Environment=NGINX=3; instead, and
			// nginx adopts it for the listen directive with its address.
			// A plain inherited fd, then, with LISTEN_ variables it
			// ignores. In single-process mode nginx does not serve
			// inherited sockets, even natively: master and one worker.
			name: "nginx $NGINX",
			bin:  "/usr/sbin/nginx",
			env:  []string{"NGINX=3;"},
			argv: func(t *testing.T, dir string) []string {
				conf := filepath.Join(dir, "nginx.conf")
				writeFileT(t, conf, strings.ReplaceAll(`daemon off;
master_process on;
worker_processes 1;
pid DIR/nginx.pid;
error_log stderr;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path DIR/body;
    proxy_temp_path DIR/proxy;
    fastcgi_temp_path DIR/fastcgi;
    uwsgi_temp_path DIR/uwsgi;
    scgi_temp_path DIR/scgi;
    server {
        listen 127.0.0.2:8080;
        location / { return 200 "nginx activated\n"; }
    }
}
`, "DIR", dir))
				return []string{"/usr/sbin/nginx", "-p", dir, "-e", "stderr", "-c", conf}
			},
			body: "nginx activated",
			accepting: func(t *testing.T, master int) int {
				var worker int
				eventually(t, 60*time.Second, "nginx's worker", func() bool {
					kids := childPids(master)
					if len(kids) == 1 {
						worker = kids[0]
					}
					return worker != 0
				})
				return worker
			},
		},
	}
}

// Socket activation through vhqos: systemd-socket-activate listens, and at
// the first connection starts vhqos with the listening socket at fd 3 and
// LISTEN_FDS=1, LISTEN_PID=its pid, LISTEN_FDNAMES in the environment; vhqos
// starts the server, which must find the socket where it would natively,
// with LISTEN_PID naming itself. Each server is first started without
// vhqos, to show the test's setup works; then under vhqos the client that
// woke it is answered, by a process in the vhost's cgroup, with the
// vhost's DSCP on the wire, and the server holds the activated socket
// itself at fd 3 (the inode the launcher bound).
func TestSocketActivation(t *testing.T) {
	launcher, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Fatalf("systemd-socket-activate is needed (make deps installs systemd): %v", err)
	}
	for _, srv := range activatedServers() {
		t.Run(srv.name, func(t *testing.T) {
			if _, err := exec.LookPath(srv.bin); err != nil {
				t.Fatalf("%s is needed (make deps installs it): %v", srv.name, err)
			}
			native := runActivated(t, launcher, srv, nil)
			nativeResp := native.get(t)
			native.stop(t)

			capture, err := StartCapture()
			if err != nil {
				t.Fatal(err)
			}
			defer capture.Stop()
			qos := filepath.Join(t.TempDir(), "qos.toml")
			writeFileT(t, qos, activationQoS)
			prefix := []string{vhqosBinary(t), "run", "--stop-timeout", "10s", "--config", qos, "--status-socket", statusSocket(t), "--"}
			a := runActivated(t, launcher, srv, prefix)
			defer a.stop(t)
			// The first connection is the one that started everything.
			for i := 0; i < 2; i++ {
				resp := a.get(t)
				if m, err := capture.Conn(resp.Server, resp.Client); err != nil || !m.All(46) {
					t.Errorf("request %d: the server sent %v (%v), want every packet with DSCP 46 (EF)", i+1, m, err)
				}
				if srv.compare != nil {
					srv.compare(t, nativeResp, resp)
				}
			}
			vhqosPid := a.cmd.Process.Pid // systemd-socket-activate exec'd vhqos
			server := childOf(t, vhqosPid)
			if srv.ownEnviron {
				env := procEnviron(t, server)
				for k, want := range map[string]string{"LISTEN_PID": strconv.Itoa(server), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "web"} {
					if env[k] != want {
						t.Errorf("the server (pid %d) was started with %s=%q, want %q", server, k, env[k], want)
					}
				}
			}
			if got, want := fdTarget(t, server, 3), listenerInode(t, activatedAddr); got != want {
				t.Errorf("the server's fd 3 is %q, want the activated listener %q", got, want)
			}
			acc := srv.accepting(t, server)
			if got, want := procCgroup(t, acc), fmt.Sprintf("/vhqos.%d/vhost-shop", vhqosPid); !strings.HasSuffix(got, want) {
				t.Errorf("the accepting process %d sits in %q, want …%s", acc, got, want)
			}
		})
	}
}

// activated is systemd-socket-activate running a server, possibly through
// vhqos.
type activated struct {
	srv     activatedServer
	wrapped bool // through vhqos
	cmd     *exec.Cmd
	out     string
	exited  chan struct{}
}

// runActivated starts systemd-socket-activate listening on activatedAddr
// for srv, with prefix (vhqos run ... --) in front of it if given. The
// server starts at the first connection.
func runActivated(t *testing.T, launcher string, srv activatedServer, prefix []string) *activated {
	t.Helper()
	dir := t.TempDir()
	argv := []string{launcher, "-l", activatedAddr, "--fdname=web"}
	for _, e := range srv.env {
		argv = append(argv, "-E", e)
	}
	argv = append(append(argv, prefix...), srv.argv(t, dir)...)
	a := &activated{srv: srv, wrapped: prefix != nil, cmd: exec.Command(argv[0], argv[1:]...), out: filepath.Join(dir, "out"), exited: make(chan struct{})}
	out, err := os.Create(a.out)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	a.cmd.Stdout, a.cmd.Stderr = out, out
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { a.cmd.Wait(); close(a.exited) }()
	t.Cleanup(func() {
		a.stop(t)
		if t.Failed() {
			t.Logf("%s: the programs said:\n%s", a.what(), a.output())
		}
	})
	return a
}

// get sends a request, waiting for systemd-socket-activate to listen
// first: only a refused connection is retried, a reset is an answer.
func (a *activated) get(t *testing.T) *Response {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := Get(activatedAddr, "/")
		if err == nil && resp.Status == http.StatusOK && strings.Contains(resp.Body, a.srv.body) {
			return resp
		}
		if err == nil || !errors.Is(err, syscall.ECONNREFUSED) || time.Now().After(deadline) {
			var got any = err
			if err == nil {
				got = fmt.Sprintf("%d %q", resp.Status, resp.Body)
			}
			t.Fatalf("%s: got %v, want an answer containing %q (the programs' output follows)", a.what(), got, a.srv.body)
		}
		select {
		case <-a.exited:
			t.Fatalf("%s: systemd-socket-activate exited before listening (its output follows)", a.what())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (a *activated) what() string {
	if a.wrapped {
		return a.srv.name + " under vhqos"
	}
	return a.srv.name + " natively"
}

func (a *activated) output() string {
	data, _ := os.ReadFile(a.out)
	return string(data)
}

// stop ends the launcher or what it exec'd (vhqos forwards SIGTERM to the
// server) and waits for it.
func (a *activated) stop(t *testing.T) {
	select {
	case <-a.exited:
		return
	default:
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(30 * time.Second):
		t.Errorf("%s did not stop within 30 s of SIGTERM", a.what())
		syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
		<-a.exited
	}
}

// compareSdReports checks that sd.py started under vhqos as it did
// natively: the same fds open, and fd 3 with the same flags.
func compareSdReports(t *testing.T, native, wrapped *Response) {
	t.Helper()
	var n, w sdReport
	if err := json.Unmarshal([]byte(native.Body), &n); err != nil {
		t.Fatalf("sd.py's native answer %q: %v", native.Body, err)
	}
	if err := json.Unmarshal([]byte(wrapped.Body), &w); err != nil {
		t.Fatalf("sd.py's answer under vhqos %q: %v", wrapped.Body, err)
	}
	if w.ListenPID != strconv.Itoa(w.PID) {
		t.Errorf("under vhqos sd.py saw LISTEN_PID=%s, its pid is %d", w.ListenPID, w.PID)
	}
	if fmt.Sprint(w.FDs) != fmt.Sprint(n.FDs) || w.FD3Flags != n.FD3Flags || w.FD3FdFlags != n.FD3FdFlags || w.FD3Error != n.FD3Error {
		t.Errorf("sd.py started with fds %v, fd 3 flags %#o, fd flags %d %s under vhqos; natively with %v, %#o, %d %s",
			w.FDs, w.FD3Flags, w.FD3FdFlags, w.FD3Error, n.FDs, n.FD3Flags, n.FD3FdFlags, n.FD3Error)
	}
	if w.ListenFDNames != "web" {
		t.Errorf("under vhqos sd.py saw LISTEN_FDNAMES=%q, want %q", w.ListenFDNames, "web")
	}
}

// startBackend serves body over HTTP on a loopback port for the test and
// returns its address.
func startBackend(t *testing.T, body string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		fmt.Fprint(w, body)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// proxyd is systemd-socket-proxyd, which is not on PATH (Debian's systemd
// package; /lib is /usr/lib on a merged /usr).
const proxyd = "/lib/systemd/systemd-socket-proxyd"

func writeFileT(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// procEnviron is the environment pid was exec'd with.
func procEnviron(t *testing.T, pid int) map[string]string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(data), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			if _, dup := env[k]; !dup {
				env[k] = v
			}
		}
	}
	return env
}

// fdTarget is what pid's fd points to ("socket:[INODE]"), "" if it is not
// open.
func fdTarget(t *testing.T, pid, fd int) string {
	t.Helper()
	target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
	return target
}

// listenerInode is "socket:[INODE]" of the TCP socket listening on addr
// (IPv4), from /proc/net/tcp.
func listenerInode(t *testing.T, addr string) string {
	t.Helper()
	ap := addrPort(t, addr)
	a4 := ap.Addr().As4()
	// /proc/net/tcp writes the address as the 32-bit value in host (little
	// endian) order, the port in big endian, both in hex.
	local := fmt.Sprintf("%02X%02X%02X%02X:%04X", a4[3], a4[2], a4[1], a4[0], ap.Port())
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 9 && f[1] == local && f[3] == "0A" {
			return "socket:[" + f[9] + "]"
		}
	}
	t.Fatalf("no socket listens on %s", addr)
	return ""
}

// children lists pid's child processes.
func childPids(pid int) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, task := range tasks {
		data, _ := os.ReadFile(task)
		for _, f := range strings.Fields(string(data)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}
