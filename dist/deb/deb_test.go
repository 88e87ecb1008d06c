// Package deb_test checks the Debian package `make deb` builds: what it
// holds, its control fields, what lintian says, and that it installs and
// removes cleanly. `make test-deb` runs it with VHQOS_DEB naming the
// package; without it every test is skipped.
package deb_test

import (
	"bytes"
	"compress/gzip"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// debFile is the package under test.
func debFile(t *testing.T) string {
	t.Helper()
	p := os.Getenv("VHQOS_DEB")
	if p == "" {
		t.Skip("make test-deb runs these on the package it builds (VHQOS_DEB)")
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(abs); err != nil {
		t.Fatalf("VHQOS_DEB: %v", err)
	}
	return abs
}

// output runs a command and returns its stdout, failing the test (with
// stderr) if it fails.
func output(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// extract unpacks the package's files into a new directory.
func extract(t *testing.T, deb string) string {
	t.Helper()
	dir := t.TempDir()
	output(t, "dpkg-deb", "-x", deb, dir)
	return dir
}

// TestContents: exactly these files, with these modes, owned by root.
func TestContents(t *testing.T) {
	deb := debFile(t)
	want := map[string]string{
		"./usr/sbin/vhqos":                               "-rwxr-xr-x",
		"./lib/systemd/system/vhqos@.service":            "-rw-r--r--",
		"./etc/vhqos/qos.toml":                           "-rw-r--r--",
		"./usr/share/man/man8/vhqos.8.gz":                "-rw-r--r--",
		"./usr/share/man/man5/vhqos-qos.toml.5.gz":       "-rw-r--r--",
		"./usr/share/bash-completion/completions/vhqos":  "-rw-r--r--",
		"./usr/share/doc/vhqos/copyright":                "-rw-r--r--",
		"./usr/share/doc/vhqos/changelog.Debian.gz":      "-rw-r--r--",
		"./usr/share/lintian/overrides/vhqos":            "-rw-r--r--",
		"./usr/share/vhqos/prometheus/vhqos-rules.yml":   "-rw-r--r--",
		"./usr/share/vhqos/grafana/vhqos-dashboard.json": "-rw-r--r--",
		// What the man pages send their reader to.
		"./usr/share/doc/vhqos/README.md.gz":                    "-rw-r--r--",
		"./usr/share/doc/vhqos/benchmarks.md.gz":                "-rw-r--r--",
		"./usr/share/doc/vhqos/design-notes.md.gz":              "-rw-r--r--",
		"./usr/share/doc/vhqos/examples/example.toml":           "-rw-r--r--",
		"./usr/share/doc/vhqos/examples/demo.toml":              "-rw-r--r--",
		"./usr/share/doc/vhqos/examples/demo-apache2-site.conf": "-rw-r--r--",
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(output(t, "dpkg-deb", "-c", deb)), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			t.Fatalf("dpkg-deb -c: cannot read %q", line)
		}
		mode, owner, path := f[0], f[1], f[5]
		if owner != "root/root" && owner != "0/0" {
			t.Errorf("%s is owned by %s", path, owner)
		}
		if strings.HasPrefix(mode, "d") {
			continue
		}
		got[path] = mode
	}
	for p, mode := range want {
		if got[p] != mode {
			t.Errorf("%s: mode %q, want %q", p, got[p], mode)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("unexpected file %s", p)
		}
	}
}

// TestControl: the control fields, the conffile, and Depends as
// dpkg-shlibdeps computes it for the binary packaged.
func TestControl(t *testing.T) {
	deb := debFile(t)
	fields := map[string]string{}
	for _, line := range strings.Split(output(t, "dpkg-deb", "-f", deb, "Package", "Version", "Architecture", "Section", "Priority", "Maintainer", "Depends"), "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok {
			fields[k] = v
		}
	}
	for k, want := range map[string]string{"Package": "vhqos", "Architecture": "amd64", "Section": "admin", "Priority": "optional"} {
		if fields[k] != want {
			t.Errorf("%s: %q, want %q", k, fields[k], want)
		}
	}
	if !strings.Contains(filepath.Base(deb), "_"+fields["Version"]+"_") {
		t.Errorf("Version %q is not the one in the file name %s", fields["Version"], filepath.Base(deb))
	}
	if fields["Maintainer"] == "" {
		t.Error("no Maintainer")
	}
	if conf := strings.TrimSpace(output(t, "dpkg-deb", "-I", deb, "conffiles")); conf != "/etc/vhqos/qos.toml" {
		t.Errorf("conffiles: %q, want /etc/vhqos/qos.toml", conf)
	}
	// dpkg-shlibdeps wants a source tree; a minimal one will do.
	dir := extract(t, deb)
	os.MkdirAll(filepath.Join(dir, "debian"), 0o755)
	os.WriteFile(filepath.Join(dir, "debian", "control"), []byte("Source: vhqos\n\nPackage: vhqos\nArchitecture: amd64\n"), 0o644)
	cmd := exec.Command("dpkg-shlibdeps", "-O", "usr/sbin/vhqos")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dpkg-shlibdeps (apt-get install dpkg-dev): %v", err)
	}
	shlibs := strings.TrimPrefix(strings.TrimSpace(string(out)), "shlibs:Depends=")
	if fields["Depends"] != shlibs {
		t.Errorf("Depends: %q, but dpkg-shlibdeps says %q: update depends in dist/deb/nfpm.yaml", fields["Depends"], shlibs)
	}
}

// TestLintian: no error from lintian; its warnings are logged.
func TestLintian(t *testing.T) {
	deb := debFile(t)
	if _, err := exec.LookPath("lintian"); err != nil {
		t.Fatal("lintian not found: apt-get install lintian (.ci/deps installs it)")
	}
	out, _ := exec.Command("lintian", "--pedantic", deb).CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, "E:"):
			t.Error(line)
		case strings.HasPrefix(line, "W:"), strings.HasPrefix(line, "I:"), strings.HasPrefix(line, "P:"):
			t.Log(line)
		}
	}
}

// TestManPages: both pages are compressed as Debian wants them (gzip -9n:
// no file name, no date) and man formats them without a warning.
func TestManPages(t *testing.T) {
	dir := extract(t, debFile(t))
	for _, page := range []string{"usr/share/man/man8/vhqos.8.gz", "usr/share/man/man5/vhqos-qos.toml.5.gz"} {
		t.Run(filepath.Base(page), func(t *testing.T) {
			f, err := os.Open(filepath.Join(dir, page))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			z, err := gzip.NewReader(f)
			if err != nil {
				t.Fatal(err)
			}
			if z.Name != "" || !z.ModTime.IsZero() {
				t.Errorf("gzip header has name %q, time %v; want neither (gzip -n)", z.Name, z.ModTime)
			}
			cmd := exec.Command("man", "--warnings", "-l", filepath.Join(dir, page))
			cmd.Env = append(os.Environ(), "MANWIDTH=80", "MANPAGER=cat", "LANG=C.UTF-8")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil || stderr.Len() > 0 {
				t.Errorf("man -l: %v\n%s", err, stderr.String())
			}
			if !regexp.MustCompile(`(?m)^NAME\n +vhqos`).MatchString(stdout.String()) {
				t.Errorf("no NAME section:\n%.500s", stdout.String())
			}
		})
	}
}

// TestBashCompletion: the packaged completion, loaded as bash-completion
// loads it, completes commands, options and values.
func TestBashCompletion(t *testing.T) {
	dir := extract(t, debFile(t))
	const lib = "/usr/share/bash-completion/bash_completion"
	if _, err := os.Stat(lib); err != nil {
		t.Fatal("bash-completion is not installed: apt-get install bash-completion (.ci/deps installs it)")
	}
	// A system with apache2 (and an instance of its template) and nginx,
	// nginx under vhqos and apache2 with an override of its own.
	const systemctl = `systemctl() {
		case $1 in
		list-unit-files) printf '%s\n' 'apache2.service enabled enabled' 'apache2@.service disabled enabled' 'nginx.service enabled enabled' 'vhqos@.service indirect enabled' ;;
		list-units) printf '%s\n' 'apache2@www.service loaded active running The Apache HTTP Server' 'nginx.service loaded active running nginx' ;;
		esac
	}
	`
	root := t.TempDir()
	for _, f := range []string{"etc/systemd/system/nginx.service.d/vhqos.conf", "etc/systemd/system/apache2.service.d/override.conf"} {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, f), []byte("[Service]\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ line, want string }{
		{"vhqos en", "enable"},
		// Services and instances to enable, not templates; to disable,
		// only the units with vhqos's drop-in.
		{"vhqos enable ", "apache2.service apache2@www.service nginx.service"},
		{"vhqos enable --config /etc/vhqos/qos.toml ap", "apache2.service apache2@www.service"},
		{"vhqos disable --root " + root + " ", "nginx.service"},
		{"vhqos ", "run check status upgrade reload enable disable version help"},
		{"vhqos run --log-level ", "debug info warn error"},
		{"vhqos status --", "--socket --json --watch"},
		{"vhqos disable nginx --", "--root"},
		{"vhqos enable --config /etc/vhqos/qos.toml nginx --", "--config --status-socket --metrics-listen --root --"},
		{"vhqos help up", "upgrade"},
	} {
		t.Run(tc.line, func(t *testing.T) {
			// COMP_WORDS as bash splits the line, an empty last word
			// after a space.
			words := strings.Fields(tc.line)
			if strings.HasSuffix(tc.line, " ") {
				words = append(words, "")
			}
			quoted := make([]string, len(words))
			for i, w := range words {
				quoted[i] = "'" + w + "'"
			}
			script := ". " + lib + "; . " + filepath.Join(dir, "usr/share/bash-completion/completions/vhqos") + "\n" + systemctl +
				"COMP_WORDS=(" + strings.Join(quoted, " ") + "); COMP_CWORD=" + strconv.Itoa(len(words)-1) +
				"; COMP_LINE='" + tc.line + "'; COMP_POINT=${#COMP_LINE}; _vhqos; echo \"${COMPREPLY[*]}\""
			if got := strings.TrimSpace(output(t, "bash", "-c", script)); got != tc.want {
				t.Errorf("completing %q gives %q, want %q", tc.line, got, tc.want)
			}
		})
	}
}

// TestTemplateUnit: systemd's parser reads vhqos@.service (an instance
// with its files in /etc/vhqos) without a complaint.
func TestTemplateUnit(t *testing.T) {
	dir := extract(t, debFile(t))
	os.WriteFile(filepath.Join(dir, "etc/vhqos/web.env"), []byte("SERVER=\"/usr/sbin/lighttpd -D -f '/etc/lighttpd/lighttpd.conf'\"\n"), 0o644)
	cmd := exec.Command("systemd-analyze", "verify", "--root="+dir, "vhqos@web.service")
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=debug")
	out, _ := cmd.CombinedOutput()
	if !strings.Contains(string(out), "Fragment Path: "+dir+"/lib/systemd/system/vhqos@.service") {
		t.Fatalf("systemd-analyze verify did not load vhqos@.service:\n%s", out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		for _, bad := range []string{"Unbalanced", "nvalid", "Failed to parse", "Unknown key", "Unknown section", "ignoring"} {
			if strings.Contains(line, bad) && !strings.Contains(line, "$container") {
				t.Errorf("systemd-analyze verify: %s", line)
			}
		}
	}
}

// TestInstallRemovePurge: dpkg installs the package into a scratch root
// (dpkgRoot), the binary runs and reads the example table, vhqos enable
// works there; dpkg -r takes the drop-in away with the package and keeps
// the conffile, dpkg -P leaves the root as it was before.
func TestInstallRemovePurge(t *testing.T) {
	deb := debFile(t)
	root, dpkg := dpkgRoot(t)
	before := tree(t, root)
	status := func() string {
		out, _ := exec.Command("dpkg-query", "--root="+root, "-W", "-f=${db:Status-Abbrev}", "vhqos").Output()
		return strings.TrimSpace(string(out))
	}

	dpkg("-i", deb)
	if s := status(); s != "ii" {
		t.Fatalf("after dpkg -i: status %q, want ii", s)
	}
	bin := filepath.Join(root, "usr/sbin/vhqos")
	if out := output(t, bin, "version"); !strings.HasPrefix(out, "vhqos ") {
		t.Errorf("vhqos version: %q", out)
	}
	if out := output(t, bin, "check", filepath.Join(root, "etc/vhqos/qos.toml")); !strings.Contains(out, "OK") {
		t.Errorf("vhqos check on the example table: %q", out)
	}
	output(t, bin, "enable", "nginx", "--root", root, "--config", "/etc/vhqos/qos.toml")
	dropIn := filepath.Join(root, "etc/systemd/system/nginx.service.d/vhqos.conf")
	if _, err := os.Stat(dropIn); err != nil {
		t.Fatal(err)
	}

	out := dpkg("-r", "vhqos")
	if s := status(); s != "rc" {
		t.Errorf("after dpkg -r: status %q, want rc (removed, conffiles kept)", s)
	}
	if !strings.Contains(out, "nginx.service no longer runs under vhqos") {
		t.Errorf("dpkg -r said nothing of nginx.service:\n%s", out)
	}
	for _, p := range []string{"usr/sbin/vhqos", "lib/systemd/system/vhqos@.service", "etc/systemd/system/nginx.service.d"} {
		if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
			t.Errorf("after dpkg -r, %s is still there", p)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "etc/vhqos/qos.toml")); err != nil {
		t.Errorf("dpkg -r removed the conffile: %v", err)
	}

	dpkg("-P", "vhqos")
	if s := status(); s != "" && s != "un" && s != "pn" {
		t.Errorf("after dpkg -P: status %q, want not installed", s)
	}
	after := tree(t, root)
	for _, p := range after {
		if !slices.Contains(before, p) {
			t.Errorf("left behind: %s", p)
		}
	}
}

// TestRemoveKeepsOperatorsDropIns: dpkg -r removes the drop-ins vhqos
// enable wrote; a vhqos.conf of the operator's that runs the packaged
// vhqos is renamed (systemd stops reading it, the text stays); the
// operator's other drop-ins and vhqos.conf files that do not run it are
// left alone.
func TestRemoveKeepsOperatorsDropIns(t *testing.T) {
	deb := debFile(t)
	root, dpkg := dpkgRoot(t)
	dpkg("-i", deb)
	output(t, filepath.Join(root, "usr/sbin/vhqos"), "enable", "nginx", "--root", root, "--config", "/etc/vhqos/qos.toml")
	dir := filepath.Join(root, "etc/systemd/system")
	own := "[Service]\nExecStart=\nExecStart=/usr/sbin/vhqos run --config /etc/vhqos/web.toml -- /usr/sbin/lighttpd -D\nDelegate=yes\n"
	files := map[string]string{
		"nginx.service.d/override.conf": "[Service]\nLimitNOFILE=65536\n",
		"lighttpd.service.d/vhqos.conf": own,
		"other.service.d/vhqos.conf":    "[Service]\nNice=5\n",
	}
	for name, text := range files {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := dpkg("-r", "vhqos")
	for _, want := range []string{"nginx.service no longer runs under vhqos", "lighttpd.service no longer runs under vhqos", "kept as vhqos.conf.vhqos-removed"} {
		if !strings.Contains(out, want) {
			t.Errorf("dpkg -r did not say %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "other.service") {
		t.Errorf("dpkg -r speaks of other.service, whose vhqos.conf does not run vhqos:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "nginx.service.d/vhqos.conf")); err == nil {
		t.Error("the drop-in vhqos enable wrote is still there")
	}
	for name, want := range map[string]string{
		"nginx.service.d/override.conf":               "[Service]\nLimitNOFILE=65536\n",
		"lighttpd.service.d/vhqos.conf.vhqos-removed": own,
		"other.service.d/vhqos.conf":                  "[Service]\nNice=5\n",
	} {
		if got, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(got) != want {
			t.Errorf("%s after dpkg -r: %q, %v; want %q", name, got, err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "lighttpd.service.d/vhqos.conf")); err == nil {
		t.Error("the operator's vhqos.conf is still read by systemd after dpkg -r")
	}
}

// dpkgRoot makes a scratch root for dpkg (its database, an empty status,
// and Debian's nginx unit for vhqos enable to work on), and returns it
// with dpkg working in it: its maintainer scripts run outside a chroot,
// with DPKG_ROOT set, as dpkg --force-script-chrootless does.
func dpkgRoot(t *testing.T) (root string, dpkg func(args ...string) string) {
	t.Helper()
	root = t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "var/log", "usr/lib/systemd/system", "etc/systemd/system"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	unit, err := os.ReadFile("../../cmd/vhqos/testdata/systemd/nginx.service")
	if err != nil {
		t.Fatal(err)
	}
	for path, data := range map[string][]byte{"var/lib/dpkg/status": nil, "usr/lib/systemd/system/nginx.service": unit} {
		if err := os.WriteFile(filepath.Join(root, path), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root, func(args ...string) string {
		t.Helper()
		return output(t, "dpkg", append([]string{"--root=" + root, "--force-script-chrootless", "--force-depends", "--log=/dev/null"}, args...)...)
	}
}

// tree lists what is under root, dpkg's own database and log left out.
func tree(t *testing.T, root string) []string {
	t.Helper()
	var paths []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "var/lib/dpkg" || rel == "var/log" {
			return filepath.SkipDir
		}
		paths = append(paths, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return paths
}
