package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestParseCommandLine(t *testing.T) {
	for _, tc := range []struct {
		name      string
		args      []string
		operands  []string
		afterDash []string
		config    string
		json      bool
	}{
		{name: "operand first", args: []string{"apache2", "--config", "/x"}, operands: []string{"apache2"}, config: "/x"},
		{name: "operand last", args: []string{"--config", "/x", "apache2"}, operands: []string{"apache2"}, config: "/x"},
		{name: "operand between", args: []string{"--json", "apache2", "--config=/x"}, operands: []string{"apache2"}, config: "/x", json: true},
		{name: "single dash", args: []string{"-config", "/x", "a"}, operands: []string{"a"}, config: "/x"},
		{name: "a boolean takes no value", args: []string{"--json", "a"}, operands: []string{"a"}, json: true},
		{name: "what follows -- is not an option", args: []string{"a", "--", "/usr/sbin/nginx", "--config", "-g"}, operands: []string{"a"}, afterDash: []string{"/usr/sbin/nginx", "--config", "-g"}, config: "/etc/vhqos/qos.toml"},
		{name: "a value that looks like --", args: []string{"--config", "--", "a"}, operands: []string{"a"}, config: "--"},
		{name: "- is an operand", args: []string{"-"}, operands: []string{"-"}, config: "/etc/vhqos/qos.toml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := newFlagSet("test")
			config := fs.String("config", "/etc/vhqos/qos.toml", "")
			json := fs.Bool("json", false, "")
			var stdout, stderr bytes.Buffer
			p, code, ok := parseCommandLine(fs, tc.args, &stdout, &stderr)
			if !ok {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			if !slices.Equal(p.operands, tc.operands) || !slices.Equal(p.afterDash, tc.afterDash) {
				t.Errorf("operands %q, after --: %q; want %q, %q", p.operands, p.afterDash, tc.operands, tc.afterDash)
			}
			if tc.config != "" && *config != tc.config {
				t.Errorf("--config %q, want %q", *config, tc.config)
			}
			if *json != tc.json {
				t.Errorf("--json %v, want %v", *json, tc.json)
			}
		})
	}
}

// TestHelp: every command's --help, -h and `vhqos help COMMAND` print its
// help on stdout and exit 0, as users expect of --help; the help names
// each option the command takes, as users type it.
func TestHelp(t *testing.T) {
	for _, c := range commands() {
		var want string
		for i, args := range [][]string{{c.name, "--help"}, {c.name, "-h"}, {"help", c.name}} {
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"vhqos"}, args...), &stdout, &stderr)
			if code != 0 || stderr.Len() > 0 || !strings.HasPrefix(stdout.String(), "usage: vhqos "+c.name) {
				t.Errorf("vhqos %s: exit %d, stdout %q, stderr %q; want exit 0 and the command's usage on stdout",
					strings.Join(args, " "), code, head(stdout.String()), stderr.String())
				continue
			}
			if i == 0 {
				want = stdout.String()
			} else if stdout.String() != want {
				t.Errorf("vhqos %s prints other help than vhqos %s --help", strings.Join(args, " "), c.name)
			}
			if !strings.Contains(stdout.String(), "\nExit status:\n") {
				t.Errorf("vhqos %s says no exit status", strings.Join(args, " "))
			}
		}
	}
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}} {
		var stdout, stderr bytes.Buffer
		code := run(append([]string{"vhqos"}, args...), &stdout, &stderr)
		if code != 0 || stderr.Len() > 0 {
			t.Errorf("vhqos %s: exit %d, stderr %q", strings.Join(args, " "), code, stderr.String())
		}
		for _, c := range commands() {
			if !strings.Contains(stdout.String(), "\n  vhqos "+c.name) {
				t.Errorf("vhqos %s does not list %s", strings.Join(args, " "), c.name)
			}
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"vhqos", "run", "--help"}, &stdout, &stderr); code != 0 {
		t.Fatalf("vhqos run --help: exit %d", code)
	}
	if got := helpOptions(stdout.String()); !slices.Equal(got, []string{"--config", "--log-format", "--log-level", "--metrics-listen", "--status-socket", "--stop-timeout"}) {
		t.Errorf("vhqos run --help lists the options %q", got)
	}
	if !strings.Contains(stdout.String(), "  --stop-timeout DURATION\n") || !strings.Contains(stdout.String(), "(default 30s)") {
		t.Errorf("vhqos run --help lacks --stop-timeout's value or default:\n%s", stdout.String())
	}
}

// helpOptions are the options a command's help lists.
func helpOptions(help string) []string {
	var opts []string
	for _, m := range regexp.MustCompile(`(?m)^  (--[a-z-]+)`).FindAllStringSubmatch(help, -1) {
		opts = append(opts, m[1])
	}
	return opts
}

// TestExitStatus: what the commands exit with, as their help and
// vhqos(8) say. vhqos run's own statuses need a server and root: itest
// has them.
func TestExitStatus(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(good, []byte("[[vhost]]\nname = \"a\"\nmatch = [\"192.0.2.1\"]\n"), 0o644)
	os.WriteFile(bad, []byte("[[vhost]]\nname = \"a\"\nmatch = [\"192.0.2.1\"]\ncpu_wieght = 3\n"), 0o644)
	none := filepath.Join(dir, "none.sock")
	for _, tc := range []struct {
		args []string
		code int
	}{
		{nil, 2},
		{[]string{"bogus"}, 2},
		{[]string{"version"}, 0},
		{[]string{"--version"}, 0},
		{[]string{"-version"}, 0},
		{[]string{"-V"}, 0},
		{[]string{"-help"}, 0},
		{[]string{"--bogus"}, 2},
		{[]string{"version", "extra"}, 2},
		{[]string{"help"}, 0},
		{[]string{"help", "bogus"}, 2},
		{[]string{"check", good}, 0},
		{[]string{"check", bad}, 2},
		{[]string{"check", filepath.Join(dir, "missing.toml")}, 2},
		{[]string{"check"}, 2},
		{[]string{"check", good, good}, 2},
		{[]string{"run"}, 2},
		{[]string{"run", "--config"}, 2},
		{[]string{"run", "--stop-timeout", "soon", "--", "true"}, 2},
		{[]string{"status", "--socket", none}, 3},
		{[]string{"reload", "--socket", none}, 3},
		{[]string{"upgrade", "--socket", none}, 3},
		{[]string{"status", "--watch", "often"}, 2},
		{[]string{"enable"}, 2},
		{[]string{"enable", "apache2.socket"}, 2},
		{[]string{"disable", "a", "b"}, 2},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(append([]string{"vhqos"}, tc.args...), &stdout, &stderr); code != tc.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tc.code, stderr.String())
			}
			if tc.code != 0 && stderr.Len() == 0 {
				t.Errorf("exit %d without a word on stderr", tc.code)
			}
		})
	}
}

// TestRunConfigAbsolute: vhqos run names its table by an absolute path,
// whatever it was given: vhqos status, the metrics and vhqos reload take
// the path from it, and reload, started in another directory, reads the
// file to say what is wrong with it.
func TestRunConfigAbsolute(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ config, want string }{
		{"qos.toml", filepath.Join(wd, "qos.toml")},
		{"../x/./qos.toml", filepath.Join(filepath.Dir(wd), "x/qos.toml")},
		{"/etc/vhqos/qos.toml", "/etc/vhqos/qos.toml"},
	} {
		var stdout, stderr bytes.Buffer
		o, code, ok := parseRunFlags([]string{"--config", tc.config, "--", "true"}, &stdout, &stderr)
		if !ok || o.config != tc.want {
			t.Errorf("--config %s: %q (exit %d, %s), want %q", tc.config, o.config, code, stderr.String(), tc.want)
		}
	}
}

func TestWrap(t *testing.T) {
	for _, tc := range []struct {
		in    string
		width int
		want  string
	}{
		{"a b c", 3, "a b\nc"},
		{"a\nb  c", 80, "a b c"},
		{"longword x", 4, "longword\nx"},
		{"", 10, ""},
	} {
		if got := wrap(tc.in, tc.width); got != tc.want {
			t.Errorf("wrap(%q, %d) = %q, want %q", tc.in, tc.width, got, tc.want)
		}
	}
}

func head(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

// TestManPage: vhqos(8) (its layout, docs/man/vhqos.8.md) has the same
// commands in its SYNOPSIS, each with the options its --help lists and
// their defaults, and the exit statuses its help gives. A new option,
// command, default or exit status fails here until the page says it.
func TestManPage(t *testing.T) {
	raw, err := os.ReadFile("../../docs/man/vhqos.8.md")
	if err != nil {
		t.Fatal(err)
	}
	page := string(raw)
	section := func(title string) string {
		m := regexp.MustCompile(`(?ms)^# ` + title + `\n(.*?)(?:^# |\z)`).FindStringSubmatch(page)
		if m == nil {
			t.Fatalf("vhqos(8) has no %s section", title)
		}
		return m[1]
	}
	synopsis := section("SYNOPSIS")
	commandsText := section("COMMANDS")
	exits := section("EXIT STATUS")
	// The COMMANDS section, cut at its "### vhqos NAME" subsections.
	perCommand := map[string]string{}
	parts := regexp.MustCompile(`(?m)^### vhqos ([a-z]+)`).Split(commandsText, -1)
	names := regexp.MustCompile(`(?m)^### vhqos ([a-z]+)`).FindAllStringSubmatch(commandsText, -1)
	for i, n := range names {
		perCommand[n[1]] = parts[i+1]
	}
	// The EXIT STATUS section: a term naming commands, then its text.
	exitOf := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^(\*\*vhqos .*)\n((?::   .*\n)(?:    .*\n)*)`).FindAllStringSubmatch(exits, -1) {
		for _, n := range regexp.MustCompile(`\*\*vhqos ([a-z]+)\*\*`).FindAllStringSubmatch(m[1], -1) {
			exitOf[n[1]] = m[2]
		}
	}
	statuses := func(text string, re string) []string {
		var out []string
		for _, m := range regexp.MustCompile(re).FindAllStringSubmatch(text, -1) {
			if !slices.Contains(out, m[1]) {
				out = append(out, m[1])
			}
		}
		slices.Sort(out)
		return out
	}
	for _, c := range commands() {
		var stdout, stderr bytes.Buffer
		if code := run([]string{"vhqos", c.name, "--help"}, &stdout, &stderr); code != 0 {
			t.Fatalf("vhqos %s --help: exit %d", c.name, code)
		}
		help := stdout.String()
		if line := "    " + strings.TrimSpace("vhqos "+c.name+" "+c.args) + "\n"; !strings.Contains(synopsis, line) {
			t.Errorf("vhqos(8)'s SYNOPSIS lacks %q", line)
		}
		text, ok := perCommand[c.name]
		if !ok {
			t.Errorf("vhqos(8)'s COMMANDS has no \"### vhqos %s\"", c.name)
			continue
		}
		var manOpts []string
		for _, m := range regexp.MustCompile(`(?m)^\*\*(--[a-z-]+)\*\*`).FindAllStringSubmatch(text, -1) {
			manOpts = append(manOpts, m[1])
		}
		slices.Sort(manOpts)
		if opts := helpOptions(help); !slices.Equal(opts, manOpts) {
			t.Errorf("vhqos %s: --help lists the options %q, vhqos(8) %q", c.name, opts, manOpts)
		}
		for o, def := range helpDefaults(help) {
			// An option described as another command's ("As for `vhqos
			// status`") has its default there.
			entry := manOption(text, o)
			if m := regexp.MustCompile("^As for `vhqos ([a-z]+)`").FindStringSubmatch(entry); m != nil {
				entry = manOption(perCommand[m[1]], o)
			}
			if !strings.Contains(unmark(entry), def) {
				t.Errorf("vhqos %s: %s's default is %s, which vhqos(8) does not say:\n%s", c.name, o, def, entry)
			}
		}
		// The statuses each names: "0;", "1 when", "**3**".
		inHelp := statuses(c.exit, `(?:^|; )(\d+)\b`)
		inMan := statuses(exitOf[c.name], `\*\*(\d+)\*\*`)
		if len(inHelp) == 0 || !slices.Equal(inHelp, inMan) {
			t.Errorf("vhqos %s: its help gives the exit statuses %q, vhqos(8) %q", c.name, inHelp, inMan)
		}
	}
	if len(perCommand) != len(commands()) {
		t.Errorf("vhqos(8) describes %d commands, vhqos has %d", len(perCommand), len(commands()))
	}
}

// TestReadmeUsage: README.md's Usage, the synopsis of every command with
// its options, names each command with exactly the options its --help
// lists.
func TestReadmeUsage(t *testing.T) {
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^## Usage\n\n((?:    .*\n)+)`).FindSubmatch(raw)
	if m == nil {
		t.Fatal("README.md has no section Usage starting with a code block")
	}
	// A command's synopsis: from "vhqos NAME" to the next command's,
	// continuation lines included.
	synopsis := map[string]string{}
	var name string
	for _, line := range strings.Split(string(m[1]), "\n") {
		if c := regexp.MustCompile(`^    vhqos ([a-z]+)`).FindStringSubmatch(line); c != nil {
			name = c[1]
		}
		synopsis[name] += line + "\n"
	}
	for _, c := range commands() {
		var stdout, stderr bytes.Buffer
		if code := run([]string{"vhqos", c.name, "--help"}, &stdout, &stderr); code != 0 {
			t.Fatalf("vhqos %s --help: exit %d", c.name, code)
		}
		text, ok := synopsis[c.name]
		if !ok {
			t.Errorf("README.md's Usage has no vhqos %s", c.name)
			continue
		}
		var opts []string
		for _, o := range regexp.MustCompile(`--[a-z][a-z-]*`).FindAllString(text, -1) {
			if !slices.Contains(opts, o) {
				opts = append(opts, o)
			}
		}
		slices.Sort(opts)
		if want := helpOptions(stdout.String()); !slices.Equal(opts, want) {
			t.Errorf("README.md's Usage gives vhqos %s the options %q; its --help lists %q", c.name, opts, want)
		}
	}
}

// helpDefaults are the defaults a command's help gives its options, as
// package flag adds them to each option's text: "(default 30s)" at its
// end.
func helpDefaults(help string) map[string]string {
	out := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^  (--[a-z-]+).*\n((?: {8}.*\n)*)`).FindAllStringSubmatch(help, -1) {
		if d := regexp.MustCompile(`\(default ([^)]*)\)$`).FindStringSubmatch(strings.Join(strings.Fields(m[2]), " ")); d != nil {
			out[m[1]] = d[1]
		}
	}
	return out
}

// manOption is the text vhqos(8) gives option in a command's part of
// COMMANDS: the definition under its term "**--name**", on one line.
func manOption(commandText, option string) string {
	m := regexp.MustCompile(`(?m)^\*\*` + option + `\*\*.*\n((?::   |    ).*\n)+`).FindString(commandText)
	_, def, _ := strings.Cut(m, "\n")
	return strings.Join(strings.Fields(strings.TrimPrefix(def, ":")), " ")
}

// unmark is Markdown text as the page shows it: without the marks for
// code and emphasis.
func unmark(md string) string { return strings.NewReplacer("`", "", "*", "").Replace(md) }

// TestBashCompletion: the bash completion (dist/bash-completion/vhqos,
// loaded as bash-completion loads it) offers every command, and for each
// exactly the options its --help lists (and --, where a server's command
// follows it). A new option fails here until the completion offers it.
func TestBashCompletion(t *testing.T) {
	const lib = "/usr/share/bash-completion/bash_completion"
	if _, err := os.Stat(lib); err != nil {
		t.Fatal("bash-completion is not installed: apt-get install bash-completion (.ci/deps installs it)")
	}
	complete := func(line string) []string {
		t.Helper()
		// COMP_WORDS as bash splits the line, an empty last word after a
		// space.
		words := strings.Fields(line)
		if strings.HasSuffix(line, " ") {
			words = append(words, "")
		}
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = "'" + w + "'"
		}
		script := `. ` + lib + `; . ../../dist/bash-completion/vhqos
COMP_WORDS=(` + strings.Join(quoted, " ") + `); COMP_CWORD=` + strconv.Itoa(len(words)-1) + `; COMP_LINE='` + line + `'; COMP_POINT=${#COMP_LINE}
_vhqos; printf '%s\n' "${COMPREPLY[@]}"`
		out, err := exec.Command("bash", "-c", script).Output()
		if err != nil {
			t.Fatalf("completing %q: %v", line, err)
		}
		got := strings.Fields(string(out))
		slices.Sort(got)
		return got
	}
	var names []string
	for _, c := range commands() {
		names = append(names, c.name)
		var stdout, stderr bytes.Buffer
		if code := run([]string{"vhqos", c.name, "--help"}, &stdout, &stderr); code != 0 {
			t.Fatalf("vhqos %s --help: exit %d", c.name, code)
		}
		want := helpOptions(stdout.String())
		if strings.Contains(c.args, "--") {
			want = append(want, "--")
		}
		slices.Sort(want)
		if got := complete("vhqos " + c.name + " --"); !slices.Equal(got, want) {
			t.Errorf("the bash completion offers %s the options %q; its --help lists %q", c.name, got, want)
		}
	}
	slices.Sort(names)
	if got := complete("vhqos "); !slices.Equal(got, names) {
		t.Errorf("the bash completion offers the commands %q, vhqos has %q", got, names)
	}
}

// TestCommandLineErrors: a bad command line is refused, with the option
// as the user typed it and what is wrong with its value, before anything
// is asked of a running vhqos or written.
func TestCommandLineErrors(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	os.WriteFile(good, []byte("[[vhost]]\nname = \"a\"\nmatch = [\"192.0.2.1\"]\n"), 0o644)
	none := filepath.Join(dir, "none.sock")
	for _, tc := range []struct {
		args []string
		says string
	}{
		// One dash does as well as two, and is said as typed.
		{[]string{"check", "-x", good}, "vhqos check: unknown option -x; see 'vhqos help check'"},
		{[]string{"check", "--x", good}, "vhqos check: unknown option --x;"},
		{[]string{"status", "-socket"}, "a value is missing after -socket"},
		{[]string{"status", "-json=maybe"}, `invalid value "maybe" for option -json`},
		{[]string{"--bogus"}, "vhqos: unknown option --bogus; a command comes first"},
		// vhqos run's own parts parse as every command does, without
		// pointing at a help they do not have.
		{[]string{"supervise", "-bogus"}, "vhqos supervise: unknown option -bogus\n"},
		{[]string{"reap", "--keeper-state", "{}", "extra"}, "vhqos reap: unexpected \"extra\"\n"},
		{[]string{"supervise", "--help"}, "vhqos supervise is started by vhqos run, not by hand"},
		{[]string{"-version", "extra"}, `unexpected "extra"`},
		// Durations: a refresh 1,000 times a second, a wait that ends
		// before it starts, or none at all, are mistakes.
		{[]string{"status", "--socket", none, "--watch=1ms"}, `invalid value "1ms" for option --watch: must be 100ms or more`},
		{[]string{"status", "--socket", none, "--watch", "0s"}, "must be 100ms or more"},
		{[]string{"status", "--socket", none, "--watch", "-1s"}, "must be 100ms or more"},
		{[]string{"status", "--watch", "often"}, `invalid value "often" for option --watch: not a duration (as 30s, 500ms or 2m)`},
		{[]string{"reload", "--socket", none, "--timeout", "-1s"}, `invalid value "-1s" for option --timeout: must be 1s or more`},
		{[]string{"upgrade", "--socket", none, "--timeout", "0"}, "must be 1s or more"},
		{[]string{"run", "--stop-timeout", "-1s", "--", "true"}, `invalid value "-1s" for option --stop-timeout: must not be negative`},
		{[]string{"run", "--metrics-listen", "9464", "--", "true"}, `vhqos run: --metrics-listen: "9464" is not HOST:PORT or :PORT`},
		{[]string{"run", "--metrics-listen", ":http-alt", "--", "true"}, `the port "http-alt" is not a number from 1 to 65535`},
		{[]string{"run", "--metrics-listen", "bad_host:9464", "--", "true"}, `"bad_host" is neither an IP address nor a host name`},
		// What enable writes into a unit is checked first.
		{[]string{"enable", "nginx", "--config", good, "--status-socket", "run/nginx.sock"}, "--status-socket run/nginx.sock: the unit's vhqos starts in /, so name the socket by its absolute path"},
		{[]string{"enable", "nginx", "--config", good, "--metrics-listen", "localhost"}, `--metrics-listen: "localhost" is not HOST:PORT or :PORT`},
		{[]string{"enable", "nginx", "--root", dir, "--config", "etc/vhqos/qos.toml"}, "--config etc/vhqos/qos.toml: with --root, name the table by its absolute path inside that system (as /etc/vhqos/qos.toml for " + dir + "/etc/vhqos/qos.toml)"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(append([]string{"vhqos"}, tc.args...), &stdout, &stderr); code != exitUsage || !strings.Contains(stderr.String(), tc.says) {
				t.Errorf("exit %d, said %q; want %d saying %q", code, stderr.String(), exitUsage, tc.says)
			}
		})
	}
	// The least values themselves are taken.
	for _, args := range [][]string{{"status", "--socket", none, "--watch", "100ms"}, {"reload", "--socket", none, "--timeout", "1s"}} {
		var stdout, stderr bytes.Buffer
		if code := run(append([]string{"vhqos"}, args...), &stdout, &stderr); code != exitNotRunning {
			t.Errorf("vhqos %s: exit %d (%s), want %d: no vhqos on the socket", strings.Join(args, " "), code, stderr.String(), exitNotRunning)
		}
	}
}
