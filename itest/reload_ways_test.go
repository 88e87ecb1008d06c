package itest

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Every way people and tools change a file reaches vhqos: the cgroup file
// gets the new cap. (vhqos never re-reads the file on a timer: only the
// file event, or SIGHUP, can bring the change.)
func TestReloadEveryWayOfChangingTheFile(t *testing.T) {
	ways := []struct {
		name string
		// setup makes the file vhqos is started with and returns its path;
		// change replaces its content.
		setup  func(t *testing.T, dir, content string) string
		change func(t *testing.T, path, content string, a *Apache)
	}{
		{"write in place", plainFile, func(t *testing.T, path, content string, _ *Apache) {
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"write a temp file and rename (vim, sed -i, Ansible)", plainFile, func(t *testing.T, path, content string, _ *Apache) {
			writeByRename(t, path, content)
		}},
		{"delete and re-create", plainFile, func(t *testing.T, path, content string, a *Apache) {
			os.Remove(path)
			// vhqos meets the file missing before it comes back.
			eventually(t, patience, "vhqos noticing the table gone", func() bool {
				return strings.Contains(a.Output(), "QoS table unreadable")
			})
			os.WriteFile(path, []byte(content), 0o644)
		}},
		{"symlink swap of a ConfigMap's ..data", configMap, func(t *testing.T, path, content string, _ *Apache) {
			dir := filepath.Dir(path)
			next := filepath.Join(dir, "..2026_v2")
			os.Mkdir(next, 0o755)
			os.WriteFile(filepath.Join(next, "qos.toml"), []byte(content), 0o644)
			tmp := filepath.Join(dir, "..data_tmp")
			if err := os.Symlink("..2026_v2", tmp); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
				t.Fatal(err)
			}
		}},
		{"SIGHUP (also forwarded to the server)", plainFile, func(t *testing.T, path, content string, a *Apache) {
			// Saved without any file event vhqos could see: only the
			// signal tells it. (The pause is a chance for a wrong
			// reload to show; on a busy machine it may show later, and
			// the test then passes without proving the write quiet.)
			writeQuietly(t, path, content)
			time.Sleep(300 * time.Millisecond)
			if got := cpuQuota(t, a.Cmd.Process.Pid, "vhost-shop"); got != "50000" {
				t.Fatalf("the quiet write was noticed without SIGHUP (cap %s); the test proves nothing", got)
			}
			a.Cmd.Process.Signal(syscall.SIGHUP)
		}},
	}
	for _, way := range ways {
		t.Run(way.name, func(t *testing.T) {
			path := way.setup(t, t.TempDir(), reloadBefore)
			a := startUnderVhqosFile(t, path, ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: "127.0.0.2:8080"}}})
			pid := a.Cmd.Process.Pid
			if got := cpuQuota(t, pid, "vhost-shop"); got != "50000" {
				t.Fatalf("cap before = %s, want 50000", got)
			}
			way.change(t, path, reloadAfter, a)
			eventually(t, patience, "the new cap in the cgroup file", func() bool { return cpuQuota(t, pid, "vhost-shop") == "20000" })
			// SIGHUP also restarts Apache, which drops what it is serving,
			// as it does without vhqos: wait until it serves again.
			eventually(t, patience, "Apache serving after the change", func() bool { return serves("127.0.0.2:8080") })
		})
	}
}

func plainFile(t *testing.T, dir, content string) string {
	p := filepath.Join(dir, "qos.toml")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// configMap lays out a directory the way Kubernetes mounts a ConfigMap:
// qos.toml -> ..data/qos.toml, ..data -> ..2026_v1.
func configMap(t *testing.T, dir, content string) string {
	v1 := filepath.Join(dir, "..2026_v1")
	os.Mkdir(v1, 0o755)
	os.WriteFile(filepath.Join(v1, "qos.toml"), []byte(content), 0o644)
	if err := os.Symlink("..2026_v1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "qos.toml")
	if err := os.Symlink("..data/qos.toml", p); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeQuietly changes the table so that no watch on its directory sees
// it: through a hard link in another directory (inotify reports a child's
// change to the directory the path went through). That is what a file
// system without inotify (NFS) looks like; only SIGHUP can tell vhqos.
func writeQuietly(t *testing.T, path, content string) {
	t.Helper()
	link := filepath.Join(t.TempDir(), "qos-link.toml")
	if err := os.Link(path, link); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(link, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(content); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

const rollbackTable = `
[[vhost]]
name = "aaa"
match = ["127.0.0.2"]
cpu_max = "20%"

[[vhost]]
name = "zzz"
match = ["127.0.0.3"]
cpu_max = "100%"
`

// A table the kernel refuses half way leaves the old one fully in force:
// the change already written to aaa's cgroup is rolled back. The test
// makes the kernel refuse zzz, which comes after aaa: on cgroup v1 with a
// cap on vhqos's own cgroup below zzz's (v1 refuses a child's quota above
// its parent's), on v2 with no room for another cgroup under it
// (cgroup.max.descendants). (A device the machine lacks no longer serves:
// its limit is skipped with a warning.)
func TestReloadFailingHalfWayRollsBack(t *testing.T) {
	path := plainFile(t, t.TempDir(), strings.Replace(reloadBefore, "shop", "aaa", 1))
	a := startUnderVhqosFile(t, path, ApacheConfig{VHosts: []VHost{{Name: "aaa", Addr: "127.0.0.2:8080"}, {Name: "zzz", Addr: "127.0.0.3:8080"}}})
	pid := a.Cmd.Process.Pid
	top := cgroupDir(t, pid, "cpu", "")
	if cgroupV2() {
		stat, err := os.ReadFile(filepath.Join(top, "cgroup.stat"))
		if err != nil {
			t.Fatal(err)
		}
		var n int
		if _, err := fmt.Sscanf(string(stat), "nr_descendants %d", &n); err != nil {
			t.Fatalf("cgroup.stat %q: %v", stat, err)
		}
		if err := os.WriteFile(filepath.Join(top, "cgroup.max.descendants"), []byte(strconv.Itoa(n)), 0o644); err != nil {
			t.Fatal(err)
		}
	} else if err := os.WriteFile(filepath.Join(top, "cpu.cfs_quota_us"), []byte("60000"), 0o644); err != nil {
		t.Fatal(err)
	}
	writeByRename(t, path, rollbackTable)
	eventually(t, patience, "the failure reported", func() bool {
		return strings.Contains(a.Output(), "applying the QoS table failed")
	})
	if out := a.Output(); !strings.Contains(out, "setting the limits of zzz") {
		t.Errorf("the failure is not zzz's:\n%s", out)
	}
	if got := cpuQuota(t, pid, "vhost-aaa"); got != "50000" {
		t.Errorf("after the failed reload aaa's cap is %s, want the old 50000", got)
	}
	s := request(t, "127.0.0.3:8080", "/cgi-bin/whoami")
	if !strings.HasSuffix(s.cgroup, "/default") {
		t.Errorf("127.0.0.3 served in %q after the failed reload, want the defaults", s.cgroup)
	}
	// Tried once, not again for the rename's own events; SIGHUP tries again.
	if n := strings.Count(a.Output(), "applying the QoS table failed"); n != 1 {
		t.Errorf("the refused table was applied %d times, want once", n)
	}
	a.Cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, patience, "the table tried again on SIGHUP", func() bool {
		return strings.Count(a.Output(), "applying the QoS table failed") == 2
	})
	if got := cpuQuota(t, pid, "vhost-aaa"); got != "50000" {
		t.Errorf("after the second failed reload aaa's cap is %s, want the old 50000", got)
	}
}

// Reloads while wrk loads the server, with and without keep-alive, cost no
// connection and no request.
func TestReloadUnderLoad(t *testing.T) {
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Fatal("wrk is needed: apt-get install wrk")
	}
	path := plainFile(t, t.TempDir(), loadBefore)
	startUnderVhqosFile(t, path, ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: "127.0.0.2:8080"}, {Name: "blog", Addr: "127.0.0.3:8080"}}, Servers: 12})
	type run struct {
		out []byte
		err error
	}
	results := make(chan run, 2)
	for _, close := range []bool{true, false} {
		args := []string{"-t1", "-c4", "-d4s"}
		if close {
			args = append(args, "-H", "Connection: close")
		}
		go func() {
			out, err := exec.Command("wrk", append(args, "http://127.0.0.2:8080/index.html")...).CombinedOutput()
			results <- run{out, err}
		}()
	}
	for i := 0; i < 20; i++ {
		time.Sleep(150 * time.Millisecond)
		if i%2 == 0 {
			writeByRename(t, path, loadAfter)
		} else {
			writeByRename(t, path, loadBefore)
		}
	}
	bad := regexp.MustCompile(`Socket errors|Non-2xx`)
	for i := 0; i < 2; i++ {
		r := <-results
		if r.err != nil {
			t.Fatalf("wrk: %v\n%s", r.err, r.out)
		}
		if bad.Match(r.out) {
			t.Errorf("wrk saw errors during the reloads:\n%s", r.out)
		}
		if !strings.Contains(string(r.out), "requests in") {
			t.Errorf("wrk output: %s", r.out)
		}
	}
}

// serves reports whether a request to addr gets the whoami CGI's answer.
func serves(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /cgi-bin/whoami HTTP/1.0\r\nHost: itest\r\n\r\n")
	body, _ := io.ReadAll(c)
	return strings.Contains(string(body), "pid ")
}

// The load test changes limits, marks and the set of vhosts, but keeps the
// caps generous: a tight cap would slow the server down on purpose (in the
// VM's emulated CPU past wrk's timeout), which is QoS working, not a lost
// request.
const loadBefore = `
[[vhost]]
name = "shop"
match = ["127.0.0.2"]
cpu_max = "400%"
dscp = "EF"
`

const loadAfter = `
[[vhost]]
name = "shop"
match = ["127.0.0.2"]
cpu_max = "300%"
dscp = "AF41"

[[vhost]]
name = "blog"
match = ["127.0.0.3"]
dscp = "CS1"
`
