package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/vhqos/vhqos/status"
)

// Exit statuses every command shares; vhqos run exits with its server's.
const (
	// exitUsage: a bad command line (an unknown option, a missing or
	// extra operand), or a QoS table with mistakes.
	exitUsage = 2
	// exitNotRunning: no vhqos answers on the status socket.
	exitNotRunning = 3
)

// command is one of vhqos's commands, as `vhqos help` and
// `vhqos COMMAND --help` describe it.
type command struct {
	name string
	// args is what follows the name in a synopsis; "[options]" stands for
	// the options the command's flag set defines.
	args string
	// about says what the command does, for a terminal.
	about string
	// exit lists the command's exit statuses.
	exit string
	main func(args []string, stdout, stderr io.Writer) int
}

// commands are the commands a user runs, in the order help lists them
// (supervise and reap are vhqos run's own parts, not listed).
func commands() []command {
	return []command{
		{
			name: "run", args: "[options] [--] SERVER [ARGS...]",
			about: `Start SERVER under vhqos. Every connection it accepts is matched
against the QoS table; the process serving it is moved into that
vhost's cgroup and the socket is marked with its DSCP before the server
sees it. The table is re-read whenever its file changes, and on SIGHUP;
a table with mistakes is refused and the old one stays. Signals TERM
INT HUP QUIT USR1 USR2 WINCH are passed on to the server; vhqos exits
with the server's status and leaves no process and no cgroup behind.
File descriptors vhqos inherits from 3 up (socket activation:
LISTEN_FDS) reach SERVER at the same numbers, and a LISTEN_PID naming
vhqos names SERVER. What SERVER tells NOTIFY_SOCKET (sd_notify) reaches
systemd from vhqos, the unit's main process, without MAINPID=. Options
come first: SERVER is the first word that is not one (or follows --).`,
			exit: `the server's exit status, or 128+N when signal N killed it; 2 for a bad
command line or a QoS table with mistakes; 1 when vhqos cannot start
(not root, no seccomp, no cgroup controller, SERVER not found).`,
			main: func(args []string, stdout, stderr io.Writer) int { return runCommand(args, stdout, stderr) },
		},
		{
			name: "check", args: "FILE",
			about: `Validate a QoS table and explain every problem with its line and key.
Limits on disks this machine lacks are warnings: run skips them too.`,
			exit: `0 when the table is good, warnings or not; 2 when it has mistakes or
cannot be read, and for a bad command line.`,
			main: checkCommand,
		},
		{
			name: "status", args: "[options]",
			about: `Show, per vhost, live and total connections, processes, CPU and IO
used, how often cpu_max held it back, its DSCP and limits; then the
keeper's and the supervisor's health. Only root may ask.`,
			exit: `0; 3 when no vhqos answers on the socket; 1 when it cannot be asked
(not root); 2 for a bad command line.`,
			main: statusCommand,
		},
		{
			name: "reload", args: "[options]",
			about: `Re-read the QoS table of the running vhqos now (as SIGHUP does),
leaving the server alone, and wait until the table is in force or
refused (its problems are printed): what a unit's ExecReload= runs.`,
			exit: `0 when the table is in force; 1 when it was refused or not taken in
time; 3 when no vhqos answers on the socket; 2 for a bad command line.`,
			main: reloadCommand,
		},
		{
			name: "upgrade", args: "[options]",
			about: `Replace the running supervisor with the vhqos binary now on disk,
losing nothing: the old one hands over the accepts and counters it
holds. The server keeps running; vhqos run (the keeper, the process
systemd sees) stays as it is.`,
			exit: `0 when the new supervisor runs; 1 when it did not start (the old one
carries on); 3 when no vhqos answers on the socket; 2 for a bad command
line.`,
			main: upgradeCommand,
		},
		{
			name: "enable", args: "UNIT [options] [-- SERVER [ARGS...]]",
			about: `Run a systemd service's server under vhqos: check the QoS table, write
the drop-in /etc/systemd/system/UNIT.d/vhqos.conf (ExecStart= wrapped in
vhqos run, the table checked by ExecStartPre=, Delegate=yes, ExecReload=
for the table and the server, a refused table not failing the server's;
Type=forking Apache and nginx kept in the foreground) and reload
systemd. Restart the unit to take effect. SERVER, with an absolute
path, replaces the unit's own command (for a Type=forking unit vhqos
does not know).`,
			exit: `0 when the drop-in is written; 1 when the unit cannot be put under
vhqos (no such unit, a table with mistakes, a unit vhqos cannot wrap,
systemctl daemon-reload failed); 2 for a bad command line or unit name.`,
			main: enableCommand,
		},
		{
			name: "disable", args: "UNIT [options]",
			about: `Remove the drop-in vhqos enable wrote for UNIT and reload systemd;
the unit runs without vhqos once restarted.`,
			exit: `0 when the drop-in is removed, or there was none; 1 when it cannot be
removed; 2 for a bad command line or unit name.`,
			main: disableCommand,
		},
		{
			name: "version", args: "", about: "Print vhqos's version.", exit: "0; 2 for a bad command line.",
			main: versionCommand,
		},
		{
			name: "help", args: "[COMMAND]",
			about: `Print this overview, or a command's options and exit statuses (what
vhqos COMMAND --help prints).`,
			exit: "0; 2 for an unknown command or a bad command line.",
			main: helpCommand,
		},
	}
}

func lookupCommand(name string) *command {
	for _, c := range commands() {
		if c.name == name {
			return &c
		}
	}
	return nil
}

// writeUsage prints the overview of every command.
func writeUsage(w io.Writer) {
	fmt.Fprint(w, `vhqos gives each virtual host of an unmodified server its own cgroup
(CPU, IO, memory and task limits) and DSCP mark.

Usage: vhqos COMMAND [options] [operands]

`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  vhqos %s\n", strings.TrimSpace(c.name+" "+c.args))
		fmt.Fprint(w, indent(wrap(c.about, 70), "        "))
	}
	fmt.Fprint(w, `
Options go before or after a command's operands (vhqos enable apache2
--config FILE); what follows -- is never an option. 'vhqos help COMMAND'
(or 'vhqos COMMAND --help') lists a command's options and exit statuses;
man vhqos and man vhqos-qos.toml have everything.
`)
}

// writeCommandHelp prints what `vhqos NAME --help` shows: the synopsis,
// what it does, its options (from fs, so that they are the ones parsed)
// and its exit statuses.
func writeCommandHelp(w io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: vhqos %s\n\n", strings.TrimSpace(c.name+" "+c.args))
	fmt.Fprint(w, wrap(c.about, 72), "\n")
	var opts strings.Builder
	fs.VisitAll(func(f *flag.Flag) {
		value, usage := flag.UnquoteUsage(f)
		if isBoolFlag(f) {
			value = ""
		}
		fmt.Fprintf(&opts, "  --%s", f.Name)
		if value != "" {
			fmt.Fprintf(&opts, " %s", value)
		}
		if d := f.DefValue; d != "" && d != "false" && d != "0" && d != "0s" {
			usage += " (default " + d + ")"
		}
		fmt.Fprintf(&opts, "\n%s", indent(wrap(usage, 64), "        "))
	})
	if opts.Len() > 0 {
		fmt.Fprintf(w, "\nOptions:\n%s", opts.String())
	}
	fmt.Fprintf(w, "\nExit status:\n%s", indent(wrap(c.exit, 70), "  "))
}

// newFlagSet makes the flag set of command name. It prints nothing
// itself: parseFlags says its errors and prints the command's help.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("vhqos "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parsed is a command line taken apart: the options are set in the flag
// set; operands came before --, and afterDash after it.
type parsed struct {
	operands  []string
	afterDash []string
}

// parseCommandLine sets the options of fs from args, which may come
// before, between and after the operands (vhqos enable apache2 --config
// FILE, as users type it), up to a "--"; a word after it is never an
// option. --help (-h) prints the command's help on stdout: ok is false
// and code 0. A bad option is said on stderr: ok false, code 2.
func parseCommandLine(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (p parsed, code int, ok bool) {
	var opts []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			p.afterDash = args[i+1:]
			break
		}
		if len(a) < 2 || a[0] != '-' {
			p.operands = append(p.operands, a)
			continue
		}
		opts = append(opts, a)
		// An option that takes a value and has none after "=" takes the
		// next word, as package flag does.
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if f := fs.Lookup(name); f != nil && !hasValue && !isBoolFlag(f) && i+1 < len(args) {
			i++
			opts = append(opts, args[i])
		}
	}
	if code, ok := parseFlags(fs, opts, stdout, stderr); !ok {
		return p, code, false
	}
	return p, 0, true
}

// parseLeading sets the options of fs from the start of args up to the
// first word that is not one (or a --), and returns the rest: for vhqos
// run, whose server's own options follow its name.
func parseLeading(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (rest []string, code int, ok bool) {
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return nil, code, false
	}
	return fs.Args(), 0, true
}

// parseFlags is where every command's options are parsed, vhqos run's
// own parts (supervise, reap) too: --help prints the command's help, an
// error is said once, in the same words for every command.
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (code int, ok bool) {
	err := fs.Parse(args)
	if err == nil {
		return 0, true
	}
	c := commandOf(fs)
	if errors.Is(err, flag.ErrHelp) {
		if c == nil {
			fmt.Fprintf(stderr, "%s is started by vhqos run, not by hand; see 'vhqos help run'\n", fs.Name())
			return exitUsage, false
		}
		writeCommandHelp(stdout, c, fs)
		return 0, false
	}
	fmt.Fprintf(stderr, "%s: %s%s\n", fs.Name(), optionError(err.Error(), args), seeHelp(c))
	return exitUsage, false
}

// commandOf is the command whose flag set (newFlagSet) fs is, nil for
// vhqos run's own parts.
func commandOf(fs *flag.FlagSet) *command {
	return lookupCommand(strings.TrimPrefix(fs.Name(), "vhqos "))
}

// seeHelp points at the help of c; vhqos run's own parts (supervise,
// reap), which help does not list, have none.
func seeHelp(c *command) string {
	if c == nil {
		return ""
	}
	return "; see 'vhqos help " + c.name + "'"
}

// parseArgs is parseCommandLine for commands with at most max operands
// and no --: more is said on stderr.
func parseArgs(fs *flag.FlagSet, args []string, max int, stdout, stderr io.Writer) (operands []string, code int, ok bool) {
	p, code, ok := parseCommandLine(fs, args, stdout, stderr)
	if !ok {
		return nil, code, false
	}
	extra := append(p.operands, p.afterDash...)
	if len(extra) > max {
		fmt.Fprintf(stderr, "%s: unexpected %q%s\n", fs.Name(), extra[max], seeHelp(commandOf(fs)))
		return nil, exitUsage, false
	}
	return extra, 0, true
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// flagErrors are package flag's error messages, the option's name (without
// its dashes) in the second group.
var flagErrors = []struct {
	re   *regexp.Regexp
	says string // with %[1]s for the option as typed, %[2]s for the rest
}{
	{regexp.MustCompile(`^flag provided but not defined: -()(.+)$`), "unknown option %[2]s"},
	{regexp.MustCompile(`^flag needs an argument: -()(.+)$`), "a value is missing after %[2]s"},
	{regexp.MustCompile(`^invalid (?:boolean )?value (".*") for (?:flag )?-([^:]+): (.*)$`), "invalid value %[1]s for option %[2]s: %[3]s"},
	{regexp.MustCompile(`^bad flag syntax: ()(.*)$`), "bad option: %[2]s"},
}

// optionError says one of package flag's errors about args as the help
// names options, "option", and with the option spelt as the user typed
// it (-x or --x: package flag takes both, and says -x for either).
func optionError(msg string, args []string) string {
	for _, e := range flagErrors {
		m := e.re.FindStringSubmatch(msg)
		if m == nil {
			continue
		}
		rest := ""
		if len(m) > 3 {
			rest = m[3]
		}
		option := m[2]
		if !strings.HasPrefix(e.says, "bad") {
			option = typedAs(m[2], args)
		}
		return fmt.Sprintf(e.says, m[1], option, rest)
	}
	return msg
}

// typedAs is option name as args spell it, "-name" or "--name"; "--name"
// when they do not.
func typedAs(name string, args []string) string {
	for _, a := range args {
		bare := strings.TrimLeft(a, "-")
		if n, _, _ := strings.Cut(bare, "="); n == name && bare != a {
			return a[:len(a)-len(bare)] + name
		}
	}
	return "--" + name
}

// The least values of duration options: --watch's refresh (as watch(1)'s
// 0.1 s: a report reads every vhost's cgroup files), the waits of
// reload's and upgrade's --timeout (a reload or a supervisor's start on
// a busy machine takes a good part of a second).
const (
	minWatch   = 100 * time.Millisecond
	minTimeout = time.Second
)

// checkMetricsAddr checks a --metrics-listen address before anything
// relies on it: HOST:PORT or :PORT, HOST an IP address or a name, PORT a
// number from 1 to 65535.
func checkMetricsAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not HOST:PORT or :PORT (as 127.0.0.1:9464 or :9464)", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: the port %q is not a number from 1 to 65535", addr, port)
	}
	if host != "" && net.ParseIP(host) == nil && !hostName.MatchString(host) {
		return fmt.Errorf("%q: %q is neither an IP address nor a host name", addr, host)
	}
	return nil
}

// hostName is a DNS name as RFC 1123 section 2.1 allows it.
var hostName = regexp.MustCompile(`^(?i)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?$`)

// socketOption defines --socket, the status socket of the vhqos that
// status, reload and upgrade ask.
func socketOption(fs *flag.FlagSet) *string {
	return fs.String("socket", status.DefaultSocket, "ask the vhqos whose status socket is `PATH` (vhqos run's --status-socket)")
}

// durationValue is an option taking a duration no shorter than min.
type durationValue struct {
	d   *time.Duration
	min time.Duration
}

func (v durationValue) String() string {
	if v.d == nil {
		return ""
	}
	return v.d.String()
}

func (v durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("not a duration (as 30s, 500ms or 2m)")
	}
	switch {
	case d < v.min && v.min == 0:
		return errors.New("must not be negative")
	case d < v.min:
		return fmt.Errorf("must be %v or more", v.min)
	}
	*v.d = d
	return nil
}

// durationOption defines an option taking a duration of at least min on
// fs, as fs.Duration does (value is its default).
func durationOption(fs *flag.FlagSet, name string, value, min time.Duration, usage string) *time.Duration {
	d := new(time.Duration)
	*d = value
	fs.Var(durationValue{d: d, min: min}, name, usage)
	return d
}

// indent prefixes every line of text, which it ends with a newline.
func indent(text, prefix string) string {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n") + "\n"
}

// wrap breaks text into lines of at most width columns, at spaces.
func wrap(text string, width int) string {
	var b strings.Builder
	col := 0
	for _, w := range strings.Fields(text) {
		switch {
		case col == 0:
		case col+1+len(w) > width:
			b.WriteByte('\n')
			col = 0
		default:
			b.WriteByte(' ')
			col++
		}
		b.WriteString(w)
		col += len(w)
	}
	return b.String()
}
