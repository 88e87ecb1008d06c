package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/vhqos/vhqos/cgroup"
	"golang.org/x/sys/unix"
)

// The reaper: a small child of the keeper (`vhqos reap`, started by vhqos
// run, never by hand) that outlives it. The server cannot run on without
// the keeper's notification fd (its next intercepted call fails with
// ENOSYS, and some servers then spin on it), so when the keeper dies,
// killed outright, the reaper kills every process left in vhqos's cgroups.
// It waits on the keeper's pidfd, which says when the whole process is
// gone, whichever thread started the reaper. After a clean exit the keeper
// has removed the cgroups already, and the reaper finds nothing to do.

func reapCommand(args []string, stderr io.Writer) int {
	fs := newFlagSet("reap")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "text or json")
	state := fs.String("keeper-state", "", "what the keeper says (JSON)")
	if _, code, ok := parseArgs(fs, args, 0, io.Discard, stderr); !ok {
		return code
	}
	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		fmt.Fprintln(stderr, "vhqos reap:", err)
		return 2
	}
	var ks keeperState
	if err := json.Unmarshal([]byte(*state), &ks); err != nil {
		fmt.Fprintln(stderr, "vhqos reap: started without --keeper-state: it is started by vhqos run, not by hand")
		return 2
	}
	log = log.With("reaper_pid", unix.Getpid())
	keeper, err := unix.PidfdOpen(ks.KeeperPID, 0)
	if err != nil {
		log.Error("cannot watch the keeper; its server's processes will outlive it if it is killed", "keeper_pid", ks.KeeperPID, "err", err)
		return 1
	}
	fds := []unix.PollFd{{Fd: int32(keeper), Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(fds, -1); err != unix.EINTR {
			break
		}
	}
	cg, err := cgroup.New(context.Background(), cgroup.Options{Parent: ks.CgroupParent, Name: ks.CgroupName, Attach: true})
	if err != nil {
		return 0 // removed by the keeper: a clean exit
	}
	defer cg.Close(context.Background())
	if n := killSubtree(cg); n > 0 {
		log.Error("the keeper died; killed the server's processes", "keeper_pid", ks.KeeperPID, "killed", n)
	}
	// What the keeper would have given back as it exited.
	releaseDevices(log, ks.ShapeDevices)
	return 0
}

// killSubtree kills every process in the cgroups of cg, until none is left
// or a second has passed, and returns how many it signalled.
func killSubtree(cg *cgroup.Manager) (killed int) {
	seen := map[int]bool{}
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		left := 0
		for _, g := range cg.Groups() {
			pids, _ := cg.Pids(g)
			for _, pid := range pids {
				unix.Kill(pid, unix.SIGKILL)
				if !seen[pid] {
					seen[pid] = true
					killed++
				}
			}
			left += len(pids)
		}
		if left == 0 {
			break
		}
	}
	return killed
}
