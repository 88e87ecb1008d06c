// Command vhqos runs an unmodified server so that every virtual host it
// serves gets its own CPU and IO limits and DSCP mark. See `vhqos help`.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/vhqos/vhqos/shim"
)

const usage = `vhqos gives each virtual host of an unmodified server its own cgroup
CPU/IO limits and DSCP mark.

Usage:
  vhqos run [--config FILE] [options] -- SERVER [ARGS...]
        Start SERVER under vhqos. Every connection it accepts is matched
        against the QoS table; the process serving it is moved into that
        vhost's cgroup and the socket is marked with its DSCP before the
        server sees it. The table is re-read whenever its file changes, and
        on SIGHUP; a table with mistakes is refused and the old one stays.
        Signals TERM INT HUP QUIT USR1 USR2 WINCH are
        forwarded to the server; vhqos exits with the server's status
        (128+N if it was killed by signal N) and leaves no process and no
        cgroup behind. File descriptors vhqos inherits from 3 up (socket
        activation: LISTEN_FDS) reach SERVER at the same numbers, and a
        LISTEN_PID naming vhqos names SERVER. What SERVER tells
        NOTIFY_SOCKET (sd_notify) reaches systemd from vhqos, the unit's
        main process, without MAINPID=.
  vhqos check FILE
        Validate a QoS table and explain every problem with its line and key.
        Limits on disks this machine lacks are warnings (exit status 0):
        run skips them too.
  vhqos status [--socket PATH] [--json] [--watch 2s]
        Show, per vhost, live and total connections, processes, CPU and IO
        used, how often cpu_max held it back, its DSCP and limits. Only root
        may ask. Exit status 3 when no vhqos answers on the socket.
  vhqos upgrade [--socket PATH] [--timeout 30s]
        Replace the running supervisor with the vhqos binary now on disk,
        losing nothing: the old one hands over the accepts and counters it
        holds. The server keeps running; vhqos run (the keeper, the
        process systemd sees) stays as it is.
  vhqos reload [--socket PATH] [--timeout 30s]
        Re-read the QoS table of the running vhqos now (as SIGHUP does),
        leaving the server alone; wait until it is in force (exit 0) or
        refused (exit 1, with its problems).
  vhqos enable UNIT [--config FILE] [--status-socket PATH]
               [--metrics-listen ADDR] [--root DIR] [-- SERVER [ARGS...]]
        Run a systemd service's server under vhqos: writes the drop-in
        /etc/systemd/system/UNIT.d/vhqos.conf (ExecStart= wrapped in
        vhqos run, Delegate=yes, ExecReload= for the table and the server;
        Type=forking Apache and nginx kept in the foreground) and reloads
        systemd. The status socket is /run/vhqos/UNIT.sock. Restart the
        unit to take effect.
  vhqos disable UNIT [--root DIR]
        Remove that drop-in and reload systemd.
  vhqos version
  vhqos help

Options for run:
  --config FILE        QoS table (default /etc/vhqos/qos.toml)
  --stop-timeout DUR   after forwarding TERM/INT/QUIT, how long the server
                       may take to exit before everything left is killed
                       (default 30s)
  --log-level LEVEL    debug, info, warn or error (default info)
  --log-format FORMAT  text or json (default text)
  --status-socket PATH where "vhqos status" finds this vhqos (default
                       /run/vhqos/status.sock; give a second vhqos on the
                       same host its own)
  --metrics-listen ADDR
                       serve Prometheus metrics at http://ADDR/metrics;
                       ":9464" means 127.0.0.1:9464 (default: off)

Exit status: the server's; 2 for a bad command line or QoS table; 1 when
vhqos itself cannot start (not root, no seccomp, no cgroup controller).
`

// version is set by the Makefile through -ldflags.
var version = "dev"

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 1 && args[1] == shim.Arg {
		return shim.Main(args[2:])
	}
	if len(args) < 2 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[1] {
	case "run":
		return runCommand(args[2:], stderr)
	case "supervise":
		// Started by vhqos run (the keeper), not by hand.
		return superviseCommand(args[2:], stdout, stderr)
	case "reap":
		// Started by vhqos run (the keeper), not by hand.
		return reapCommand(args[2:], stderr)
	case "upgrade":
		return upgradeCommand(args[2:], stdout, stderr)
	case "check":
		return checkCommand(args[2:], stdout, stderr)
	case "reload":
		return reloadCommand(args[2:], stdout, stderr)
	case "enable":
		return enableCommand(args[2:], stdout, stderr)
	case "disable":
		return disableCommand(args[2:], stdout, stderr)
	case "status":
		return statusCommand(args[2:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "vhqos", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "vhqos: unknown command %q; see 'vhqos help'\n", args[1])
		return 2
	}
}
