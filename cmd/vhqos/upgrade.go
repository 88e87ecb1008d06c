package main

import (
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/vhqos/vhqos/status"
)

// upgradeCommand replaces the running supervisor with the binary now on
// disk: the keeper starts it, the old one hands over what it holds, and
// the server notices nothing.
func upgradeCommand(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("upgrade")
	socket := socketOption(fs)
	timeout := durationOption(fs, "timeout", 30*time.Second, minTimeout, "wait at most `DURATION` (1s or more) for the new supervisor to take over")
	if _, code, ok := parseArgs(fs, args, 0, stdout, stderr); !ok {
		return code
	}
	before, err := status.Fetch(*socket)
	if err != nil {
		fmt.Fprintln(stderr, "vhqos upgrade:", err)
		if errors.Is(err, status.ErrNotRunning) {
			return exitNotRunning
		}
		return 1
	}
	if before.KeeperPID == 0 {
		fmt.Fprintln(stderr, "vhqos upgrade: the running vhqos is too old to be upgraded in place; restart it")
		return 1
	}
	if err := syscall.Kill(before.KeeperPID, upgradeSignal); err != nil {
		fmt.Fprintf(stderr, "vhqos upgrade: asking vhqos run (pid %d): %v\n", before.KeeperPID, err)
		return 1
	}
	for deadline := time.Now().Add(*timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		now, err := status.Fetch(*socket)
		if err != nil || now.SupervisorPID == before.SupervisorPID || now.Upgrades <= before.Upgrades {
			continue
		}
		fmt.Fprintf(stdout, "supervisor %d (%s) replaced by %d (%s)\n", before.SupervisorPID, before.SupervisorVersion, now.SupervisorPID, now.SupervisorVersion)
		return 0
	}
	fmt.Fprintf(stderr, "vhqos upgrade: no new supervisor within %v; vhqos run's log says why (the old one carries on)\n", *timeout)
	return 1
}
