package itest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const reloadBefore = `
[[vhost]]
name = "shop"
match = ["127.0.0.2"]
cpu_max = "50%"
dscp = "EF"
`

const reloadAfter = `
[[vhost]]
name = "shop"
match = ["127.0.0.2"]
cpu_max = "20%"
dscp = "AF41"

[[vhost]]
name = "blog"
match = ["127.0.0.3"]
dscp = "CS1"
`

// cpuQuota reads a group's CPU cap in microseconds per 100 ms period, or
// "max"/-1 when it has none.
func cpuQuota(t *testing.T, vhqosPid int, group string) string {
	t.Helper()
	if cgroupV2() {
		data, err := os.ReadFile(filepath.Join(cgroupDir(t, vhqosPid, "", group), "cpu.max"))
		if err != nil {
			t.Fatal(err)
		}
		return strings.Fields(string(data))[0]
	}
	data, err := os.ReadFile(filepath.Join(cgroupDir(t, vhqosPid, "cpu", group), "cpu.cfs_quota_us"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

func eventually(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// writeByRename replaces the file the way vim, sed -i and Ansible do.
func writeByRename(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// The QoS table changes while Apache serves: limits change in place, new
// vhosts get their cgroups, new connections get the new marks; a broken or
// invalid table changes nothing and is reported; fixing it applies it.
func TestReload(t *testing.T) {
	capture, err := StartCapture()
	if err != nil {
		t.Fatal(err)
	}
	defer capture.Stop()
	qosFile := filepath.Join(t.TempDir(), "qos.toml")
	os.WriteFile(qosFile, []byte(reloadBefore), 0o644)
	a := startUnderVhqosFile(t, qosFile, ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: "127.0.0.2:8080"}, {Name: "blog", Addr: "127.0.0.3:8080"}}})
	pid := a.Cmd.Process.Pid
	client := func(s served) netip.AddrPort {
		return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), s.clientPort)
	}
	dscpOf := func(addr string) (map[int]int, served) {
		s := request(t, addr, "/cgi-bin/whoami")
		return capture.DSCP(addrPort(t, addr), client(s)), s
	}
	if got := cpuQuota(t, pid, "vhost-shop"); got != "50000" {
		t.Fatalf("cpu quota before the reload = %s, want 50000", got)
	}
	if d, _ := dscpOf("127.0.0.2:8080"); d[46] == 0 || len(d) != 1 {
		t.Fatalf("DSCP before the reload = %v, want 46", d)
	}
	if _, s := dscpOf("127.0.0.3:8080"); !strings.HasSuffix(s.cgroup, "/default") {
		t.Fatalf("127.0.0.3 before blog exists served in %q, want the defaults", s.cgroup)
	}

	start := time.Now()
	writeByRename(t, qosFile, reloadAfter)
	eventually(t, patience, "new cpu_max in the cgroup file", func() bool { return cpuQuota(t, pid, "vhost-shop") == "20000" })
	t.Logf("cgroup file changed %v after the rename", time.Since(start).Round(time.Millisecond))
	// The limits are written first; the marks and placements follow
	// before the reload is logged as done.
	eventually(t, patience, "the reload logged", func() bool { return reloadsLogged(a) == 1 })
	if d, _ := dscpOf("127.0.0.2:8080"); d[34] == 0 || len(d) != 1 {
		t.Errorf("DSCP after the reload = %v, want 34 (AF41)", d)
	}
	d, s := dscpOf("127.0.0.3:8080")
	if want := fmt.Sprintf("/vhqos.%d/vhost-blog", pid); !strings.HasSuffix(s.cgroup, want) || d[8] == 0 {
		t.Errorf("new vhost blog: served in %q with DSCP %v, want …%s and 8", s.cgroup, d, want)
	}

	for _, bad := range []struct{ name, content, says string }{
		{"syntax error", reloadAfter + "\ncpu_weight = = 3\n", "TOML syntax"},
		{"invalid value", strings.Replace(reloadAfter, `cpu_max = "20%"`, `cpu_max = "0%"`, 1), "out of range"},
		// Valid, but the seccomp filter cannot change under a running server.
		{"new tracking mode", "[settings]\ntrack = \"fork\"\n" + reloadAfter, "settings.track cannot change while vhqos runs"},
	} {
		os.WriteFile(qosFile, []byte(bad.content), 0o644) // in place
		eventually(t, patience, "the refusal of the "+bad.name+" logged", func() bool {
			return strings.Contains(a.Output(), bad.says)
		})
		if got := cpuQuota(t, pid, "vhost-shop"); got != "20000" {
			t.Errorf("after a table with a %s, cpu quota = %s, want the old 20000", bad.name, got)
		}
		if d, _ := dscpOf("127.0.0.2:8080"); d[34] == 0 || len(d) != 1 {
			t.Errorf("after a table with a %s, DSCP = %v, want the old 34", bad.name, d)
		}
	}

	// Fixing the file applies it: here, blog goes away again.
	writeByRename(t, qosFile, reloadBefore)
	eventually(t, patience, "cpu_max back to 50%", func() bool { return cpuQuota(t, pid, "vhost-shop") == "50000" })
	eventually(t, patience, "the second reload logged", func() bool { return reloadsLogged(a) == 2 })
	// The defaults have no DSCP: the listener gets its own mark back.
	if d, s := dscpOf("127.0.0.3:8080"); !strings.HasSuffix(s.cgroup, "/default") || d[0] == 0 || len(d) != 1 {
		t.Errorf("after blog was removed, 127.0.0.3 served in %q with DSCP %v, want the defaults and 0", s.cgroup, d)
	}
}

// reloadsLogged counts the reloads vhqos reported as done.
func reloadsLogged(a *Apache) int {
	return strings.Count(a.Output(), "reloaded QoS table")
}

// A keep-alive connection established before a reload carries the new
// DSCP on its next response, whether its vhost was found by address or by
// the Host name (which the table is asked again: the address alone would
// give the defaults).
func TestReloadRemarksEstablishedConnections(t *testing.T) {
	const byName = `
[[vhost]]
name = "shop"
match = ["shop.example"]
dscp = "%s"
`
	for _, tc := range []struct {
		name, before, after, host string
	}{
		{"address", reloadBefore, reloadAfter, "itest"},
		{"host name", fmt.Sprintf(byName, "EF"), fmt.Sprintf(byName, "AF41"), "shop.example"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			capture, err := StartCapture()
			if err != nil {
				t.Fatal(err)
			}
			defer capture.Stop()
			qosFile := filepath.Join(t.TempDir(), "qos.toml")
			os.WriteFile(qosFile, []byte(tc.before), 0o644)
			a := startUnderVhqosFile(t, qosFile, ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: "127.0.0.2:8080"}}})
			c, err := net.DialTimeout("tcp", "127.0.0.2:8080", patience)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			r := bufio.NewReader(c)
			get := func() {
				t.Helper()
				c.SetDeadline(time.Now().Add(patience))
				fmt.Fprintf(c, "GET /index.html HTTP/1.1\r\nHost: %s\r\n\r\n", tc.host)
				resp, err := http.ReadResponse(r, nil)
				if err != nil {
					t.Fatalf("keep-alive request: %v", err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			server := addrPort(t, "127.0.0.2:8080")
			client := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(c.LocalAddr().(*net.TCPAddr).Port))
			get()
			eventually(t, patience, "the first response seen with DSCP 46", func() bool { return capture.Last(server, client) == 46 })
			writeByRename(t, qosFile, tc.after)
			eventually(t, patience, "the reload logged", func() bool { return reloadsLogged(a) == 1 })
			get()
			eventually(t, patience, "the response after the reload carrying DSCP 34", func() bool { return capture.Last(server, client) == 34 })
		})
	}
}
