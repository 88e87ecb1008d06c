package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The units in testdata/systemd are Debian 12's, as its packages install
// them (testdata/systemd/README).

// apacheScript is the command vhqos enable gives Debian's Apache: what
// apachectl start runs, in the foreground and with exec, as systemd reads
// it ($$ is a literal $).
const apacheScript = `'. "$${APACHE_ENVVARS:-$${APACHE_CONFDIR:-/etc/apache2}/envvars}" || exit; $${APACHE_ULIMIT_MAX_FILES:-ulimit -n 8192}; exec $${APACHE_HTTPD:-/usr/sbin/apache2} -d "$${APACHE_CONFDIR:-/etc/apache2}" $${APACHE_ARGUMENTS} -DFOREGROUND'`

// testRoot makes a root directory with Debian's units in
// /usr/lib/systemd/system (and /lib linked to /usr/lib, as on a merged-/usr
// system), files at the given paths, and a good QoS table at
// /etc/vhqos/qos.toml.
func testRoot(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	lib := filepath.Join(root, "usr/lib/systemd/system")
	if err := os.MkdirAll(lib, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("usr/lib", filepath.Join(root, "lib")); err != nil {
		t.Fatal(err)
	}
	units, _ := filepath.Glob("testdata/systemd/*.service")
	for _, u := range units {
		data, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(lib, filepath.Base(u)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	all := map[string]string{"/etc/vhqos/qos.toml": "[[vhost]]\nname = \"shop\"\nmatch = [\"shop.example\"]\ncpu_weight = 400\n"}
	for p, data := range files {
		all[p] = data
	}
	for p, data := range all {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(data, "->") {
			if err := os.Symlink(strings.TrimPrefix(data, "->"), full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// TestEnable: vhqos enable on each of Debian's units, and on the cases
// it refuses; the unit as systemd then loads it (unit file and drop-ins),
// key by key.
func TestEnable(t *testing.T) {
	const (
		run    = "/usr/sbin/vhqos run --config /etc/vhqos/qos.toml --status-socket "
		reload = "-/usr/sbin/vhqos reload --socket "
		check  = "/usr/sbin/vhqos check /etc/vhqos/qos.toml"
	)
	for _, tc := range []struct {
		name   string
		unit   string
		files  map[string]string // more files in the root
		opts   enableOptions     // vhqos and config filled in when empty
		want   map[string][]string
		absent []string // keys the loaded unit must not have
		notes  []string // parts of what enable prints
		err    string   // part of the error; "" for none
	}{
		{
			name: "apache2: forking through apachectl",
			unit: "apache2",
			want: map[string][]string{
				"Type":         {"exec"},
				"ExecStartPre": {check, "/usr/sbin/apachectl configtest"},
				"ExecStart":    {run + "/run/vhqos/apache2.sock -- /bin/sh -c " + apacheScript},
				"ExecReload":   {reload + "/run/vhqos/apache2.sock", "/usr/sbin/apachectl graceful"},
				"ExecStop":     {"/usr/sbin/apachectl graceful-stop"},
				"KillMode":     {"mixed"},
				"Delegate":     {"yes"},
				// Added to the unit's own.
				"SuccessExitStatus": {"129 130 141 143"},
			},
			absent: []string{"PIDFile", "NotifyAccess"},
			notes:  []string{"Type=forking became Type=exec: Apache runs with -DFOREGROUND"},
		},
		{
			name: "an apache2@ instance: its own socket, the template's unit",
			unit: "apache2@www.service",
			want: map[string][]string{
				"Type":        {"exec"},
				"Environment": {"APACHE_CONFDIR=/etc/apache2-%i APACHE_STARTED_BY_SYSTEMD=true"},
				"ExecStart":   {run + "/run/vhqos/apache2@www.sock -- /bin/sh -c " + apacheScript},
				"ExecReload":  {reload + "/run/vhqos/apache2@www.sock", "/usr/sbin/apachectl graceful"},
			},
		},
		{
			name: "nginx: forking with daemon on, a PIDFile",
			unit: "nginx.service",
			want: map[string][]string{
				"Type":         {"exec"},
				"ExecStartPre": {"/usr/sbin/nginx -t -q -g 'daemon on; master_process on;'", check},
				"ExecStart":    {run + "/run/vhqos/nginx.sock -- /usr/sbin/nginx -g 'daemon off; master_process on;'"},
				"ExecReload":   {reload + "/run/vhqos/nginx.sock", "/usr/sbin/nginx -g 'daemon on; master_process on;' -s reload"},
				"ExecStop":     {"-/sbin/start-stop-daemon --quiet --stop --retry QUIT/5 --pidfile /run/nginx.pid"},
				"KillMode":     {"mixed"},
				"Delegate":     {"yes"},
			},
			absent: []string{"PIDFile"},
			notes:  []string{"nginx runs with daemon off"},
		},
		{
			name: "php8.2-fpm: notify, in the foreground already",
			unit: "php8.2-fpm",
			want: map[string][]string{
				"Type":          {"notify"},
				"ExecStart":     {run + "/run/vhqos/php8.2-fpm.sock -- /usr/sbin/php-fpm8.2 --nodaemonize --fpm-config /etc/php/8.2/fpm/php-fpm.conf"},
				"ExecReload":    {reload + "/run/vhqos/php8.2-fpm.sock", "/bin/kill -USR2 $MAINPID"},
				"ExecStartPost": {"-/usr/lib/php/php-fpm-socket-helper install /run/php/php-fpm.sock /etc/php/8.2/fpm/pool.d/www.conf 82"},
				"KillMode":      {"mixed"},
				"Delegate":      {"yes"},
			},
			absent: []string{"NotifyAccess"},
			notes:  []string{"Type=notify kept: vhqos passes the server's notifications (READY=1) on"},
		},
		{
			name: "lighttpd: simple, with a PIDFile",
			unit: "lighttpd",
			want: map[string][]string{
				"Type":       {"simple"},
				"ExecStart":  {run + "/run/vhqos/lighttpd.sock -- /usr/sbin/lighttpd -D -f /etc/lighttpd/lighttpd.conf"},
				"ExecReload": {reload + "/run/vhqos/lighttpd.sock", "/bin/kill -USR1 $MAINPID"},
			},
			absent: []string{"PIDFile"},
		},
		{
			name: "haproxy: notify, variables in ExecStart left to systemd",
			unit: "haproxy",
			want: map[string][]string{
				"Type":              {"notify"},
				"SuccessExitStatus": {"129 130 141 143"}, // and its own 143
				"ExecStart":         {run + "/run/vhqos/haproxy.sock -- /usr/sbin/haproxy -Ws -f $CONFIG -p $PIDFILE $EXTRAOPTS"},
				"ExecReload":        {reload + "/run/vhqos/haproxy.sock", "/usr/sbin/haproxy -Ws -f $CONFIG -c -q $EXTRAOPTS", "/bin/kill -USR2 $MAINPID"},
			},
		},
		{
			name:  "the operator's override is what is wrapped",
			unit:  "nginx",
			files: map[string]string{"/etc/systemd/system/nginx.service.d/override.conf": "[Service]\nExecStart=\nExecStart=/usr/sbin/nginx -c /etc/nginx/other.conf\n"},
			want: map[string][]string{
				"ExecStart": {run + "/run/vhqos/nginx.sock -- /usr/sbin/nginx -c /etc/nginx/other.conf -g 'daemon off;'"},
			},
		},
		{
			name:  "a -g without daemon gets it",
			unit:  "nginx",
			files: map[string]string{"/etc/systemd/system/nginx.service.d/override.conf": "[Service]\nExecStart=\nExecStart=/usr/sbin/nginx -g \"worker_processes 2;\"\n"},
			want: map[string][]string{
				"ExecStart": {run + "/run/vhqos/nginx.sock -- /usr/sbin/nginx -g 'worker_processes 2; daemon off;'"},
			},
		},
		{
			name: "enabling again starts from the unit without vhqos",
			unit: "php8.2-fpm",
			files: map[string]string{
				"/etc/systemd/system/php8.2-fpm.service.d/vhqos.conf": "[Service]\nExecStart=\nExecStart=/usr/sbin/vhqos run --config /etc/vhqos/old.toml -- /usr/sbin/php-fpm8.2 --nodaemonize\n",
			},
			want: map[string][]string{
				"ExecStart": {run + "/run/vhqos/php8.2-fpm.sock -- /usr/sbin/php-fpm8.2 --nodaemonize --fpm-config /etc/php/8.2/fpm/php-fpm.conf"},
			},
		},
		{
			name:  "ignore-failure prefix kept, on vhqos",
			unit:  "srv",
			files: map[string]string{"/etc/systemd/system/srv.service": "[Service]\nExecStart=-/usr/bin/srv --port 80\n"},
			want: map[string][]string{
				"ExecStart": {"-" + run + "/run/vhqos/srv.sock -- /usr/bin/srv --port 80"},
				// The check's failure must stop the start.
				"ExecStartPre": {check},
			},
		},
		{
			name:  "full privileges kept, on vhqos and its check",
			unit:  "srv",
			files: map[string]string{"/etc/systemd/system/srv.service": "[Service]\nUser=www-data\nExecStart=+/usr/bin/srv\n"},
			want: map[string][]string{
				"ExecStart":    {"+" + run + "/run/vhqos/srv.sock -- /usr/bin/srv"},
				"ExecStartPre": {"+" + check},
			},
		},
		{
			name: "a later drop-in's ExecReload= is its own, not copied into vhqos.conf",
			unit: "lighttpd",
			files: map[string]string{
				"/etc/systemd/system/lighttpd.service.d/zz-extra.conf": "[Service]\nExecReload=/usr/bin/logger reloaded\n",
			},
			want: map[string][]string{"ExecReload": {reload + "/run/vhqos/lighttpd.sock", "/bin/kill -USR1 $MAINPID", "/usr/bin/logger reloaded"}},
		},
		{
			name:  "a unit without ExecReload reloads the table",
			unit:  "srv",
			files: map[string]string{"/etc/systemd/system/srv.service": "[Service]\nExecStart=/usr/bin/srv\n"},
			want:  map[string][]string{"ExecReload": {reload + "/run/vhqos/srv.sock"}},
			notes: []string{"no ExecReload=: systemctl reload re-reads the QoS table only"},
		},
		{
			name:  "a continued line is one command",
			unit:  "srv",
			files: map[string]string{"/etc/systemd/system/srv.service": "[Service]\nExecStart=/usr/bin/srv \\\n  --port 80\n"},
			want:  map[string][]string{"ExecStart": {run + "/run/vhqos/srv.sock -- /usr/bin/srv --port 80"}},
		},
		{
			name:  "the server given after --, taken literally",
			unit:  "srv",
			files: map[string]string{"/etc/systemd/system/srv.service": "[Service]\nType=forking\nPIDFile=/run/srv.pid\nExecStart=/usr/bin/srv --daemon\n"},
			opts:  enableOptions{server: []string{"/usr/bin/srv", "--foreground", "--title", "50% of $HOME"}, statusSocket: "/run/my socket"},
			want: map[string][]string{
				"Type":      {"exec"},
				"ExecStart": {run + "'/run/my socket' -- /usr/bin/srv --foreground --title '50%% of $$HOME'"},
			},
			absent: []string{"PIDFile"},
		},
		{
			name:  "an alias is followed",
			unit:  "httpd",
			files: map[string]string{"/etc/systemd/system/httpd.service": "->/lib/systemd/system/apache2.service"},
			want:  map[string][]string{"ExecStartPre": {check, "/usr/sbin/apachectl configtest"}},
		},
		{
			name:  "metrics",
			unit:  "lighttpd",
			opts:  enableOptions{metricsListen: ":9464"},
			want:  map[string][]string{"ExecStart": {run + "/run/vhqos/lighttpd.sock --metrics-listen :9464 -- /usr/sbin/lighttpd -D -f /etc/lighttpd/lighttpd.conf"}},
			notes: nil,
		},
		{
			name:  "an unknown forking server",
			unit:  "srv",
			files: map[string]string{"/etc/systemd/system/srv.service": "[Service]\nType=forking\nExecStart=/usr/bin/srv --daemon\n"},
			err:   "srv.service is Type=forking: its ExecStart= (/usr/bin/srv --daemon) puts the server in the background, and vhqos run needs it in the foreground as its child; vhqos enable knows Apache (apachectl start) and nginx; for another server, name its command in the foreground after --",
		},
		{
			name:  "argv[0] of its own",
			unit:  "srv",
			files: map[string]string{"/etc/systemd/system/srv.service": "[Service]\nExecStart=@/usr/bin/srv srv-main\n"},
			err:   "gives the server its own argv[0] (the @ prefix)",
		},
		{
			name:  "oneshot",
			unit:  "srv",
			files: map[string]string{"/etc/systemd/system/srv.service": "[Service]\nType=oneshot\nExecStart=/usr/bin/true\n"},
			err:   "srv.service is Type=oneshot",
		},
		{
			name:  "masked",
			unit:  "nginx",
			files: map[string]string{"/etc/systemd/system/nginx.service": "->/dev/null"},
			err:   "nginx.service is masked",
		},
		{
			name: "no such unit",
			unit: "nope",
			err:  "no unit file for nope.service",
		},
		{
			name:  "already under vhqos by another drop-in",
			unit:  "lighttpd",
			files: map[string]string{"/etc/systemd/system/lighttpd.service.d/mine.conf": "[Service]\nExecStart=\nExecStart=/usr/local/bin/vhqos run -- /usr/sbin/lighttpd -D\n"},
			err:   "lighttpd.service already runs vhqos: the drop-in /etc/systemd/system/lighttpd.service.d/mine.conf sets ExecStart=/usr/local/bin/vhqos run -- /usr/sbin/lighttpd -D. It is not the one vhqos enable writes (vhqos.conf), so vhqos disable leaves it alone: take the ExecStart= lines out of it",
		},
		{
			name:  "an instance of a template that runs vhqos",
			unit:  "vhqos@web",
			files: map[string]string{"/usr/lib/systemd/system/vhqos@.service": "[Service]\nType=exec\nExecStart=/usr/sbin/vhqos run --config /etc/vhqos/%i.toml -- /bin/sh -c 'eval exec \"$$SERVER\"'\n"},
			err:   "vhqos@web.service already runs vhqos: its unit file /usr/lib/systemd/system/vhqos@.service has ExecStart=/usr/sbin/vhqos run",
		},
		{
			name:  "unbalanced quotes",
			unit:  "srv",
			files: map[string]string{"/etc/systemd/system/srv.service": "[Service]\nExecStart=/usr/bin/srv 'oops\n"},
			err:   "unbalanced ' quote",
		},
		{
			name:  "a table with mistakes",
			unit:  "nginx",
			files: map[string]string{"/etc/vhqos/qos.toml": "[defaults]\ncpu_wieght = 3\n"},
			err:   `the QoS table has mistakes; vhqos run would refuse it:` + "\n" + `/etc/vhqos/qos.toml:2:1: [defaults] cpu_wieght: unknown key; did you mean "cpu_weight"?`,
		},
		{
			name: "no table",
			unit: "nginx",
			opts: enableOptions{config: "/etc/vhqos/nginx.toml"},
			err:  "the QoS table /etc/vhqos/nginx.toml does not exist",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := testRoot(t, tc.files)
			o := tc.opts
			if o.config == "" {
				o.config = "/etc/vhqos/qos.toml"
			}
			o.vhqos = "/usr/sbin/vhqos"
			name, err := unitName(tc.unit)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			err = enable(root, name, o, &out, io.Discard)
			dst := dropInPath(root, name)
			if tc.err != "" {
				// Paths in the root, as on the system it stands for.
				if err == nil || !strings.Contains(strings.ReplaceAll(err.Error(), root, ""), tc.err) {
					t.Fatalf("err = %v\nwant one saying %q", err, tc.err)
				}
				if data, err := os.ReadFile(dst); err == nil && !strings.Contains(string(data), "/etc/vhqos/old.toml") {
					t.Errorf("a drop-in was written anyway:\n%s", data)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range tc.notes {
				if !strings.Contains(out.String(), n) {
					t.Errorf("enable said\n%s\nwithout %q", out.String(), n)
				}
			}
			u, err := loadUnit(root, name, "")
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(u.files, dst) {
				t.Fatalf("the drop-in %s is not among the unit's files %q", dst, u.files)
			}
			text, _ := os.ReadFile(dst)
			for k, want := range tc.want {
				got := u.service[k]
				if !strings.HasPrefix(k, "Exec") && k != "Environment" {
					got = []string{u.last(k)} // a single value: the last counts
				}
				if !slices.Equal(got, want) {
					t.Errorf("%s = %q\nwant %q\ndrop-in:\n%s", k, got, want, text)
				}
			}
			for _, k := range tc.absent {
				if v, ok := u.service[k]; ok {
					t.Errorf("%s = %q, want it unset\ndrop-in:\n%s", k, v, text)
				}
			}
		})
	}
}

// TestEnableSystemdReadsTheDropIn: systemd's own parser (systemd-analyze
// verify on the root) finds nothing wrong in the drop-ins for Debian's
// units: no unknown key, no bad quoting, no invalid value.
func TestEnableSystemdReadsTheDropIn(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze not found: apt-get install systemd (.ci/deps installs it)")
	}
	for _, unit := range []string{"apache2.service", "apache2@www.service", "nginx.service", "php8.2-fpm.service", "lighttpd.service", "haproxy.service"} {
		t.Run(unit, func(t *testing.T) {
			root := testRoot(t, nil)
			var out bytes.Buffer
			if err := enable(root, unit, enableOptions{config: "/etc/vhqos/qos.toml", vhqos: "/usr/sbin/vhqos"}, &out, io.Discard); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(analyze, "verify", "--root="+root, unit)
			// At debug level it dumps the unit it loaded, drop-ins named.
			cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=debug")
			said, _ := cmd.CombinedOutput()
			if want := "DropIn Path: " + dropInPath(root, unit); !strings.Contains(string(said), want) {
				t.Fatalf("systemd-analyze verify did not load the drop-in (no %q):\n%s", want, said)
			}
			// The root has no targets, no programs and no man pages:
			// those complaints are the root's, not the drop-in's.
			for _, line := range strings.Split(string(said), "\n") {
				for _, bad := range []string{"Unbalanced", "nvalid", "Failed to parse", "Unknown key", "Unknown section", "ignoring"} {
					if strings.Contains(line, bad) && !strings.Contains(line, "$container") {
						t.Errorf("systemd-analyze verify: %s", line)
					}
				}
			}
		})
	}
}

// TestDisable: disable removes the drop-in, and its directory unless the
// operator's own drop-ins are there too; the unit is then what it was.
func TestDisable(t *testing.T) {
	for _, tc := range []struct {
		name    string
		files   map[string]string
		enabled bool
		keepDir bool
		says    string
	}{
		{name: "enabled", enabled: true, says: "removed /etc/systemd/system/nginx.service.d/vhqos.conf"},
		{name: "with an override beside", enabled: true, keepDir: true,
			files: map[string]string{"/etc/systemd/system/nginx.service.d/override.conf": "[Service]\nTimeoutStopSec=10\n"}, says: "removed"},
		{name: "not enabled", says: "vhqos is not enabled for nginx.service"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := testRoot(t, tc.files)
			before, err := loadUnit(root, "nginx.service", "")
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if tc.enabled {
				if err := enable(root, "nginx.service", enableOptions{config: "/etc/vhqos/qos.toml", vhqos: "/usr/sbin/vhqos"}, &out, io.Discard); err != nil {
					t.Fatal(err)
				}
			}
			out.Reset()
			if err := disable(root, "nginx.service", &out); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), tc.says) {
				t.Errorf("disable said %q, want %q", out.String(), tc.says)
			}
			dst := dropInPath(root, "nginx.service")
			if _, err := os.Stat(dst); err == nil {
				t.Errorf("%s is still there", dst)
			}
			if _, err := os.Stat(filepath.Dir(dst)); (err == nil) != tc.keepDir {
				t.Errorf("drop-in directory there: %v, want %v", err == nil, tc.keepDir)
			}
			after, err := loadUnit(root, "nginx.service", "")
			if err != nil {
				t.Fatal(err)
			}
			if !equalSettings(before.service, after.service) {
				t.Errorf("the unit after disable is\n%q\nnot as before\n%q", after.service, before.service)
			}
		})
	}
}

func equalSettings(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// TestEnableWarnsOfLaterDropIns: a drop-in systemd applies after
// vhqos.conf and that sets what it sets would silently win; enable says
// so, naming the file and the keys. One that sorts before it, or sets
// other keys, is no reason for a word.
func TestEnableWarnsOfLaterDropIns(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		warn  string
		// lacks is a line the drop-in must not have.
		lacks string
	}{
		{name: "ExecStart after", files: map[string]string{"/etc/systemd/system/nginx.service.d/zz-local.conf": "[Service]\nExecStart=\nExecStart=/usr/sbin/nginx -g 'daemon off;'\n"},
			warn: "/etc/systemd/system/nginx.service.d/zz-local.conf comes after vhqos.conf and sets ExecStart=, which vhqos.conf sets too: systemd takes its settings"},
		// nginx's unit has KillMode=mixed, which the drop-in leaves as it
		// is: a later KillMode= is not one vhqos.conf sets, but one vhqos
		// needs.
		{name: "Type and KillMode after, in /run", files: map[string]string{"/run/systemd/system/nginx.service.d/zz.conf": "[Service]\nType=forking\nKillMode=control-group\nNice=3\n"},
			warn:  "/run/systemd/system/nginx.service.d/zz.conf comes after vhqos.conf and sets Type=, which vhqos.conf sets too, and KillMode=, which vhqos needs to be mixed (the unit's own KillMode=): systemd takes its settings",
			lacks: "KillMode="},
		{name: "before", files: map[string]string{"/etc/systemd/system/nginx.service.d/override.conf": "[Service]\nExecStart=\nExecStart=/usr/sbin/nginx -g 'daemon on;'\n"}},
		{name: "other keys after", files: map[string]string{"/etc/systemd/system/nginx.service.d/zz-limits.conf": "[Service]\nLimitNOFILE=65536\n[Unit]\nDescription=x\n"}},
		{name: "the same values after", files: map[string]string{"/etc/systemd/system/nginx.service.d/zz-same.conf": "[Service]\nKillMode=mixed\nDelegate=yes\nType=exec\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := testRoot(t, tc.files)
			var out, warnings bytes.Buffer
			if err := enable(root, "nginx.service", enableOptions{config: "/etc/vhqos/qos.toml", vhqos: "/usr/sbin/vhqos"}, &out, &warnings); err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.warn == "" && warnings.Len() > 0:
				t.Errorf("warned:\n%s", warnings.String())
			case tc.warn != "" && !strings.Contains(warnings.String(), "vhqos enable: warning: "+tc.warn):
				t.Errorf("warned %q, want %q", warnings.String(), tc.warn)
			}
			text, err := os.ReadFile(dropInPath(root, "nginx.service"))
			if err != nil {
				t.Fatal(err)
			}
			if tc.lacks != "" && regexp.MustCompile(`(?m)^`+tc.lacks).Match(text) {
				t.Errorf("the drop-in sets %s, which the unit has as vhqos needs it:\n%s", tc.lacks, text)
			}
		})
	}
}

// TestEnableCommandLine: the command line, as an operator types it.
func TestEnableCommandLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"enable"}, 2, "name the unit, e.g. vhqos enable apache2.service"},
		{[]string{"enable", "--config", "/x"}, 2, "name the unit"},
		{[]string{"enable", "--bogus", "nginx"}, 2, "unknown option --bogus; see 'vhqos help enable'"},
		{[]string{"enable", "nginx", "--config"}, 2, "a value is missing after --config"},
		{[]string{"enable", "apache2.socket"}, 2, "apache2.socket is not a service"},
		{[]string{"enable", "apache2@.service"}, 2, "apache2@.service is a template"},
		{[]string{"enable", "a/b"}, 2, "is not a unit name"},
		{[]string{"enable", "nginx", "extra"}, 2, `unexpected "extra"`},
		{[]string{"enable", "nginx", "--", "nginx", "-g", "daemon off;"}, 2, "must start with an absolute path"},
		{[]string{"disable"}, 2, "name the unit"},
		{[]string{"disable", "nginx", "more"}, 2, `unexpected "more"`},
		{[]string{"reload", "x"}, 2, `unexpected "x"`},
		{[]string{"reload", "--socket", "/nonexistent/vhqos.sock"}, 3, "vhqos reload: no vhqos is running"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"vhqos"}, tc.args...), &stdout, &stderr)
			if code != tc.code || !strings.Contains(stderr.String(), tc.says) {
				t.Errorf("exit %d, said %q; want %d saying %q", code, stderr.String(), tc.code, tc.says)
			}
		})
	}
	t.Run("enable and disable with --root", func(t *testing.T) {
		root := testRoot(t, nil)
		// The system under root has the package installed.
		if err := os.MkdirAll(filepath.Join(root, "usr/sbin"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "usr/sbin/vhqos"), nil, 0o755); err != nil {
			t.Fatal(err)
		}
		// Options before the unit, as users type them too: the same
		// drop-in.
		var stdout, stderr bytes.Buffer
		if code := run([]string{"vhqos", "enable", "--root", root, "--config", "/etc/vhqos/qos.toml", "nginx"}, &stdout, &stderr); code != 0 {
			t.Fatalf("enable with the options first: exit %d: %s", code, stderr.String())
		}
		first, err := os.ReadFile(filepath.Join(root, "etc/systemd/system/nginx.service.d/vhqos.conf"))
		if err != nil {
			t.Fatal(err)
		}
		stdout.Reset()
		if code := run([]string{"vhqos", "enable", "nginx", "--root", root, "--config", "/etc/vhqos/qos.toml"}, &stdout, &stderr); code != 0 {
			t.Fatalf("enable: exit %d: %s", code, stderr.String())
		}
		dropIn, err := os.ReadFile(filepath.Join(root, "etc/systemd/system/nginx.service.d/vhqos.conf"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first, dropIn) {
			t.Errorf("the options' order changed the drop-in:\n%s\nversus\n%s", first, dropIn)
		}
		if !strings.Contains(string(dropIn), "ExecStart=/usr/sbin/vhqos run") {
			t.Errorf("the drop-in for an image names vhqos otherwise than as the image has it:\n%s", dropIn)
		}
		for _, want := range []string{"wrote /etc/systemd/system/nginx.service.d/vhqos.conf", "--root: systemd reads the change when the system under", "systemctl restart nginx", "vhqos status --socket /run/vhqos/nginx.sock"} {
			if !strings.Contains(stdout.String(), want) {
				t.Errorf("enable said\n%s\nwithout %q", stdout.String(), want)
			}
		}
		stdout.Reset()
		if code := run([]string{"vhqos", "disable", "nginx.service", "--root", root}, &stdout, &stderr); code != 0 {
			t.Fatalf("disable: exit %d: %s", code, stderr.String())
		}
		if _, err := os.Stat(filepath.Join(root, "etc/systemd/system/nginx.service.d")); err == nil {
			t.Error("the drop-in directory is still there")
		}
	})
}

func TestSplitCommand(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []word
		err  string
	}{
		{in: "/usr/sbin/nginx -g 'daemon on; master_process on;'", want: []word{
			{"/usr/sbin/nginx", "/usr/sbin/nginx"}, {"-g", "-g"}, {"'daemon on; master_process on;'", "daemon on; master_process on;"}}},
		{in: `  a "b c"d\ e  `, want: []word{{"a", "a"}, {`"b c"d\ e`, "b cd e"}}},
		{in: `x "say \"hi\"" \n`, want: []word{{"x", "x"}, {`"say \"hi\""`, `say "hi"`}, {`\n`, "\n"}}},
		{in: "-/bin/kill -USR2 $MAINPID", want: []word{{"-/bin/kill", "-/bin/kill"}, {"-USR2", "-USR2"}, {"$MAINPID", "$MAINPID"}}},
		{in: "", want: nil},
		{in: `a "b`, err: `unbalanced " quote`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := splitCommand(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestQuoteWord: what quoteWord writes, systemd's splitting (as
// splitCommand does it) gives back.
func TestQuoteWord(t *testing.T) {
	for _, s := range []string{"plain", "", "two words", "daemon off;", `it's`, `back\slash`, `"quoted"`, "tab\there", "new\nline", "; alone"} {
		q := quoteWord(s)
		ws, err := splitCommand("x " + q)
		if err != nil || len(ws) != 2 || ws[1].value != s {
			t.Errorf("quoteWord(%q) = %s, read back as %q, %v", s, q, ws, err)
		}
	}
}

// With --root the drop-in names vhqos as it is inside that system: a
// path of the system that ran enable means nothing when the image boots.
func TestBinaryInRoot(t *testing.T) {
	withPackage := t.TempDir()
	if err := os.MkdirAll(filepath.Join(withPackage, "usr/sbin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(withPackage, "usr/sbin/vhqos"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	bare := t.TempDir()
	for _, tc := range []struct {
		name, root, self, want, err string
	}{
		{"no root", "", "/usr/local/bin/vhqos", "/usr/local/bin/vhqos", ""},
		{"root /", "/", "/usr/sbin/vhqos", "/usr/sbin/vhqos", ""},
		{"the image's own binary", withPackage, filepath.Join(withPackage, "usr/sbin/vhqos"), "/usr/sbin/vhqos", ""},
		{"a binary outside, the package inside", withPackage, "/work/build/vhqos", "/usr/sbin/vhqos", ""},
		{"a binary outside, nothing inside", bare, "/work/build/vhqos", "", "install vhqos in that system"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := binaryInRoot(tc.root, tc.self)
			if got != tc.want || (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
				t.Errorf("binaryInRoot(%q, %q) = %q, %v; want %q, an error with %q", tc.root, tc.self, got, err, tc.want, tc.err)
			}
		})
	}
}
