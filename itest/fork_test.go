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
[[vhost]]
name = "shop"
match = ["127.0.0.2"]
dscp = "EF"

[[vhost]]
name = "blog"
match = ["127.0.0.3"]
dscp = "AF21"
`

// The program each forked child runs: it reports its pid and cgroup back
// on the connection (stdout is the socket).
const reportScript = `echo "pid $$"; sed 's/^/cgroup /' /proc/$$/cgroup`

// Fork-after-accept servers: the parent accepts, a child serves. Because
// vhqos places the accepting process before its accept returns, a child
// forked to serve that connection is born in the connection's cgroup. (What
// the full tracking of issue 3 adds on top: the listening parent going back
// home, connections passed between processes, several connections per
// process.)
func TestForkAfterAcceptServers(t *testing.T) {
	// socat parses quotes in its addresses: the script lives in a file.
	script := filepath.Join(t.TempDir(), "report.sh")
	if err := os.WriteFile(script, []byte(reportScript+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	servers := []struct {
		name string
		argv []string
	}{
		{"socat fork", []string{"socat", "TCP-LISTEN:8080,fork,reuseaddr", "SYSTEM:/bin/sh " + script}},
		{"python ForkingTCPServer", []string{"python3", "-c", `
import socketserver, subprocess
class H(socketserver.StreamRequestHandler):
    def handle(self):
        subprocess.run(["/bin/sh", ` + strconv.Quote(script) + `], stdout=self.wfile.fileno())
socketserver.ForkingTCPServer.allow_reuse_address = True
socketserver.ForkingTCPServer(("0.0.0.0", 8080), H).serve_forever()
`}},
	}
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			if _, err := exec.LookPath(srv.argv[0]); err != nil {
				t.Fatalf("%s is needed: %v", srv.argv[0], err)
			}
			capture, err := StartCapture()
			if err != nil {
				t.Fatal(err)
			}
			defer capture.Stop()
			qosFile := filepath.Join(t.TempDir(), "qos.toml")
			os.WriteFile(qosFile, []byte(forkQoS), 0o644)
			argv := append([]string{vhqosBinary(t), "run", "--stop-timeout", "10s", "--config", qosFile, "--status-socket", statusSocket(t), "--"}, srv.argv...)
			cmd := exec.Command(argv[0], argv[1:]...)
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
				t.Fatal(err)
			}
			for i := 0; i < 6; i++ {
				for _, v := range []struct {
					addr, group string
					dscp        int
				}{{"127.0.0.2:8080", "vhost-shop", 46}, {"127.0.0.3:8080", "vhost-blog", 18}} {
					pid, cgroup, port := forkRequest(t, v.addr)
					want := fmt.Sprintf("/vhqos.%d/%s", cmd.Process.Pid, v.group)
					if !strings.HasSuffix(cgroup, want) {
						t.Errorf("%s: served by pid %d in %q, want …%s", v.addr, pid, cgroup, want)
					}
					if pid == cmd.Process.Pid {
						t.Errorf("%s: served by the listening parent, not a child", v.addr)
					}
					client := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
					if d := capture.DSCP(addrPort(t, v.addr), client); len(d) != 1 || d[v.dscp] == 0 {
						t.Errorf("%s: DSCP on the wire %v, want %d", v.addr, d, v.dscp)
					}
				}
			}
		})
	}
}

func forkRequest(t *testing.T, addr string) (pid int, cgroup string, port uint16) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	port = uint16(c.LocalAddr().(*net.TCPAddr).Port)
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
