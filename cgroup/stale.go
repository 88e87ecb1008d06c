package cgroup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// stalePrefix starts the names vhqos gives its subtrees: "vhqos." and the
// PID of the process that owns the subtree (the one that made it with New).
const stalePrefix = "vhqos."

// RemoveStale removes the subtrees that vhqos processes which no longer run
// left under parent: a vhqos killed by SIGKILL cannot run Close. parent is
// as Options.Parent ("" is the caller's own cgroup, under v2 also when the
// caller already sits in its leaf vhqos.<PID>.supervisor).
//
// In every hierarchy New would use, it looks at the directories directly
// under parent named exactly "vhqos." and a PID in decimal (no sign, no
// leading zero) and takes only those whose PID names no process: kill(PID,
// 0) fails with ESRCH in the caller's PID namespace (vhqos processes that
// share a parent must share one). A directory whose PID is alive, whatever
// that process is (a PID may have been reused), is never touched, nor is
// the caller's own vhqos.<os.Getpid()>, nor any other name. From each stale
// subtree it kills every process still inside, as Close does (under v2 by
// cgroup.kill where the kernel has it, otherwise SIGKILL to each process
// of every cgroup below, in every hierarchy, until none is left, bounded by
// ctx), then removes its cgroups, children first.
//
// It returns the subtree directories it removed, one per hierarchy, and
// logs each at Info with the number of processes killed there. A failure
// with one subtree does not stop the others; the error joins them all.
func RemoveStale(ctx context.Context, parent string, log *slog.Logger) ([]string, error) {
	lay, err := hostLayout()
	if err != nil {
		return nil, err
	}
	return removeStale(ctx, parent, log, lay)
}

func removeStale(ctx context.Context, parent string, log *slog.Logger, lay layout) ([]string, error) {
	if parent != "" {
		if err := validParent(parent); err != nil {
			return nil, err
		}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{log: log.With("component", "cgroup"), self: os.Getpid()}
	own := stalePrefix + strconv.Itoa(m.self)
	var err error
	if lay.v2mount != "" {
		m.version = 2
		err = m.findV2(parent, lay.v2mount, own+"."+supervisorLeaf)
	} else {
		m.version = 1
		err = m.findV1(parent)
	}
	if err != nil {
		return nil, err
	}
	owners := make(map[string]int)
	for _, h := range m.hier {
		entries, err := os.ReadDir(h.dir())
		if errors.Is(err, os.ErrNotExist) {
			continue // no parent, no leftovers
		}
		if err != nil {
			return nil, fmt.Errorf("cgroups: looking for stale vhqos subtrees: %w", err)
		}
		for _, e := range entries {
			if pid, ok := ownerPID(e.Name()); ok && e.IsDir() && pid != m.self {
				owners[e.Name()] = pid
			}
		}
	}
	names := make([]string, 0, len(owners))
	for name := range owners {
		names = append(names, name)
	}
	slices.Sort(names)
	var removed []string
	var errs []error
	for _, name := range names {
		pid := owners[name]
		if err := unix.Kill(pid, 0); err != unix.ESRCH {
			continue // alive (or not ours to signal): someone's, leave it
		}
		stale := &Manager{log: m.log, version: m.version, name: name, self: m.self, hier: m.hier}
		killed, err := stale.killAll(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("cgroups: removing the stale subtree of vhqos %d: %w", pid, err))
			continue
		}
		for i, dir := range stale.subtreeDirs() {
			if _, err := os.Stat(dir); err != nil {
				continue
			}
			if err := removeTree(ctx, dir); err != nil {
				errs = append(errs, fmt.Errorf("cgroups: removing the stale subtree of vhqos %d: %w", pid, err))
				continue
			}
			removed = append(removed, dir)
			m.log.Info("removed the cgroup subtree of a vhqos that no longer runs", "dir", dir, "pid", pid, "killed", killed[i])
		}
	}
	return removed, errors.Join(errs...)
}

// ownerPID parses a subtree name "vhqos.<PID>" exactly: decimal digits
// only, no leading zero, a positive PID.
func ownerPID(name string) (int, bool) {
	digits, ok := strings.CutPrefix(name, stalePrefix)
	if !ok || digits == "" || strings.TrimLeft(digits, "0123456789") != "" {
		return 0, false
	}
	pid, err := strconv.Atoi(digits)
	if err != nil || pid <= 0 || strconv.Itoa(pid) != digits {
		return 0, false
	}
	return pid, true
}
