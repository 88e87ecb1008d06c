package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/coreos/go-systemd/v22/unit"
	"github.com/vhqos/vhqos/policy"
)

// vhqos enable and vhqos disable put an existing systemd service under
// vhqos, and take it out again, with a drop-in
// (/etc/systemd/system/UNIT.d/vhqos.conf) instead of an edited unit: a
// package upgrade that replaces the unit keeps the drop-in, and removing
// the drop-in gives the unit back exactly as it was.
//
// The unit is read from its files as systemd would load it (the unit file,
// then its drop-ins by name; systemd.unit(5), "Unit File Load Path" and
// "drop-in"), not asked of a running systemd: `systemctl show` gives
// ExecStart= with its quoting lost, and enabling works the same in an
// image being built (--root) as on a running machine.

// dropInName is the file vhqos enable writes in the unit's drop-in
// directory under /etc/systemd/system.
const dropInName = "vhqos.conf"

// unitDirs is systemd's load path for system units, highest priority
// first, leaving out the directories only systemd itself writes
// (transient units, generators, system.control). On a merged-/usr system
// /lib is /usr/lib; a file seen twice counts once.
func unitDirs() []string {
	return []string{"/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"}
}

// serviceUnit is a service as its files define it.
type serviceUnit struct {
	name  string   // e.g. apache2.service, apache2@www.service
	files []string // what was read, in order
	// after are the drop-ins systemd applies after vhqos.conf (their
	// names sort after it): what they set overrides the drop-in.
	after []string
	// service holds the [Service] settings after every file was applied:
	// each key's values in order, an empty assignment having reset the
	// ones before it (as for ExecStart=; for single-valued keys the last
	// value counts).
	service map[string][]string
	// from is the file that set each key's last value.
	from map[string]string
	// beforeOurs is the unit as systemd has it when it comes to
	// vhqos.conf: the files that sort after it (after) not applied. What
	// vhqos.conf writes starts from it: ExecReload= lines a later
	// drop-in adds are added after vhqos.conf's anyway.
	beforeOurs *serviceUnit
}

// snapshot copies the unit as it is now.
func (u *serviceUnit) snapshot() *serviceUnit {
	c := &serviceUnit{name: u.name, files: slices.Clone(u.files), service: map[string][]string{}, from: map[string]string{}}
	for k, v := range u.service {
		c.service[k] = slices.Clone(v)
	}
	for k, v := range u.from {
		c.from[k] = v
	}
	return c
}

// last is the value a single-valued key ends with, "" if unset.
func (u *serviceUnit) last(key string) string {
	v := u.service[key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// unitName checks a unit name and adds ".service" when it has no type.
func unitName(name string) (string, error) {
	// "php8.2-fpm" has no type: ".2-fpm" is not one.
	if ext := path.Ext(name); ext != ".service" {
		if slices.Contains([]string{".socket", ".target", ".timer", ".path", ".mount", ".automount", ".swap", ".device", ".slice", ".scope"}, ext) {
			return "", fmt.Errorf("%s is not a service: vhqos wraps the service that runs the server (for a socket unit, the service it starts)", name)
		}
		name += ".service"
	}
	if !regexp.MustCompile(`^[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?\.service$`).MatchString(name) {
		return "", fmt.Errorf("%q is not a unit name (letters, digits, \":_.\\-\", an @ before an instance)", name)
	}
	if strings.HasSuffix(name, "@.service") {
		return "", fmt.Errorf("%s is a template: name an instance (%s) or write the drop-in for the template by hand", name, strings.TrimSuffix(name, ".service")+"NAME.service")
	}
	return name, nil
}

// templateOf returns the template an instance is made from ("a@b.service"
// gives "a@.service"), or "" for a plain unit.
func templateOf(name string) string {
	prefix, _, ok := strings.Cut(name, "@")
	if !ok {
		return ""
	}
	return prefix + "@.service"
}

// loadUnit reads a service as systemd would: its unit file (following an
// alias symlink; a unit masked by a symlink to /dev/null is refused), then
// its drop-ins, skipping the file at ignore (the drop-in vhqos enable
// itself writes, so that enabling again starts from the unit as it is
// without it). root is a directory to read everything under, "" for /.
func loadUnit(root, name, ignore string) (*serviceUnit, error) {
	u := &serviceUnit{name: name, service: map[string][]string{}, from: map[string]string{}}
	template := templateOf(name)
	seen := map[string]bool{}
	var dirs []string
	for _, d := range unitDirs() {
		real, err := filepath.EvalSymlinks(filepath.Join(root, d))
		if err != nil || seen[real] {
			continue
		}
		seen[real] = true
		dirs = append(dirs, d)
	}
	var fragment string
	for _, want := range []string{name, template} {
		if want == "" || fragment != "" {
			continue
		}
		for _, d := range dirs {
			p := filepath.Join(root, d, want)
			fi, err := os.Lstat(p)
			if err != nil {
				continue
			}
			if fi.Mode()&fs.ModeSymlink != 0 {
				target, err := os.Readlink(p)
				if err != nil {
					return nil, fmt.Errorf("reading the unit %s: %w", p, err)
				}
				if target == "/dev/null" {
					return nil, fmt.Errorf("%s is masked (%s links to /dev/null): unmask it first", name, filepath.Join(d, want))
				}
				if filepath.IsAbs(target) {
					p = filepath.Join(root, target)
				} else {
					p = filepath.Join(filepath.Dir(p), target)
				}
			}
			fragment = p
			break
		}
	}
	if fragment == "" {
		return nil, fmt.Errorf("no unit file for %s in %s (systemctl list-unit-files shows the installed ones)", name, strings.Join(unitDirs(), ", "))
	}
	if err := u.apply(fragment); err != nil {
		return nil, err
	}
	// Drop-ins: from the least specific directory name to the most
	// specific, and within each from the lowest priority directory to
	// the highest, a file of the same name replacing the one before; then
	// applied in the order of their names, wherever they are.
	dropDirs := []string{"service.d"}
	base := strings.TrimSuffix(name, ".service")
	if template != "" {
		base = strings.TrimSuffix(template, "@.service")
	}
	parts := strings.Split(base, "-")
	for i := 1; i < len(parts); i++ {
		dropDirs = append(dropDirs, strings.Join(parts[:i], "-")+"-.service.d")
	}
	if template != "" {
		dropDirs = append(dropDirs, template+".d")
	}
	dropDirs = append(dropDirs, name+".d")
	dropIns := map[string]string{}
	for _, dd := range dropDirs {
		for i := len(dirs) - 1; i >= 0; i-- {
			matches, _ := filepath.Glob(filepath.Join(root, dirs[i], dd, "*.conf"))
			for _, m := range matches {
				if m == ignore {
					continue
				}
				if target, err := os.Readlink(m); err == nil && target == "/dev/null" {
					delete(dropIns, filepath.Base(m))
					continue
				}
				dropIns[filepath.Base(m)] = m
			}
		}
	}
	names := make([]string, 0, len(dropIns))
	for n := range dropIns {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if n > dropInName {
			if u.beforeOurs == nil {
				u.beforeOurs = u.snapshot()
			}
			u.after = append(u.after, dropIns[n])
		}
		if err := u.apply(dropIns[n]); err != nil {
			return nil, err
		}
	}
	if u.beforeOurs == nil {
		u.beforeOurs = u.snapshot()
	}
	return u, nil
}

// listKeys are the [Service] keys that take a list: a later drop-in's
// line adds to vhqos.conf's, or resets them with an empty assignment.
var listKeys = []string{"ExecStart", "ExecStartPre", "ExecReload", "SuccessExitStatus"}

// overridden says which of the drop-ins applied after vhqos.conf set a
// key of [Service] vhqos relies on: one the drop-in text sets (to
// another value, or any line of a list such as ExecReload=), or
// KillMode= other than mixed, which vhqos needs and leaves alone when the
// unit has it (nginx's). systemd would take theirs, silently undoing what
// vhqos enable wrote.
func overridden(after []string, text string) ([]string, error) {
	ours, err := unit.DeserializeOptions(strings.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("reading the drop-in back: %w", err)
	}
	sets := map[string]string{} // key -> the drop-in's last value
	for _, o := range ours {
		if o.Section == "Service" {
			sets[o.Name] = o.Value
		}
	}
	_, needsKillMode := sets["KillMode"]
	needsKillMode = !needsKillMode
	var out []string
	for _, file := range after {
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("reading the drop-in %s: %w", file, err)
		}
		opts, err := unit.DeserializeOptions(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("reading the drop-in %s: %w", file, err)
		}
		var too, needed []string
		for _, o := range opts {
			if o.Section != "Service" {
				continue
			}
			v, ok := sets[o.Name]
			key := o.Name + "="
			switch {
			case ok && (slices.Contains(listKeys, o.Name) || o.Value != v):
				if !slices.Contains(too, key) {
					too = append(too, key)
				}
			case o.Name == "KillMode" && needsKillMode && o.Value != "mixed":
				if !slices.Contains(needed, key) {
					needed = append(needed, key)
				}
			}
		}
		var what []string
		if len(too) > 0 {
			what = append(what, strings.Join(too, " ")+", which "+dropInName+" sets too")
		}
		if len(needed) > 0 {
			what = append(what, strings.Join(needed, " ")+", which vhqos needs to be mixed (the unit's own KillMode=)")
		}
		if len(what) > 0 {
			out = append(out, fmt.Sprintf("%s comes after %s and sets %s: systemd takes its settings, and the unit may not run under vhqos as written; give it a name that sorts before %s, or take those lines out",
				file, dropInName, strings.Join(what, ", and "), dropInName))
		}
	}
	return out, nil
}

// apply adds one file's [Service] settings.
func (u *serviceUnit) apply(file string) error {
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("reading the unit %s: %w", file, err)
	}
	defer f.Close()
	opts, err := unit.DeserializeOptions(f)
	if err != nil {
		return fmt.Errorf("reading the unit %s: %w", file, err)
	}
	u.files = append(u.files, file)
	for _, o := range opts {
		if o.Section != "Service" {
			continue
		}
		// systemd joins continued lines with a space.
		v := strings.TrimSpace(strings.ReplaceAll(o.Value, "\\\n", " "))
		if v == "" {
			delete(u.service, o.Name)
			delete(u.from, o.Name)
			continue
		}
		u.service[o.Name] = append(u.service[o.Name], v)
		u.from[o.Name] = file
	}
	return nil
}

// word is one word of a systemd command line: as written, and its value
// with quotes and escapes removed (variables and specifiers are left as
// they are: systemd expands them in both).
type word struct {
	raw, value string
}

// splitCommand splits a command line the way systemd does
// (systemd.service(5), "Command lines"): words separated by white space,
// quoted with '...' or "...", C-style backslash escapes.
func splitCommand(s string) ([]word, error) {
	var words []word
	i := 0
	for {
		for i < len(s) && strings.ContainsRune(" \t\n", rune(s[i])) {
			i++
		}
		if i >= len(s) {
			return words, nil
		}
		start := i
		var v strings.Builder
		var quote byte
		for ; i < len(s); i++ {
			c := s[i]
			switch {
			case c == '\\' && i+1 < len(s):
				i++
				switch e := s[i]; e {
				case 'n':
					v.WriteByte('\n')
				case 't':
					v.WriteByte('\t')
				case 's':
					v.WriteByte(' ')
				default:
					v.WriteByte(e)
				}
				continue
			case quote != 0 && c == quote:
				quote = 0
				continue
			case quote == 0 && (c == '\'' || c == '"'):
				quote = c
				continue
			case quote == 0 && strings.ContainsRune(" \t\n", rune(c)):
			default:
				v.WriteByte(c)
				continue
			}
			break
		}
		if quote != 0 {
			return nil, fmt.Errorf("unbalanced %c quote in %q", quote, s)
		}
		words = append(words, word{raw: s[start:i], value: v.String()})
	}
}

// quoteWord writes value as one word of a command line, quoted if it
// must be. Variables ($X) and specifiers (%i) in it are left for systemd
// to expand; escapeLiteral escapes them first for a word meant literally.
func quoteWord(value string) string {
	if value != "" && !strings.ContainsAny(value, " \t\n'\"\\;") {
		return value
	}
	if !strings.ContainsAny(value, "'\\\n\t") {
		return "'" + value + "'"
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\t", `\t`)
	return `"` + r.Replace(value) + `"`
}

// escapeLiteral keeps systemd from expanding $ and % in s.
func escapeLiteral(s string) string {
	return strings.NewReplacer("$", "$$", "%", "%%").Replace(s)
}

// execPrefixes are the characters that may lead an Exec*= command
// (systemd.service(5), table "Special executable prefixes").
const execPrefixes = "@-:+!|"

// enableOptions is what vhqos enable was asked.
type enableOptions struct {
	config        string   // the QoS table, absolute
	statusSocket  string   // "" for /run/vhqos/UNIT.sock
	metricsListen string   // "" for none
	vhqos         string   // the vhqos binary, absolute
	server        []string // the server's command, nil to derive it from the unit
}

// socketOf is the status socket the drop-in for unit name gives vhqos
// run: the one asked for, else /run/vhqos/UNIT.sock (UNIT without
// .service).
func (o enableOptions) socketOf(name string) string {
	if o.statusSocket != "" {
		return o.statusSocket
	}
	return "/run/vhqos/" + strings.TrimSuffix(name, ".service") + ".sock"
}

// dropIn is what enable writes and why.
type dropIn struct {
	text string
	// notes are what the operator should know: how the unit was
	// changed beyond the wrapping.
	notes []string
}

// makeDropIn writes the drop-in that runs u's server under vhqos.
func makeDropIn(u *serviceUnit, o enableOptions) (*dropIn, error) {
	starts := u.service["ExecStart"]
	typ := u.last("Type")
	if typ == "" {
		typ = "simple"
		if u.last("BusName") != "" {
			typ = "dbus"
		}
	}
	switch {
	case typ == "oneshot":
		return nil, fmt.Errorf("%s is Type=oneshot: it runs a task, not a server, and vhqos wraps servers", u.name)
	case len(starts) == 0 && o.server == nil:
		return nil, fmt.Errorf("%s has no ExecStart=: nothing to run under vhqos", u.name)
	case len(starts) > 1:
		return nil, fmt.Errorf("%s has %d ExecStart= lines; vhqos wraps one server", u.name, len(starts))
	}
	var prefix string
	var argv []word
	if len(starts) == 1 {
		words, err := splitCommand(starts[0])
		if err != nil {
			return nil, fmt.Errorf("%s: ExecStart=: %w", u.name, err)
		}
		if len(words) == 0 {
			return nil, fmt.Errorf("%s: ExecStart= is empty", u.name)
		}
		first := words[0]
		n := len(first.raw) - len(strings.TrimLeft(first.raw, execPrefixes))
		prefix = first.raw[:n]
		words[0] = word{raw: first.raw[n:], value: first.value[n:]}
		if filepath.Base(words[0].value) == "vhqos" {
			return nil, alreadyVhqos(u, starts[0])
		}
		for _, w := range words[1:] {
			if w.raw == ";" {
				return nil, fmt.Errorf("%s: ExecStart= runs several commands (a lone \";\"); vhqos wraps one server", u.name)
			}
		}
		argv = words
	}
	if strings.Contains(prefix, "@") && o.server == nil {
		return nil, fmt.Errorf("%s: ExecStart=%s gives the server its own argv[0] (the @ prefix), which vhqos run cannot pass on: name the server's command after --", u.name, starts[0])
	}
	prefix = strings.ReplaceAll(prefix, "@", "")

	d := &dropIn{}
	var b strings.Builder
	short := strings.TrimSuffix(u.name, ".service")
	socket := o.socketOf(u.name)
	fmt.Fprintf(&b, "# Written by \"vhqos enable %s\": runs its server under vhqos with the\n", short)
	fmt.Fprintf(&b, "# QoS table %s. \"vhqos disable %s\" removes this file;\n", o.config, short)
	fmt.Fprintf(&b, "# man vhqos, \"Running under systemd\", says what each line is for.\n")
	b.WriteString("[Unit]\nDocumentation=man:vhqos(8)\n\n[Service]\n")
	b.WriteString("# vhqos makes a cgroup per vhost below the unit's own.\nDelegate=yes\n")
	if km := u.last("KillMode"); km != "mixed" {
		was := "control-group, the default"
		if km != "" {
			was = km
		}
		b.WriteString("# Stopping signals vhqos alone: it passes the signal on to the server, waits\n")
		b.WriteString("# for it and removes its cgroups; what is left after TimeoutStopSec= is killed.\n")
		fmt.Fprintf(&b, "# (The unit had KillMode=%s.)\nKillMode=mixed\n", was)
	}

	// systemd counts a main process killed by SIGHUP, SIGINT, SIGPIPE or
	// SIGTERM as a clean exit; vhqos run exits with 128+N when the server
	// dies of signal N, which systemd would count as a failure.
	b.WriteString("# vhqos run exits with 128+N when the server dies of signal N: those\n# systemd counts as clean when they kill a main process of its own.\nSuccessExitStatus=129 130 141 143\n")

	// Type=exec and simple units are started once vhqos run is exec'd:
	// a table vhqos run refuses would fail the unit after systemctl
	// start returned 0. Checked before, the start fails at once.
	b.WriteString("# vhqos run refuses a table with mistakes, and the server does not start.\n")
	b.WriteString("# Checked first, systemctl start and restart fail at once, with the mistakes,\n")
	b.WriteString("# instead of returning before vhqos run has read the table.\n")
	fmt.Fprintf(&b, "ExecStartPre=%s%s check %s\n", strings.ReplaceAll(prefix, "-", ""), o.vhqos, quoteWord(escapeLiteral(o.config)))

	var server []string // words of the server's command, as written
	switch {
	case o.server != nil:
		for _, a := range o.server {
			server = append(server, quoteWord(escapeLiteral(a)))
		}
		if typ == "forking" {
			b.WriteString("# The unit forked into the background; vhqos run stays in the foreground,\n# with the server given to vhqos enable as its child.\nType=exec\n")
			d.notes = append(d.notes, "Type=forking became Type=exec: the command you gave must keep the server in the foreground")
		}
	case typ == "forking":
		fg, pre, how, err := foreground(argv)
		if err != nil {
			return nil, fmt.Errorf("%s is Type=forking: %w; for another server, name its command in the foreground after --: vhqos enable %s --config %s -- SERVER ARGS...", u.name, err, short, o.config)
		}
		server = fg
		b.WriteString("# The unit forked into the background; vhqos run stays in the foreground,\n# with the server as its child.\nType=exec\n")
		if pre != "" {
			b.WriteString(pre)
		}
		d.notes = append(d.notes, "Type=forking became Type=exec: "+how)
	default:
		for _, w := range argv {
			server = append(server, w.raw)
		}
	}
	if u.last("PIDFile") != "" {
		fmt.Fprintf(&b, "# The server still writes %s, but the unit's main process is now vhqos.\nPIDFile=\n", u.last("PIDFile"))
	}
	if strings.HasPrefix(typ, "notify") {
		// Nothing to change: vhqos run passes the server's sd_notify
		// messages on as its own (notify.go).
		d.notes = append(d.notes, "Type="+typ+" kept: vhqos passes the server's notifications (READY=1) on to systemd as the unit's main process")
	}
	if user := u.last("User"); user != "" && user != "root" && user != "0" {
		d.notes = append(d.notes, "the unit runs as User="+user+": so does vhqos run, without root (see man vhqos, \"Requirements\")")
	}

	run := []string{prefix + o.vhqos, "run", "--config", quoteWord(escapeLiteral(o.config)), "--status-socket", quoteWord(escapeLiteral(socket))}
	if o.metricsListen != "" {
		run = append(run, "--metrics-listen", quoteWord(escapeLiteral(o.metricsListen)))
	}
	run = append(run, "--")
	b.WriteString("ExecStart=\nExecStart=" + strings.Join(append(run, server...), " ") + "\n")

	b.WriteString("# systemctl reload: the table first, then the server as the unit reloads it.\n")
	b.WriteString("# A refused table stays out (the one before stays in force; the journal, vhqos\n")
	b.WriteString("# status and vhqos_table_refused say so) without failing the server's reload\n")
	b.WriteString("# (\"-\"), which logrotate and certbot's hooks need.\n")
	b.WriteString("ExecReload=\nExecReload=-" + o.vhqos + " reload --socket " + quoteWord(escapeLiteral(socket)) + "\n")
	for _, r := range u.service["ExecReload"] {
		b.WriteString("ExecReload=" + r + "\n")
	}
	if len(u.service["ExecReload"]) == 0 {
		d.notes = append(d.notes, "the unit had no ExecReload=: systemctl reload re-reads the QoS table only")
	}
	d.text = b.String()
	return d, nil
}

// alreadyVhqos is the error for a unit whose ExecStart= runs vhqos
// already, set by a file other than the drop-in vhqos enable writes (that
// one enable replaces): what to do depends on which.
func alreadyVhqos(u *serviceUnit, start string) error {
	file := u.from["ExecStart"]
	if strings.HasSuffix(filepath.Dir(file), ".d") {
		return fmt.Errorf("%s already runs vhqos: the drop-in %s sets ExecStart=%s. It is not the one vhqos enable writes (%s), so vhqos disable leaves it alone: take the ExecStart= lines out of it (or remove it if that is all it does), then run vhqos enable again",
			u.name, file, start, dropInName)
	}
	return fmt.Errorf("%s already runs vhqos: its unit file %s has ExecStart=%s, and needs no vhqos enable", u.name, file, start)
}

// nginxDaemon finds nginx's daemon directive in a -g argument.
var nginxDaemon = regexp.MustCompile(`(^|;)(\s*)daemon\s+(on|off)\s*;`)

// foreground turns the command of a Type=forking unit into one that keeps
// the server in the foreground as the process vhqos starts: Debian's
// Apache (apachectl start) and nginx (daemon on). pre is what the drop-in
// needs besides; how says what was done, for the operator.
func foreground(argv []word) (server []string, pre, how string, err error) {
	prog := filepath.Base(argv[0].value)
	args := make([]string, 0, len(argv)-1)
	for _, w := range argv[1:] {
		args = append(args, w.value)
	}
	switch {
	case (prog == "apachectl" || prog == "apache2ctl") && slices.Equal(args, []string{"start"}):
		// apachectl -DFOREGROUND would run Apache as a child of its
		// shell: the signals vhqos passes on would reach the shell, not
		// Apache. This is apachectl's own way to start, ending in
		// exec. $$ is a $ systemd leaves alone.
		script := `. "$${APACHE_ENVVARS:-$${APACHE_CONFDIR:-/etc/apache2}/envvars}" || exit; ` +
			`$${APACHE_ULIMIT_MAX_FILES:-ulimit -n 8192}; ` +
			`exec $${APACHE_HTTPD:-/usr/sbin/apache2} -d "$${APACHE_CONFDIR:-/etc/apache2}" $${APACHE_ARGUMENTS} -DFOREGROUND`
		pre = "# apachectl start makes Apache's run and lock directories before it starts it;\n" +
			"# configtest does the same, and refuses a broken configuration before vhqos starts.\n" +
			"ExecStartPre=" + argv[0].raw + " configtest\n" +
			"# Apache in the foreground, started as apachectl starts it (its envvars, its\n" +
			"# open-files limit), with exec so that vhqos's signals reach Apache itself.\n"
		return []string{"/bin/sh", "-c", quoteWord(script)}, pre,
			"Apache runs with -DFOREGROUND, started the way apachectl starts it; apachectl configtest (ExecStartPre=) makes its directories", nil
	case prog == "nginx":
		out := []string{argv[0].raw}
		found := false
		for i := 1; i < len(argv); i++ {
			w := argv[i]
			out = append(out, w.raw)
			if w.value != "-g" || i+1 >= len(argv) {
				continue
			}
			i++
			g := argv[i].value
			if nginxDaemon.MatchString(g) {
				g = nginxDaemon.ReplaceAllString(g, "${1}${2}daemon off;")
			} else {
				g = strings.TrimSpace(g) + " daemon off;"
			}
			out = append(out, quoteWord(g))
			found = true
		}
		if !found {
			out = append(out, "-g", quoteWord("daemon off;"))
		}
		return out, "", "nginx runs with daemon off", nil
	}
	return nil, "", "", fmt.Errorf("its ExecStart= (%s) puts the server in the background, and vhqos run needs it in the foreground as its child; vhqos enable knows Apache (apachectl start) and nginx", strings.Join(rawWords(argv), " "))
}

func rawWords(ws []word) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.raw
	}
	return out
}

// dropInPath is where vhqos enable writes for unit name.
func dropInPath(root, name string) string {
	return filepath.Join(root, "/etc/systemd/system", name+".d", dropInName)
}

// systemdRunning tells whether systemd is the init system
// (sd_booted(3)).
func systemdRunning() bool {
	fi, err := os.Lstat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

// daemonReload makes a running systemd read units again, or says what to
// do when it does not run here (or root is an image).
func daemonReload(root string, stdout io.Writer) error {
	if root != "" {
		fmt.Fprintln(stdout, "--root: systemd reads the change when the system under", root, "boots")
		return nil
	}
	if !systemdRunning() {
		fmt.Fprintln(stdout, "systemd is not running here: once it is, it reads the change itself (or run systemctl daemon-reload)")
		return nil
	}
	out, err := exec.Command("systemctl", "daemon-reload").CombinedOutput()
	if err != nil {
		return fmt.Errorf("systemctl daemon-reload: %v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// enableCommand is vhqos enable UNIT [options] [-- SERVER ARGS...].
func enableCommand(args []string, stdout, stderr io.Writer) int {
	fl := newFlagSet("enable")
	config := fl.String("config", defaultConfig, "the unit's vhqos reads the QoS table `FILE` (checked now)")
	socket := fl.String("status-socket", "", "the unit's vhqos answers vhqos status on the socket `PATH` (default /run/vhqos/UNIT.sock, UNIT without .service)")
	metrics := fl.String("metrics-listen", "", "the unit's vhqos serves Prometheus metrics at http://`ADDR`/metrics (default: off)")
	root := fl.String("root", "", "work on the system whose root directory is `DIR` (an image) instead of /")
	p, code, ok := parseCommandLine(fl, args, stdout, stderr)
	if !ok {
		return code
	}
	name, ok := unitArg(p.operands, fl, stderr)
	if !ok {
		return exitUsage
	}
	server := p.afterDash
	if len(server) > 0 && !filepath.IsAbs(server[0]) {
		fmt.Fprintf(stderr, "vhqos enable: the server's command must start with an absolute path, not %q\n", server[0])
		return exitUsage
	}
	if msg := checkEnableOptions(*root, *config, *socket, *metrics); msg != "" {
		fmt.Fprintln(stderr, "vhqos enable:", msg)
		return exitUsage
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "vhqos enable: finding the vhqos binary:", err)
		return 1
	}
	if self, err = binaryInRoot(*root, self); err != nil {
		fmt.Fprintln(stderr, "vhqos enable:", err)
		return 1
	}
	o := enableOptions{statusSocket: *socket, metricsListen: *metrics, vhqos: self, server: server}
	if o.config, err = filepath.Abs(*config); err != nil {
		fmt.Fprintln(stderr, "vhqos enable: --config:", err)
		return exitUsage
	}
	if err := enable(*root, name, o, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "vhqos enable:", err)
		return 1
	}
	return 0
}

// checkEnableOptions says what is wrong with options vhqos enable writes
// into the drop-in, where they are read later by a vhqos started from /
// (or in the image under root), "" if nothing.
func checkEnableOptions(root, config, socket, metrics string) string {
	switch {
	case root != "" && !filepath.IsAbs(config):
		return fmt.Sprintf("--config %s: with --root, name the table by its absolute path inside that system (as /etc/vhqos/qos.toml for %s/etc/vhqos/qos.toml)", config, strings.TrimSuffix(root, "/"))
	case socket != "" && !filepath.IsAbs(socket):
		return fmt.Sprintf("--status-socket %s: the unit's vhqos starts in /, so name the socket by its absolute path (as /run/vhqos/NAME.sock)", socket)
	}
	if metrics != "" {
		if err := checkMetricsAddr(metrics); err != nil {
			return "--metrics-listen: " + err.Error()
		}
	}
	return ""
}

// unitArg checks that the operands (the words before -- that are not
// options) are one unit name, and returns it.
func unitArg(operands []string, fl *flag.FlagSet, stderr io.Writer) (name string, ok bool) {
	switch {
	case len(operands) == 0:
		fmt.Fprintf(stderr, "%s: name the unit, e.g. %s apache2.service\n", fl.Name(), fl.Name())
		return "", false
	case len(operands) > 1:
		fmt.Fprintf(stderr, "%s: unexpected %q after the unit %s; a server's own command follows --\n", fl.Name(), operands[1], operands[0])
		return "", false
	}
	name, err := unitName(operands[0])
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fl.Name(), err)
		return "", false
	}
	return name, true
}

// enable writes the drop-in for unit name and has systemd read it;
// warnings go to stderr.
func enable(root, name string, o enableOptions, stdout, stderr io.Writer) error {
	table := filepath.Join(root, o.config)
	data, err := os.ReadFile(table)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("the QoS table %s does not exist: write it first (man vhqos-qos.toml; /etc/vhqos/qos.toml is an example)", o.config)
	}
	if err != nil {
		return fmt.Errorf("reading the QoS table: %w", err)
	}
	if _, err := policy.Parse(o.config, data); err != nil {
		return fmt.Errorf("the QoS table has mistakes; vhqos run would refuse it:\n%w", err)
	}
	dst := dropInPath(root, name)
	u, err := loadUnit(root, name, dst)
	if err != nil {
		return err
	}
	d, err := makeDropIn(u.beforeOurs, o)
	if err != nil {
		return err
	}
	warnings, err := overridden(u.after, d.text)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("creating the drop-in directory: %w", err)
	}
	tmp := dst + ".new"
	if err := os.WriteFile(tmp, []byte(d.text), 0o644); err != nil {
		return fmt.Errorf("writing the drop-in: %w", err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing the drop-in: %w", err)
	}
	fmt.Fprintf(stdout, "wrote %s\n", strings.TrimPrefix(dst, root))
	for _, n := range d.notes {
		fmt.Fprintln(stdout, "  "+n)
	}
	for _, w := range warnings {
		fmt.Fprintln(stderr, "vhqos enable: warning:", strings.TrimPrefix(w, root))
	}
	if err := daemonReload(root, stdout); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "restart it to run it under vhqos: systemctl restart %s\n", strings.TrimSuffix(name, ".service"))
	fmt.Fprintf(stdout, "then: vhqos status --socket %s\n", o.socketOf(name))
	return nil
}

// disableCommand is vhqos disable UNIT [--root DIR].
func disableCommand(args []string, stdout, stderr io.Writer) int {
	fl := newFlagSet("disable")
	root := fl.String("root", "", "work on the system whose root directory is `DIR` (an image) instead of /")
	operands, code, ok := parseArgs(fl, args, 1, stdout, stderr)
	if !ok {
		return code
	}
	name, ok := unitArg(operands, fl, stderr)
	if !ok {
		return exitUsage
	}
	if err := disable(*root, name, stdout); err != nil {
		fmt.Fprintln(stderr, "vhqos disable:", err)
		return 1
	}
	return 0
}

// disable removes the drop-in of unit name, and its directory if that is
// left empty.
func disable(root, name string, stdout io.Writer) error {
	dst := dropInPath(root, name)
	err := os.Remove(dst)
	if errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(stdout, "vhqos is not enabled for %s (no %s); nothing to do\n", name, strings.TrimPrefix(dst, root))
		return nil
	}
	if err != nil {
		return fmt.Errorf("removing the drop-in: %w", err)
	}
	fmt.Fprintf(stdout, "removed %s\n", strings.TrimPrefix(dst, root))
	// Only if empty: the operator's own drop-ins stay.
	os.Remove(filepath.Dir(dst))
	if err := daemonReload(root, stdout); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "restart it to run it without vhqos: systemctl restart %s\n", strings.TrimSuffix(name, ".service"))
	return nil
}

// packagedBinary is where the Debian package installs vhqos.
const packagedBinary = "/usr/sbin/vhqos"

// binaryInRoot is the path the drop-in names vhqos by: self, the running
// binary, on this system; with --root, the path it has inside that system
// (self under root), else the packaged one there, since a path of the
// system that runs enable means nothing when the image boots.
func binaryInRoot(root, self string) (string, error) {
	if root == "" || root == "/" {
		return self, nil
	}
	if rel, err := filepath.Rel(root, self); err == nil && !strings.HasPrefix(rel, "..") {
		return "/" + rel, nil
	}
	if _, err := os.Stat(filepath.Join(root, packagedBinary)); err != nil {
		return "", fmt.Errorf("%s is not inside %s, and %s has no %s: install vhqos in that system (its package), or run the vhqos inside it", self, root, root, packagedBinary)
	}
	return packagedBinary, nil
}
