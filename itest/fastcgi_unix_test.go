package itest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// php-fpm pools on Unix-domain sockets, as Debian configures them
// (/run/php/php8.x-fpm.sock), under vhqos behind nginx: one pool shared by
// two name-based sites, decided by the FastCGI HTTP_HOST on that socket
// (the names' listen list names it), and one pool of its own, decided by
// a unix: rule on its socket's path alone.

// runUnixPHPFPM runs Debian's php-fpm under prefix with two static pools,
// "shared" (2 workers) and "own" (1 worker), on the sockets shared.sock and
// own.sock in its directory, serving whoami.php from its www. It returns
// once both pools listen.
func runUnixPHPFPM(t *testing.T, dir string, prefix []string) *Daemon {
	t.Helper()
	bin, err := phpFPMBinary()
	if err != nil {
		t.Fatal(err)
	}
	// The workers (www-data) read the script; nginx's workers (www-data)
	// connect to the sockets, given to www-data as Debian's www.conf does
	// (php-fpm's default owner is the master's user, root).
	if err := os.Mkdir(filepath.Join(dir, "www"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "www", "whoami.php"), []byte(whoamiPHP), 0o644); err != nil {
		t.Fatal(err)
	}
	var conf strings.Builder
	fmt.Fprintf(&conf, "[global]\npid = %[1]s/php-fpm.pid\nerror_log = %[1]s/php-fpm.log\ndaemonize = no\n", dir)
	for _, pool := range []struct {
		name    string
		workers int
	}{{"shared", 2}, {"own", 1}} {
		fmt.Fprintf(&conf, "\n[%[1]s]\nuser = www-data\ngroup = www-data\nlisten = %[2]s/%[1]s.sock\nlisten.owner = www-data\nlisten.group = www-data\nlisten.mode = 0660\npm = static\npm.max_children = %[3]d\n",
			pool.name, dir, pool.workers)
	}
	file := filepath.Join(dir, "php-fpm.conf")
	if err := os.WriteFile(file, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	// php-fpm binds its sockets before it forks the workers and logs this.
	return RunDaemon(t, DaemonConfig{
		Name: "php-fpm", Dir: dir, Prefix: prefix,
		Argv:     []string{bin, "--nodaemonize", "--fpm-config", file},
		ReadyLog: "php-fpm.log", ReadyText: "ready to handle connections",
		Logs: []string{"php-fpm.log"},
	})
}

func TestFastCGIUnixSockets(t *testing.T) {
	dir, err := scratchDir()
	if err != nil {
		t.Fatal(err)
	}
	shared, own := filepath.Join(dir, "shared.sock"), filepath.Join(dir, "own.sock")
	qos := fmt.Sprintf(`
[[vhost]]
name = "shop"
match = ["shop.example"]
listen = ["unix:%[1]s"]

[[vhost]]
name = "blog"
match = ["blog.example"]
listen = ["unix:%[1]s"]

[[vhost]]
name = "own"
match = ["unix:%[2]s"]
`, shared, own)
	fpm := runUnixPHPFPM(t, dir, wrapped(t, qos))
	checkCgroupsGone(t, fpm)
	vhqosPid := fpm.Cmd.Process.Pid

	// nginx natively in front: shop.example (the default server, so
	// other.example lands there too), blog.example and legacy.example (no
	// vhost has it) on the shared pool, own.example on the pool of its own.
	runNginxConf(t, nil, []string{frontAddr}, func(ndir string) string {
		var b strings.Builder
		b.WriteString(NginxHTTP(ndir))
		for _, site := range []struct{ name, sock string }{
			{"shop.example", shared}, {"blog.example", shared}, {"legacy.example", shared}, {"own.example", own},
		} {
			b.WriteString(NginxFastCGISite(frontAddr, site.name, filepath.Join(dir, "www"), "unix:"+site.sock))
		}
		b.WriteString("}\n")
		return b.String()
	})

	sites := []struct{ host, group string }{
		{"shop.example", "vhost-shop"},
		{"blog.example", "vhost-blog"},
		{"other.example", "vhost-shop"}, // no vhost has the name: shop's block's SERVER_NAME decides
		{"legacy.example", "default"},   // no vhost has the site, nor the shared socket
		{"own.example", "vhost-own"},    // its socket's path decides
	}
	workers := map[int]map[string]bool{} // worker -> the sites it served
	for round := 0; round < 4; round++ {
		for _, s := range sites {
			w := phpGet(t, s.host, "/whoami.php")
			if want := fmt.Sprintf("/vhqos.%d/%s", vhqosPid, s.group); !strings.HasSuffix(w.Cgroup(), want) {
				t.Errorf("%s: served by pid %d in cgroup %q, want …%s", s.host, w.PID, w.Cgroup(), want)
			}
			if w.host != s.host {
				t.Errorf("%s: the script got HTTP_HOST %q", s.host, w.host)
			}
			if workers[w.PID] == nil {
				workers[w.PID] = map[string]bool{}
			}
			workers[w.PID][s.host] = true
		}
	}
	t.Logf("workers and the sites they served: %v", workers)
}
