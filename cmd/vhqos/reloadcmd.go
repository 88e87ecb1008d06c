package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/vhqos/vhqos/policy"
	"github.com/vhqos/vhqos/status"
)

// reloadCommand re-reads the QoS table of a running vhqos now, without
// signalling its server: what a unit's ExecReload= needs for servers
// whose own reload is not SIGHUP (Apache's graceful restart is SIGUSR1,
// and SIGHUP restarts it at once, dropping the requests in flight).
// Waits until the supervisor has taken the table or refused it: exit 0
// when it is in force, 1 when it was refused (its problems are printed)
// or not taken in time, 3 when no vhqos answers.
func reloadCommand(args []string, stdout, stderr io.Writer) int {
	fl := newFlagSet("reload")
	socket := socketOption(fl)
	timeout := durationOption(fl, "timeout", 30*time.Second, minTimeout, "wait at most `DURATION` (1s or more) for the table to be taken or refused")
	if _, code, ok := parseArgs(fl, args, 0, stdout, stderr); !ok {
		return code
	}
	if err := reloadTable(*socket, *timeout, stdout); err != nil {
		fmt.Fprintln(stderr, "vhqos reload:", err)
		if errors.Is(err, status.ErrNotRunning) {
			return exitNotRunning
		}
		return 1
	}
	return 0
}

// errTableRefused says a reload was refused.
var errTableRefused = errors.New("the QoS table was refused; the one before stays in force")

func reloadTable(socket string, timeout time.Duration, stdout io.Writer) error {
	deadline := time.Now().Add(timeout)
	before, err := status.Fetch(socket)
	if err != nil {
		return err
	}
	// Between a crash and the restart no supervisor runs; the next one
	// reads the file when it starts.
	for before.SupervisorPID == 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("no supervisor took over within %v (vhqos run's log says why)", timeout)
		}
		time.Sleep(50 * time.Millisecond)
		if before, err = status.Fetch(socket); err != nil {
			return err
		}
	}
	// What the supervisor would skip without counting, say at once.
	data, err := os.ReadFile(before.Config)
	if err != nil {
		return fmt.Errorf("reading the QoS table: %w", err)
	}
	if policy.Blank(data) {
		return fmt.Errorf("%s is empty, which vhqos takes for a write in progress; the table in force stays (write a comment into it to run without vhosts)", before.Config)
	}
	// The supervisor reloads on SIGHUP; the keeper would pass SIGHUP on
	// to the server too.
	if err := syscall.Kill(before.SupervisorPID, syscall.SIGHUP); err != nil {
		return fmt.Errorf("asking the supervisor (pid %d) to reload: %w", before.SupervisorPID, err)
	}
	for ; time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		now, err := status.Fetch(socket)
		if err != nil {
			continue // a supervisor that crashed meanwhile: the keeper answers once the next runs
		}
		switch {
		case now.SupervisorPID != before.SupervisorPID && now.SupervisorPID != 0:
			// A new supervisor (restart, upgrade) read the file when it
			// started, or kept the table in force if the file is bad.
			fmt.Fprintf(stdout, "a new supervisor (pid %d) runs with table generation %d from %s\n", now.SupervisorPID, now.Generation, now.Config)
			return nil
		case now.SupervisorPID != before.SupervisorPID:
			continue
		case now.Supervisor.ReloadsRefused > before.Supervisor.ReloadsRefused:
			return refusedTable(now)
		case now.Supervisor.Reloads > before.Supervisor.Reloads:
			fmt.Fprintf(stdout, "reloaded %s: table generation %d\n", now.Config, now.Generation)
			return nil
		}
	}
	return fmt.Errorf("the supervisor has not reloaded the table within %v (vhqos run's log says why)", timeout)
}

// refusedTable says why, as the supervisor that refused it reports: the
// table's mistakes as vhqos check prints them, or what applying it ran
// into (a setting that cannot change while vhqos runs, a limit the
// kernel refused). A vhqos too old to report it is asked by the log.
func refusedTable(now *status.Report) error {
	if now.TableRefusedWhy != "" {
		return fmt.Errorf("%w:\n%s", errTableRefused, now.TableRefusedWhy)
	}
	return fmt.Errorf("%w (vhqos run's log says why)", errTableRefused)
}
