package cgroup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/cgroups/v3"
	"golang.org/x/sys/unix"
)

// readPids reads the ids in a cgroup.procs, cgroup.threads or tasks file.
func readPids(file string) ([]int, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		if n, err := strconv.Atoi(f); err == nil {
			pids = append(pids, n)
		}
	}
	return pids, nil
}

// cgroupDirs lists dir and every cgroup below it, parents before children.
func cgroupDirs(dir string) ([]string, error) {
	var dirs []string
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while we looked
			}
			return err
		}
		if e.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	return dirs, err
}

// procsUnder lists the processes in dir and every cgroup below it.
func procsUnder(dir string) ([]int, error) {
	dirs, err := cgroupDirs(dir)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, d := range dirs {
		list, err := readPids(filepath.Join(d, "cgroup.procs"))
		if errors.Is(err, unix.EOPNOTSUPP) {
			// A threaded cgroup (threads.go): its processes are listed
			// by the threaded subtree's domain, higher up.
			continue
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		pids = append(pids, list...)
	}
	slices.Sort(pids)
	return slices.Compact(pids), nil
}

// removeTree removes dir and every cgroup below it, children first,
// retrying while the kernel still counts exiting processes (EBUSY) until
// ctx ends.
func removeTree(ctx context.Context, dir string) error {
	dirs, err := cgroupDirs(dir)
	if err != nil {
		return fmt.Errorf("listing %s: %w", dir, err)
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		err := retryBusy(ctx, func() error {
			if err := unix.Rmdir(d); err != nil && err != unix.ENOENT {
				return &os.PathError{Op: "rmdir", Path: d, Err: err}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// killAll kills every process in the subtree and waits until none is left
// or ctx ends. Under v2 one write to cgroup.kill does it (Linux 5.14+);
// otherwise, and under v1, every process listed is sent SIGKILL, again and
// again, so that children forked meanwhile die too. It returns, for each
// of subtreeDirs, how many processes it found there.
func (m *Manager) killAll(ctx context.Context) ([]int, error) {
	dirs := m.subtreeDirs()
	found := make([]map[int]bool, len(dirs))
	for i := range found {
		found[i] = make(map[int]bool)
	}
	counts := func() []int {
		n := make([]int, len(found))
		for i, f := range found {
			n[i] = len(f)
		}
		return n
	}
	useKill := false
	for try := 1; ; try++ {
		var left []int
		for i, dir := range dirs {
			pids, err := procsUnder(dir)
			if err != nil {
				return counts(), fmt.Errorf("listing the processes left in %s: %w", dir, err)
			}
			for _, p := range pids {
				if p != m.self {
					found[i][p] = true
					left = append(left, p)
				}
			}
		}
		slices.Sort(left)
		left = slices.Compact(left)
		if len(left) == 0 {
			return counts(), nil
		}
		if try == 1 && m.version == 2 {
			switch err := writeFile(filepath.Join(dirs[0], "cgroup.kill"), "1"); {
			case err == nil:
				useKill = true
			case errors.Is(err, unix.ENOENT):
				// Before Linux 5.14, or the subtree is gone already.
			default:
				m.log.Warn("cgroup.kill failed; killing one by one", "err", err)
			}
		}
		if !useKill {
			for _, pid := range left {
				m.kill(pid)
			}
		}
		select {
		case <-ctx.Done():
			return counts(), fmt.Errorf("killing the processes left in %s: %d remain (pids %v): %w", dirs[0], len(left), head(left, 10), ctx.Err())
		case <-time.After(time.Duration(min(try, 20)) * time.Millisecond):
		}
	}
}

// kill sends SIGKILL to pid through a pidfd, after checking that the
// process the pidfd refers to is still in the subtree: a pid read from
// cgroup.procs may have been reused by an unrelated process since.
func (m *Manager) kill(pid int) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if err == unix.ENOSYS {
			unix.Kill(pid, unix.SIGKILL)
		}
		return
	}
	defer unix.Close(fd)
	if !m.inSubtree(pid) {
		return
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && err != unix.ESRCH {
		m.log.Warn("killing a process left in the subtree", "pid", pid, "err", err)
	}
}

// inSubtree says whether /proc/pid/cgroup puts pid under Parent/Name in any
// hierarchy the manager uses.
func (m *Manager) inSubtree(pid int) bool {
	v1, v2, err := cgroups.ParseCgroupFileUnified("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return false
	}
	under := func(p string, h *hierarchy) bool {
		sub := path.Join(h.parent, m.name)
		return p == sub || strings.HasPrefix(p, sub+"/")
	}
	if m.version == 2 {
		return under(v2, m.hier[0])
	}
	for _, h := range m.hier {
		for _, c := range h.ctrls {
			if p, ok := v1[c]; ok && under(p, h) {
				return true
			}
		}
	}
	return false
}

func head(pids []int, n int) []int {
	if len(pids) > n {
		return pids[:n]
	}
	return pids
}
