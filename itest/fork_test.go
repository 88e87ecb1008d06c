package itest

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const forkQoS = `
[settings]
track = "fork"

[[vhost]]
name = "shop"
match = ["127.0.0.2"]
dscp = "EF"

[[vhost]]
name = "blog"
match = ["127.0.0.3"]
dscp = "AF21"
`

// The program each forked child runs with the connection on stdin and
// stdout: it reads the client's line first (a service that reads stdin),
// then reports its pid and cgroup back.
const reportScript = `read line; echo "pid $$"; sed 's/^/cgroup /' /proc/$$/cgroup`

// reportCGI is the same as a CGI for busybox httpd.
const reportCGI = `#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
echo "pid $$"; sed 's/^/cgroup /' /proc/$$/cgroup
`

// forkServer is one fork-after-accept server: how to start it listening on
// port 8080 of every address, and what a client sends it.
type forkServer struct {
	name    string
	argv    func(dir string) []string
	request string
}

func forkServers() []forkServer {
	return []forkServer{
		{"openbsd-inetd", func(dir string) []string {
			conf := filepath.Join(dir, "inetd.conf")
			os.WriteFile(conf, []byte("8080 stream tcp nowait root /bin/sh sh "+filepath.Join(dir, "report.sh")+"\n"), 0o644)
			return []string{"/usr/sbin/inetd", "-d", conf}
		}, "hello\n"},
		{"socat fork", func(dir string) []string {
			// socat parses quotes in its addresses: the script lives in a file.
			return []string{"socat", "TCP-LISTEN:8080,fork,reuseaddr", "EXEC:/bin/sh " + filepath.Join(dir, "report.sh")}
		}, "hello\n"},
		{"busybox httpd", func(dir string) []string {
			return []string{"busybox", "httpd", "-f", "-p", "8080", "-h", filepath.Join(dir, "www")}
		}, "GET /cgi-bin/report HTTP/1.0\r\n\r\n"},
		{"python ForkingTCPServer", func(dir string) []string {
			return []string{"python3", "-c", `
import socketserver, subprocess
class H(socketserver.StreamRequestHandler):
    def handle(self):
        subprocess.run(["/bin/sh", ` + strconv.Quote(filepath.Join(dir, "report.sh")) + `], stdin=self.rfile.fileno(), stdout=self.wfile.fileno())
socketserver.ForkingTCPServer.allow_reuse_address = True
socketserver.ForkingTCPServer(("0.0.0.0", 8080), H).serve_forever()
`}
		}, "hello\n"},
	}
}

// forkDir makes the files every fork server serves from.
func forkDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	if err := os.WriteFile(filepath.Join(dir, "report.sh"), []byte(reportScript+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cgi := filepath.Join(dir, "www", "cgi-bin", "report")
	os.MkdirAll(filepath.Dir(cgi), 0o755)
	if err := os.WriteFile(cgi, []byte(reportCGI), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// runForkServer starts argv under vhqos with the QoS table qos and returns
// vhqos and the server's own (listening) process.
func runForkServer(t *testing.T, qos string, argv []string) (vhqos *exec.Cmd, serverPid int) {
	t.Helper()
	if _, err := exec.LookPath(argv[0]); err != nil {
		t.Fatalf("%s is needed (make deps installs it): %v", argv[0], err)
	}
	qosFile := filepath.Join(t.TempDir(), "qos.toml")
	os.WriteFile(qosFile, []byte(qos), 0o644)
	full := append([]string{vhqosBinary(t), "run", "--log-level", "debug", "--stop-timeout", "10s", "--config", qosFile, "--status-socket", statusSocket(t), "--"}, argv...)
	cmd := exec.Command(full[0], full[1:]...)
	out, _ := os.Create(filepath.Join(t.TempDir(), "out"))
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			data, _ := os.ReadFile(out.Name())
			t.Logf("vhqos said:\n%s", data)
		}
	})
	if err := waitListening(testContext(t), "127.0.0.2:8080", nil); err != nil {
		data, _ := os.ReadFile(out.Name())
		t.Fatalf("%v; vhqos said:\n%s", err, data)
	}
	return cmd, childOf(t, cmd.Process.Pid)
}

// childOf returns the one child process of pid (vhqos's: the server).
func childOf(t *testing.T, pid int) int {
	t.Helper()
	// Children are listed by the thread that made them.
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("listing the threads of %d: %v", pid, err)
	}
	var f []string
	for _, task := range tasks {
		data, _ := os.ReadFile(task)
		f = append(f, strings.Fields(string(data))...)
	}
	if len(f) != 1 {
		t.Fatalf("vhqos has children %v, want one server", f)
	}
	child, _ := strconv.Atoi(f[0])
	return child
}

// Fork-after-accept servers under track = "fork": every connection is
// served by a child sitting in its vhost's cgroup, also after it dup2'd the
// socket onto stdin and stdout and exec'd a shell, the server's packets
// carry the vhost's DSCP, and the listening parent stays home.
func TestForkAfterAcceptServers(t *testing.T) {
	for _, srv := range forkServers() {
		t.Run(srv.name, func(t *testing.T) {
			capture, err := StartCapture()
			if err != nil {
				t.Fatal(err)
			}
			defer capture.Stop()
			vhqos, parent := runForkServer(t, forkQoS, srv.argv(forkDir(t)))
			for i := 0; i < 6; i++ {
				for _, v := range []struct {
					addr, group string
					dscp        int
				}{{"127.0.0.2:8080", "vhost-shop", 46}, {"127.0.0.3:8080", "vhost-blog", 18}} {
					pid, cgroup, port := forkRequest(t, v.addr, srv.request)
					want := fmt.Sprintf("/vhqos.%d/%s", vhqos.Process.Pid, v.group)
					if !strings.HasSuffix(cgroup, want) {
						t.Errorf("%s: served by pid %d in %q, want …%s", v.addr, pid, cgroup, want)
					}
					if pid == parent {
						t.Errorf("%s: served by the listening parent, not a child", v.addr)
					}
					client := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
					if d := capture.DSCP(addrPort(t, v.addr), client); len(d) != 1 || d[v.dscp] == 0 {
						t.Errorf("%s: DSCP on the wire %v, want %d", v.addr, d, v.dscp)
					}
				}
			}
			want := fmt.Sprintf("/vhqos.%d/home", vhqos.Process.Pid)
			if got := procCgroup(t, parent); !strings.HasSuffix(got, want) {
				t.Errorf("the listening parent %d sits in %q, want …%s", parent, got, want)
			}
		})
	}
}

// procCgroup is pid's cgroup as placement is checked: the unified one on
// v2, the cpu controller's on v1.
func procCgroup(t *testing.T, pid int) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && (cgroupV2() && parts[1] == "" || !cgroupV2() && hasController(parts[1], "cpu")) {
			return parts[2]
		}
	}
	t.Fatalf("no cgroup line for pid %d in %q", pid, data)
	return ""
}

func forkRequest(t *testing.T, addr, request string) (pid int, cgroup string, port uint16) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	port = uint16(c.LocalAddr().(*net.TCPAddr).Port)
	if _, err := c.Write([]byte(request)); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "pid "); ok {
			pid, _ = strconv.Atoi(v)
		}
		if v, ok := strings.CutPrefix(line, "cgroup "); ok {
			parts := strings.SplitN(v, ":", 3)
			if len(parts) == 3 && (cgroupV2() && parts[1] == "" || !cgroupV2() && hasController(parts[1], "cpu")) {
				cgroup = parts[2]
			}
		}
	}
	if pid == 0 || cgroup == "" {
		t.Fatalf("no report from %s", addr)
	}
	return pid, cgroup, port
}
