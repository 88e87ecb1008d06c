// Package systemd_test runs vhqos the way an operator does: installed
// from its Debian package, put over Debian's own units with `vhqos
// enable`, started, reloaded and stopped by systemd. It needs systemd as
// init, so it runs in the VM booted with systemd (`make test-vm-systemd`:
// vmrun -systemd, on an overlay of the host's root, so that installing
// and configuring change nothing on the host); anywhere else every test
// is skipped. VHQOS_DEB names the package to install.
package systemd_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vhqos/vhqos/status"
)

// within bounds every wait for something systemd or vhqos does: generous,
// since in emulation a fork and exec costs some fifty times what it does
// on the host.
const within = 3 * time.Minute

// requireSystemd skips the test unless systemd is init and this is a
// scratch system (the VM's overlay root): the tests install a package and
// change Apache's configuration.
func requireSystemd(t *testing.T) string {
	t.Helper()
	comm, _ := os.ReadFile("/proc/1/comm")
	if strings.TrimSpace(string(comm)) != "systemd" {
		t.Skip("needs systemd as init: make test-vm-systemd runs this in the VM")
	}
	if os.Getenv("VHQOS_VM_SYSTEMD") != "1" {
		t.Skip("runs only in the VM (VHQOS_VM_SYSTEMD=1): it installs a package and reconfigures Apache")
	}
	deb := os.Getenv("VHQOS_DEB")
	if deb == "" {
		t.Fatal("VHQOS_DEB must name the package to install (make test-vm-systemd sets it)")
	}
	return deb
}

// run runs a command and returns its output, failing the test if it fails.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// mayRun runs a command and returns its output and error.
func mayRun(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds, failing the test after within.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", within, what)
		}
	}
}

// show is one property of a unit (systemctl show).
func show(t *testing.T, unit, prop string) string {
	t.Helper()
	return strings.TrimSpace(run(t, "systemctl", "show", "-p", prop, "--value", unit))
}

// report waits for the vhqos at socket to answer with a supervisor.
func report(t *testing.T, socket string) *status.Report {
	t.Helper()
	var rep *status.Report
	waitFor(t, "vhqos status at "+socket, func() bool {
		r, err := status.Fetch(socket)
		if err == nil && r.SupervisorPID != 0 {
			rep = r
			return true
		}
		return false
	})
	return rep
}

// unitGone checks that a stopped unit left no process and no cgroup (its
// cgroup's path under /sys/fs/cgroup).
func unitGone(t *testing.T, unit, cgroup string, programs ...string) {
	t.Helper()
	if st := show(t, unit, "ActiveState"); st != "inactive" {
		t.Errorf("%s is %s after stop", unit, st)
	}
	if _, err := os.Stat("/sys/fs/cgroup" + cgroup); err == nil {
		left, _ := mayRun("find", "/sys/fs/cgroup"+cgroup, "-name", "cgroup.procs", "-exec", "cat", "{}", "+")
		t.Errorf("the cgroup of %s is still there after stop (processes: %q)", unit, left)
	}
	for _, p := range append(programs, "vhqos") {
		if out, err := mayRun("pgrep", "-a", "-x", p); err == nil {
			t.Errorf("%s still running after stopping %s:\n%s", p, unit, out)
		}
	}
}

// journalOnFailure logs the unit's state and the end of its journal
// when the test fails: what systemd and vhqos said about a wait that ran
// out.
func journalOnFailure(t *testing.T, unit string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		st, _ := mayRun("systemctl", "status", "--no-pager", "-n", "0", unit)
		journal, _ := mayRun("journalctl", "-u", unit, "--no-pager", "-n", "60")
		t.Logf("systemctl status %s:\n%s\njournal:\n%s", unit, st, journal)
	})
}

// restoreOnFailure writes content back to a table file a failed test
// left broken, so that the tests after it start their server.
func restoreOnFailure(t *testing.T, path, content string) {
	if t.Failed() {
		os.WriteFile(path, []byte(content), 0o644)
	}
}

// waitListening waits until a server accepts connections at addr:
// systemd says a Type=exec unit started once vhqos run is exec'd.
func waitListening(t *testing.T, network, addr string) {
	t.Helper()
	waitFor(t, addr+" listening", func() bool {
		c, err := net.DialTimeout(network, addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// cgroupLine is the cgroup v2 line of /proc/PID/cgroup.
var cgroupLine = regexp.MustCompile(`(?m)^0::(\S+)$`)

func get(t *testing.T, url string) string {
	t.Helper()
	return getHost(t, url, "")
}

// getHost is get with host in the Host header ("" for the URL's).
func getHost(t *testing.T, url, host string) string {
	t.Helper()
	// A connection per request: vhqos places the process that accepts a
	// connection, and Debian's Apache keeps connections alive.
	c := http.Client{Timeout: within, Transport: &http.Transport{DisableKeepAlives: true}}
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, body)
	}
	return string(body)
}

// servedIn asks the CGI where it ran: the cgroup of the process that
// served the request, which forked it.
func servedIn(t *testing.T, addr string) string {
	t.Helper()
	return servedAt(t, addr, "")
}

// servedAt is servedIn for a request naming host in its Host header (""
// for addr).
func servedAt(t *testing.T, addr, host string) string {
	t.Helper()
	m := cgroupLine.FindStringSubmatch(getHost(t, "http://"+addr+"/cgi-bin/cgroup", host))
	if m == nil {
		t.Fatalf("the CGI did not say its cgroup")
	}
	return m[1]
}

// TestUnderSystemd: the package installs; Debian's apache2 and
// php8.2-fpm units run under vhqos once enabled; systemd starts, reloads
// and stops them; a killed supervisor and a killed vhqos run are
// survived; disabling and removing the package leave the system as it
// was.
func TestUnderSystemd(t *testing.T) {
	deb := requireSystemd(t)
	run(t, "dpkg", "-i", deb)
	if out := run(t, "vhqos", "version"); !strings.HasPrefix(out, "vhqos ") {
		t.Fatalf("vhqos version: %q", out)
	}
	if !t.Run("apache2", testApache) {
		return
	}
	if !t.Run("php8.2-fpm", testPHPFPM) {
		return
	}
	if !t.Run("vhqos@web", testTemplate) {
		return
	}
	t.Run("remove and purge", func(t *testing.T) {
		os.Remove("/etc/vhqos/apache2.toml")
		run(t, "a2dissite", "-q", "vhqos-demo")
		os.Remove("/etc/vhqos/php.toml")
		os.Remove("/etc/vhqos/web.toml")
		os.Remove("/etc/vhqos/web.env")
		run(t, "dpkg", "-r", "vhqos")
		if _, err := os.Stat("/usr/sbin/vhqos"); err == nil {
			t.Error("/usr/sbin/vhqos is still there after dpkg -r")
		}
		if _, err := os.Stat("/etc/vhqos/qos.toml"); err != nil {
			t.Error("dpkg -r took the conffile /etc/vhqos/qos.toml")
		}
		run(t, "dpkg", "-P", "vhqos")
		if _, err := os.Stat("/etc/vhqos"); err == nil {
			t.Error("/etc/vhqos is still there after dpkg -P")
		}
		if out, err := mayRun("systemctl", "cat", "vhqos@.service"); err == nil {
			t.Errorf("systemd still knows vhqos@.service:\n%s", out)
		}
	})
}

// examples is where the package installs the demo: its table and its
// sites for Debian's Apache.
const examples = "/usr/share/doc/vhqos/examples"

// demoSites are the demo's vhosts (demo/qos.toml) and the address each is
// served on (demo/apache2-site.conf).
var demoSites = []struct{ vhost, addr string }{{"shop", "127.0.0.2:8080"}, {"blog", "127.0.0.3:8080"}, {"static", "127.0.0.4:8080"}}

// metricsAddr is where vhqos serves metrics under the apache2 unit.
const metricsAddr = "127.0.0.1:9464"

// shop is the demo site the lifecycle checks use.
const shop = "127.0.0.2:8080"

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// cgi prints the cgroup it runs in.
const cgi = "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\ncat /proc/self/cgroup\n"

// testApache runs the demo as the package ships it under Debian's
// apache2 unit, the way demo-apache2-site.conf says: its sites enabled,
// its table copied to /etc/vhqos (the reload checks edit the copy), then
// the unit's whole life under systemd; and the example table of
// /etc/vhqos/qos.toml as the package installs it.
func testApache(t *testing.T) {
	// Prefork, as hosting providers run it under vhqos: each child
	// serves one connection, in its vhost's cgroup, and forks its CGIs
	// there.
	run(t, "a2dismod", "-q", "mpm_event")
	run(t, "a2enmod", "-q", "mpm_prefork", "cgi")
	writeFile(t, "/usr/lib/cgi-bin/cgroup", cgi, 0o755)
	writeFile(t, "/etc/apache2/sites-available/vhqos-demo.conf", readFile(t, examples+"/demo-apache2-site.conf"), 0o644)
	run(t, "a2ensite", "-q", "vhqos-demo")
	demoTable := readFile(t, examples+"/demo.toml")
	writeFile(t, "/etc/vhqos/apache2.toml", demoTable, 0o644)
	// The options before the unit, as users type them too.
	run(t, "vhqos", "enable", "--config", "/etc/vhqos/apache2.toml", "--metrics-listen", metricsAddr, "apache2")
	run(t, "systemctl", "start", "apache2")
	const socket = "/run/vhqos/apache2.sock"
	for _, s := range demoSites {
		waitListening(t, "tcp", s.addr)
	}
	waitListening(t, "tcp", "127.0.0.1:80")
	rep := report(t, socket)
	main := show(t, "apache2", "MainPID")
	if main != strconv.Itoa(rep.KeeperPID) {
		t.Fatalf("the unit's main process is %s, not vhqos run (%d)", main, rep.KeeperPID)
	}
	base := "/system.slice/apache2.service/vhqos." + main
	for _, s := range demoSites {
		if got := servedIn(t, s.addr); got != base+"/vhost-"+s.vhost {
			t.Errorf("the demo's %s (%s) served in %s, want %s/vhost-%s", s.vhost, s.addr, got, base, s.vhost)
		}
	}
	// Debian's own site, which no vhost of the demo claims.
	if got := servedIn(t, "127.0.0.1:80"); got != base+"/default" {
		t.Errorf("127.0.0.1:80 served in %s, want %s/default", got, base)
	}
	if max, _ := os.ReadFile("/sys/fs/cgroup" + base + "/vhost-blog/cpu.max"); strings.TrimSpace(string(max)) != "50000 100000" {
		t.Errorf("vhost-blog's cpu.max is %q, want 50000 100000 (the demo's cpu_max = \"50%%\"; delegation)", max)
	}
	if w, _ := os.ReadFile("/sys/fs/cgroup" + base + "/vhost-shop/cpu.weight"); strings.TrimSpace(string(w)) != "800" {
		t.Errorf("vhost-shop's cpu.weight is %q, want 800", w)
	}
	// The demo sites log their requests (Apache writes the line once the
	// answer is out).
	waitFor(t, "the demo's sites in their access log", func() bool {
		log, _ := os.ReadFile("/var/log/apache2/vhqos-demo.log")
		return bytes.Contains(log, []byte("shop ")) && bytes.Contains(log, []byte("blog ")) && bytes.Contains(log, []byte("static "))
	})

	t.Run("reload", func(t *testing.T) {
		journalOnFailure(t, "apache2")
		before := report(t, socket)
		apache, _ := os.ReadFile("/run/apache2/apache2.pid")
		log0, _ := os.ReadFile("/var/log/apache2/error.log")
		run(t, "systemctl", "reload", "apache2")
		// vhqos reload waited for the table: it is in force already.
		after := report(t, socket)
		if after.Supervisor.Reloads != before.Supervisor.Reloads+1 {
			t.Errorf("reloads %d -> %d: the table was not re-read", before.Supervisor.Reloads, after.Supervisor.Reloads)
		}
		// Prefork says "AH00171: Graceful restart requested", event
		// "AH00493: SIGUSR1 received.  Doing graceful restart".
		waitFor(t, "Apache's graceful restart in its log", func() bool {
			log1, _ := os.ReadFile("/var/log/apache2/error.log")
			return bytes.Contains(log1[min(len(log0), len(log1)):], []byte("raceful restart"))
		})
		if again, _ := os.ReadFile("/run/apache2/apache2.pid"); !bytes.Equal(again, apache) {
			t.Errorf("Apache's pid went from %s to %s: restarted, not reloaded", apache, again)
		}
		if got := show(t, "apache2", "MainPID"); got != main {
			t.Errorf("main process %s after reload, was %s", got, main)
		}
		if got := servedIn(t, shop); got != base+"/vhost-shop" {
			t.Errorf("after reload, %s served in %s", shop, got)
		}
		// A table with a mistake: the table stays out, but the server's
		// own reload goes on (logrotate's and certbot's reloads keep
		// working).
		writeFile(t, "/etc/vhqos/apache2.toml", demoTable+"cpu_wieght = 3\n", 0o644)
		// A failure below must not leave the next restarts a broken table.
		defer restoreOnFailure(t, "/etc/vhqos/apache2.toml", demoTable)
		log0, _ = os.ReadFile("/var/log/apache2/error.log")
		if out, err := mayRun("systemctl", "reload", "apache2"); err != nil {
			t.Errorf("systemctl reload with a broken table failed: %v\n%s", err, out)
		}
		waitFor(t, "Apache's graceful restart in its log after a reload with a broken table", func() bool {
			log1, _ := os.ReadFile("/var/log/apache2/error.log")
			return bytes.Contains(log1[min(len(log0), len(log1)):], []byte("raceful restart"))
		})
		if again, _ := os.ReadFile("/run/apache2/apache2.pid"); !bytes.Equal(again, apache) {
			t.Errorf("Apache's pid went from %s to %s after a reload with a broken table", apache, again)
		}
		// What the alert VhqosReloadRefused fires on, for as long as
		// the file is broken.
		if !report(t, socket).TableRefused {
			t.Error("vhqos status does not say the table file is refused")
		}
		if scrape := get(t, "http://"+metricsAddr+"/metrics"); !strings.Contains(scrape, `vhqos_table_refused{path="/etc/vhqos/apache2.toml"} 1`) {
			t.Errorf("the metrics do not say the table file is refused:\n%s", scrape)
		}
		if journal, _ := mayRun("journalctl", "-u", "apache2", "--no-pager", "-n", "50"); !strings.Contains(journal, `cpu_wieght: unknown key; did you mean "cpu_weight"?`) {
			t.Errorf("the journal does not say what is wrong with the table:\n%s", journal)
		}
		if st := show(t, "apache2", "ActiveState"); st != "active" {
			t.Errorf("apache2 is %s after a refused reload", st)
		}
		writeFile(t, "/etc/vhqos/apache2.toml", demoTable, 0o644)
		run(t, "systemctl", "reload", "apache2")
		if report(t, socket).TableRefused {
			t.Error("vhqos status still says the table file is refused after it was fixed")
		}
	})

	t.Run("supervisor killed", func(t *testing.T) {
		before := report(t, socket)
		run(t, "kill", "-KILL", strconv.Itoa(before.SupervisorPID))
		waitFor(t, "a new supervisor", func() bool {
			r, err := status.Fetch(socket)
			return err == nil && r.SupervisorPID != 0 && r.SupervisorPID != before.SupervisorPID
		})
		after := report(t, socket)
		if after.SupervisorRestarts != before.SupervisorRestarts+1 {
			t.Errorf("restarts %d -> %d", before.SupervisorRestarts, after.SupervisorRestarts)
		}
		if st, pid := show(t, "apache2", "ActiveState"), show(t, "apache2", "MainPID"); st != "active" || pid != main {
			t.Errorf("apache2 is %s with main process %s, was active with %s", st, pid, main)
		}
		// Each Apache child the keeper let accept while no supervisor
		// ran serves that one connection where it sits (README, "The
		// supervisor crashes"); from its next accept on it is placed
		// again. Prefork starts 5 children and keeps at most 10 idle.
		var where []string
		for i := 0; i < 20; i++ {
			got := servedIn(t, shop)
			where = append(where, got)
			if got == base+"/vhost-shop" {
				break
			}
		}
		if where[len(where)-1] != base+"/vhost-shop" {
			t.Errorf("after the supervisor's restart, 20 requests to %s were served in %q, none in vhost-shop", shop, where)
			journal, _ := mayRun("journalctl", "-u", "apache2", "--no-pager", "-n", "80")
			st, _ := mayRun("vhqos", "status", "--socket", socket)
			procs, _ := mayRun("sh", "-c", "for p in $(pgrep -x apache2); do echo $p $(cat /proc/$p/cgroup) $(cat /proc/$p/wchan); done")
			t.Logf("journal:\n%s\nstatus:\n%s\napache2 processes:\n%s", journal, st, procs)
		}
		t.Logf("after the supervisor's restart, requests were served in %q", where)
	})

	t.Run("vhqos run killed", func(t *testing.T) {
		journalOnFailure(t, "apache2")
		// systemd's own kill of the main process: the reaper ends the
		// server, and Restart=on-abort starts the unit again.
		run(t, "systemctl", "kill", "-s", "KILL", "--kill-whom=main", "apache2")
		waitFor(t, "apache2 running again under a new vhqos", func() bool {
			r, err := status.Fetch(socket)
			return err == nil && r.SupervisorPID != 0 && strconv.Itoa(r.KeeperPID) != main &&
				show(t, "apache2", "ActiveState") == "active"
		})
		waitListening(t, "tcp", shop)
		main2 := show(t, "apache2", "MainPID")
		if got := servedIn(t, shop); got != "/system.slice/apache2.service/vhqos."+main2+"/vhost-shop" {
			t.Errorf("after the restart, %s served in %s (main process %s)", shop, got, main2)
		}
		if _, err := os.Stat("/sys/fs/cgroup" + base); err == nil {
			t.Errorf("the killed vhqos's cgroups %s are still there", base)
		}
	})

	t.Run("the example table", testExampleTable)

	t.Run("restart with a broken table", func(t *testing.T) {
		journalOnFailure(t, "apache2")
		// vhqos run would refuse the table and the server stay down; the
		// drop-in's ExecStartPre= (vhqos check) makes the restart itself
		// fail, with the mistake, instead of returning 0 first.
		const table = "/etc/vhqos/qos.toml"
		good := readFile(t, table)
		writeFile(t, table, good+"\n[[vhost]]\nname = \"broken\"\nmatch = [\"192.0.2.99\"]\ncpu_wieght = 3\n", 0o644)
		defer restoreOnFailure(t, table, good)
		if out, err := mayRun("systemctl", "restart", "apache2"); err == nil {
			t.Errorf("systemctl restart with a broken table succeeded:\n%s", out)
		}
		if st := show(t, "apache2", "ActiveState"); st != "failed" {
			t.Errorf("apache2 is %s after a restart with a broken table, want failed", st)
		}
		if journal, _ := mayRun("journalctl", "-u", "apache2", "--no-pager", "-n", "30"); !strings.Contains(journal, `cpu_wieght: unknown key; did you mean "cpu_weight"?`) {
			t.Errorf("the journal does not say what is wrong with the table:\n%s", journal)
		}
		if out, err := mayRun("pgrep", "-a", "-x", "apache2"); err == nil {
			t.Errorf("Apache runs after a failed restart:\n%s", out)
		}
		writeFile(t, table, good, 0o644)
		run(t, "systemctl", "start", "apache2")
		waitListening(t, "tcp", "127.0.0.1:80")
		report(t, "/run/vhqos/apache2.sock")
	})

	t.Run("stop", func(t *testing.T) {
		run(t, "systemctl", "stop", "apache2")
		unitGone(t, "apache2.service", "/system.slice/apache2.service", "apache2")
	})

	t.Run("disable", func(t *testing.T) {
		run(t, "vhqos", "disable", "apache2")
		if out := run(t, "systemctl", "cat", "apache2"); strings.Contains(out, "vhqos") {
			t.Errorf("apache2 still mentions vhqos:\n%s", out)
		}
	})
}

// testExampleTable puts Debian's Apache under /etc/vhqos/qos.toml as the
// package installs it, as its comment says to (vhqos enable apache2
// --config /etc/vhqos/qos.toml): its vhost www claims www.example.com by
// name, on Debian's default site. With metrics on: they work under
// systemd, and say that the file is in force.
func testExampleTable(t *testing.T) {
	const metrics = metricsAddr
	run(t, "vhqos", "enable", "apache2", "--config", "/etc/vhqos/qos.toml", "--metrics-listen", metrics)
	run(t, "systemctl", "restart", "apache2")
	waitListening(t, "tcp", "127.0.0.1:80")
	rep := report(t, "/run/vhqos/apache2.sock")
	if rep.Config != "/etc/vhqos/qos.toml" {
		t.Fatalf("vhqos runs with %s", rep.Config)
	}
	base := "/system.slice/apache2.service/vhqos." + strconv.Itoa(rep.KeeperPID)
	for host, want := range map[string]string{"www.example.com": "/vhost-www", "example.com": "/vhost-www", "localhost": "/default"} {
		if got := servedAt(t, "127.0.0.1:80", host); got != base+want {
			t.Errorf("Host %s served in %s, want %s%s", host, got, base, want)
		}
	}
	if max, _ := os.ReadFile("/sys/fs/cgroup" + base + "/vhost-www/cpu.max"); strings.TrimSpace(string(max)) != "100000 100000" {
		t.Errorf("vhost-www's cpu.max is %q, want 100000 100000 (cpu_max = \"100%%\")", max)
	}
	scrape := get(t, "http://"+metrics+"/metrics")
	for _, want := range []string{`vhqos_table_refused{path="/etc/vhqos/qos.toml"} 0`, `vhqos_connections_total{vhost="www"} `} {
		if !strings.Contains(scrape, want) {
			t.Errorf("the metrics lack %q:\n%s", want, scrape)
		}
	}
}

const phpTable = `
[[vhost]]
name = "shop"
match = ["shop.example"]
listen = ["unix:/run/php/php8.2-fpm.sock"]

[[vhost]]
name = "blog"
match = ["blog.example"]
listen = ["unix:/run/php/php8.2-fpm.sock"]
cpu_weight = 50
`

func testPHPFPM(t *testing.T) {
	writeFile(t, "/var/www/html/cgroup.php", "<?php echo file_get_contents('/proc/self/cgroup');\n", 0o644)
	writeFile(t, "/etc/vhqos/php.toml", phpTable, 0o644)
	run(t, "vhqos", "enable", "php8.2-fpm", "--config", "/etc/vhqos/php.toml")
	// Type=notify: start returns once php-fpm's READY=1 has come
	// through vhqos.
	run(t, "systemctl", "start", "php8.2-fpm")
	const socket = "/run/vhqos/php8.2-fpm.sock"
	rep := report(t, socket)
	main := show(t, "php8.2-fpm", "MainPID")
	if main != strconv.Itoa(rep.KeeperPID) {
		t.Fatalf("the unit's main process is %s, not vhqos run (%d): php-fpm's MAINPID= got through", main, rep.KeeperPID)
	}
	if st := show(t, "php8.2-fpm", "StatusText"); !strings.Contains(st, "Ready to handle connections") && !strings.Contains(st, "Processes active") {
		t.Errorf("php-fpm's STATUS= did not come through: StatusText=%q", st)
	}
	base := "/system.slice/php8.2-fpm.service/vhqos." + main
	for _, site := range []string{"shop", "blog"} {
		if got := fastCGIServedIn(t, site+".example"); got != base+"/vhost-"+site {
			t.Errorf("%s.example served in %s, want %s/vhost-%s", site, got, base, site)
		}
	}
	t.Run("reload", func(t *testing.T) {
		before := report(t, socket)
		run(t, "systemctl", "reload", "php8.2-fpm")
		if after := report(t, socket); after.Supervisor.Reloads != before.Supervisor.Reloads+1 {
			t.Errorf("reloads %d -> %d", before.Supervisor.Reloads, after.Supervisor.Reloads)
		}
		if got := show(t, "php8.2-fpm", "MainPID"); got != main {
			t.Errorf("main process %s after reload, was %s", got, main)
		}
		if got := fastCGIServedIn(t, "shop.example"); got != base+"/vhost-shop" {
			t.Errorf("after reload, shop.example served in %s", got)
		}
	})
	t.Run("stop", func(t *testing.T) {
		run(t, "systemctl", "stop", "php8.2-fpm")
		unitGone(t, "php8.2-fpm.service", "/system.slice/php8.2-fpm.service", "php-fpm8.2")
	})
	run(t, "vhqos", "disable", "php8.2-fpm")
}

// fastCGIServedIn asks php-fpm's pool, as a web server would for the
// site host, where cgroup.php ran.
func fastCGIServedIn(t *testing.T, host string) string {
	t.Helper()
	out, err := fastCGIGet("/run/php/php8.2-fpm.sock", map[string]string{
		"SCRIPT_FILENAME":   "/var/www/html/cgroup.php",
		"SCRIPT_NAME":       "/cgroup.php",
		"REQUEST_METHOD":    "GET",
		"SERVER_NAME":       host,
		"HTTP_HOST":         host,
		"SERVER_PROTOCOL":   "HTTP/1.1",
		"GATEWAY_INTERFACE": "CGI/1.1",
	})
	if err != nil {
		t.Fatalf("FastCGI request for %s: %v", host, err)
	}
	m := cgroupLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("cgroup.php did not say its cgroup:\n%s", out)
	}
	return m[1]
}

// fastCGIGet makes one FastCGI request (the FastCGI specification 1.0:
// BEGIN_REQUEST as a responder, PARAMS, an empty STDIN) and returns what
// came on STDOUT.
func fastCGIGet(socket string, params map[string]string) (string, error) {
	c, err := net.DialTimeout("unix", socket, within)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(within))
	record := func(typ byte, content []byte) []byte {
		h := []byte{1, typ, 0, 1, byte(len(content) >> 8), byte(len(content)), 0, 0}
		return append(h, content...)
	}
	length := func(n int) []byte {
		if n < 128 {
			return []byte{byte(n)}
		}
		return binary.BigEndian.AppendUint32(nil, uint32(n)|1<<31)
	}
	var p []byte
	for k, v := range params {
		p = append(append(append(append(p, length(len(k))...), length(len(v))...), k...), v...)
	}
	var req []byte
	req = append(req, record(1, []byte{0, 1, 0, 0, 0, 0, 0, 0})...) // BEGIN_REQUEST, responder
	req = append(req, record(4, p)...)                              // PARAMS
	req = append(req, record(4, nil)...)
	req = append(req, record(5, nil)...) // STDIN, empty
	if _, err := c.Write(req); err != nil {
		return "", err
	}
	var stdout bytes.Buffer
	for {
		var h [8]byte
		if _, err := io.ReadFull(c, h[:]); err != nil {
			return stdout.String(), fmt.Errorf("reading the answer: %w", err)
		}
		body := make([]byte, (int(h[4])<<8|int(h[5]))+int(h[6]))
		if _, err := io.ReadFull(c, body); err != nil {
			return stdout.String(), fmt.Errorf("reading the answer: %w", err)
		}
		switch h[1] {
		case 6: // STDOUT
			stdout.Write(body[:len(body)-int(h[6])])
		case 3: // END_REQUEST
			return stdout.String(), nil
		}
	}
}

// webEnv is what vhqos@web runs: socat, forking a child per connection
// that says which cgroup it was born in (track = "accept": in the class
// of the connection its parent accepted). SIGWINCH, which socat ignores,
// stands in for a server's reload signal.
const webEnv = `# vhqos@web
SERVER="socat TCP-LISTEN:8081,bind=127.0.0.1,fork,reuseaddr SYSTEM:'cat /proc/self/cgroup'"
RELOAD_SIGNAL=WINCH
`

const webTable = `
[[vhost]]
name = "web"
match = ["127.0.0.1:8081"]
`

// testTemplate runs a server without a unit of its own under the
// package's vhqos@.service.
func testTemplate(t *testing.T) {
	writeFile(t, "/etc/vhqos/web.env", webEnv, 0o644)
	writeFile(t, "/etc/vhqos/web.toml", webTable, 0o644)
	run(t, "systemctl", "start", "vhqos@web")
	waitListening(t, "tcp", "127.0.0.1:8081")
	const socket = "/run/vhqos/web.sock"
	rep := report(t, socket)
	main := show(t, "vhqos@web", "MainPID")
	if main != strconv.Itoa(rep.KeeperPID) {
		t.Fatalf("the unit's main process is %s, not vhqos run (%d)", main, rep.KeeperPID)
	}
	said := func() string {
		c, err := net.DialTimeout("tcp", "127.0.0.1:8081", within)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(within))
		out, _ := io.ReadAll(c)
		m := cgroupLine.FindStringSubmatch(string(out))
		if m == nil {
			t.Fatalf("socat's child said %q", out)
		}
		return m[1]
	}
	want := "/system.slice/system-vhqos.slice/vhqos@web.service/vhqos." + main + "/vhost-web"
	if got := said(); got != want {
		t.Errorf("served in %s, want %s", got, want)
	}
	before := report(t, socket)
	run(t, "systemctl", "reload", "vhqos@web")
	if after := report(t, socket); after.Supervisor.Reloads != before.Supervisor.Reloads+1 || show(t, "vhqos@web", "ActiveState") != "active" {
		t.Errorf("reload: reloads %d -> %d, unit %s", before.Supervisor.Reloads, after.Supervisor.Reloads, show(t, "vhqos@web", "ActiveState"))
	}
	run(t, "systemctl", "stop", "vhqos@web")
	unitGone(t, "vhqos@web.service", "/system.slice/system-vhqos.slice/vhqos@web.service", "socat")
}
