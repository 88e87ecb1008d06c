package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
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
// commands in its SYNOPSIS, each with the options its --help lists, and
// the exit statuses its help gives; the bash completion knows them too.
// A new option, command or exit status fails here until the page says it.
func TestManPage(t *testing.T) {
	raw, err := os.ReadFile("../../docs/man/vhqos.8.md")
	if err != nil {
		t.Fatal(err)
	}
	page := string(raw)
	completion, err := os.ReadFile("../../dist/bash-completion/vhqos")
	if err != nil {
		t.Fatal(err)
	}
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
		for _, o := range helpOptions(help) {
			if !strings.Contains(string(completion), o) {
				t.Errorf("the bash completion does not know %s's %s", c.name, o)
			}
		}
		if !regexp.MustCompile(`\b` + c.name + `\b`).Match(completion) {
			t.Errorf("the bash completion does not know the command %s", c.name)
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
