package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/cgroups/v3/cgroup2"
	"golang.org/x/sys/unix"
)

// Thread placement (Options.Threads): a server that serves several
// connections at once on several threads of one process cannot be placed
// a process at a time, since writing any of its thread ids to
// cgroup.procs moves every thread. PlaceThread moves one thread.
//
// cgroup v1 places threads through each hierarchy's tasks file. cpu,
// cpuacct, blkio and pids account and limit per thread there; memory
// charges the mm's owner, so the memory hierarchy is left alone and a
// process stays where Place last put it in that one.
//
// cgroup v2 keeps all threads of a process in one resource domain and
// spreads them only within a threaded subtree, over the threaded
// controllers (cpu and pids here; io and memory are domain controllers)
// (Documentation/admin-guide/cgroup-v2.rst, "Threads"). So the subtree gets
// a domain Parent/Name/threads whose children are the threaded twins of the
// groups (threads/home, threads/vhost-x, threads/tenant-t/vhost-x, each of
// cgroup.type "threaded"), with cpu and pids handed down in their
// cgroup.subtree_control, and Set writes a group's cpu and pids limits to
// its twin as well. The domain groups stay as they are, for processes
// placed whole by Place with every controller. A process in the threaded
// subtree is charged to the domain threads for io and memory: the io and
// memory limits of the groups do not reach it.
//
// What the kernel said when this was built (Linux 6.18): writing a thread
// to cgroup.threads of a twin while its process is in a domain group fails
// with EOPNOTSUPP ("the destination must be in the same resource domain"),
// as does writing to a child of a threaded domain that was not made
// "threaded" (it reads "domain invalid"); cgroup.procs of a threaded cgroup
// cannot be read (EOPNOTSUPP), only the domain's lists the processes of the
// whole threaded subtree; cgroup.procs of a twin can be written, and moves
// every thread of the process there.

// threadsDir names the threaded subtree's domain under Parent/Name (v2).
// Set refuses it as a group name.
const threadsDir = "threads"

// threadedControllers are the controllers of interest that work per thread
// under v2, the ones a twin carries.
func threadedControllers() []string { return []string{"cpu", "pids"} }

// twin is the threaded twin of a group under v2: threads/<group>.
type twin struct {
	dir     string
	cg2     *cgroup2.Manager
	applied map[string]setting // the cpu and pids settings written to it
}

// initThreads sets the manager up for thread placement: under v1 it picks
// the hierarchies PlaceThread writes to, under v2 it makes (or finds) the
// threaded subtree's domain. An attached v2 manager uses a threaded subtree
// it finds even when want is false, so that the limits and removals of the
// groups keep their twins in step.
func (m *Manager) initThreads(want bool) error {
	if m.version == 1 {
		if !want {
			return nil
		}
		m.threads = true
		for i, h := range m.hier {
			if slices.ContainsFunc(h.ctrls, func(c string) bool { return c != "memory" }) {
				m.threadHier = append(m.threadHier, i)
			}
		}
		return nil
	}
	h := m.hier[0]
	dir := h.dir(m.name, threadsDir)
	if !want {
		if _, err := os.Stat(dir); !m.attached || err != nil {
			return nil
		}
	}
	m.threads = true
	sub, err := cgroup2.Load(path.Join(h.parent, m.name), cgroup2.WithMountpoint(h.root))
	if err == nil {
		m.troot, err = sub.NewChild(threadsDir, nil)
	}
	m.threadRoot = dir
	if err != nil {
		return fmt.Errorf("cgroups: creating the threaded subtree %s: %w", dir, err)
	}
	// An attached manager finds the controllers the owner enabled so far;
	// the twins need the threaded ones handed down from here.
	on, err := readWords(filepath.Join(h.dir(m.name), "cgroup.subtree_control"))
	if err != nil {
		return fmt.Errorf("cgroups: reading %s: %w", filepath.Join(h.dir(m.name), "cgroup.subtree_control"), err)
	}
	for _, c := range threadedControllers() {
		if slices.Contains(on, c) {
			if err := enableIn(dir, c); err != nil {
				return fmt.Errorf("cgroups: handing the %s controller down to the threaded twins: %w", c, err)
			}
		}
	}
	return nil
}

// prepareThreads gives a group just made (createGroup) what PlaceThread
// needs: the names of its tasks files (v1), or its twin (v2).
func (m *Manager) prepareThreads(g *group) error {
	if !m.threads {
		return nil
	}
	if m.version == 1 {
		for _, i := range m.threadHier {
			g.threadFiles = append(g.threadFiles, filepath.Join(g.dirs[i], "tasks"))
		}
		return nil
	}
	dir := filepath.Join(m.threadRoot, g.name)
	cg, err := m.troot.NewChild(g.name, nil)
	if err == nil {
		// A child of the threaded domain starts as "domain invalid";
		// writing "threaded" to one that is already is a no-op.
		err = cg.SetType(cgroup2.Threaded)
	}
	if err != nil {
		return fmt.Errorf("cgroups: creating the threaded twin %s of %s: %w", dir, g.name, err)
	}
	g.twin = &twin{dir: dir, cg2: cg, applied: make(map[string]setting)}
	g.threadFiles = []string{filepath.Join(dir, "cgroup.threads")}
	return nil
}

// openThreadFds opens the group's threadFiles on first use, as openFds
// its cgroup.procs files.
func (g *group) openThreadFds() ([]int, error) {
	g.fdMu.Lock()
	defer g.fdMu.Unlock()
	if g.tfds != nil {
		return g.tfds, nil
	}
	fds, err := openWrite(g.threadFiles)
	if err != nil {
		return nil, err
	}
	g.tfds = fds
	return fds, nil
}

// PlaceThread moves thread tid of process tgid into group, for the
// controllers that work per thread, leaving the process's other threads
// where they are. It writes tid with one write(2) per file to files kept
// open from the first placement in the group, under a read lock, without
// allocating; it is safe for concurrent use with everything, like Place.
// It needs Options.Threads (or, attached under v2, a subtree whose owner
// made the threaded twins); tid must be a thread of tgid.
//
// cgroup v1: tid goes into the tasks file of the group in the cpu,
// cpuacct, blkio and pids hierarchies (one write where cpu and cpuacct are
// co-mounted), not the memory hierarchy, where the process stays whole.
//
// cgroup v2: tid goes into the cgroup.threads of the group's threaded twin
// (Parent/Name/threads/<group>), which carries cpu and pids only. A thread
// whose process is not in the threaded subtree yet (in a domain group,
// where Place puts a process) cannot go there alone (the kernel says
// EOPNOTSUPP): PlaceThread then first moves the whole process into the
// twin of HomeGroup through its cgroup.procs, and places tid after that,
// a path taken once per process, serialized and with a few allocations.
// The process's other threads land in threads/home then; the caller places
// again those it knows to serve elsewhere. From then on io and memory are
// charged to the threaded subtree's domain, not to any group, until Place
// moves the process whole into a group again.
//
// Errors name the file written. A thread or process that is gone wraps
// unix.ESRCH (errors.Is); a group that does not exist, or thread
// placement not enabled, is an error without an errno.
func (m *Manager) PlaceThread(group string, tgid, tid int) error {
	if tgid <= 0 || tid <= 0 || tgid == m.self {
		return fmt.Errorf("cgroups: placing thread %d of pid %d in %s: not a server thread", tid, tgid, group)
	}
	var buf [20]byte
	b := strconv.AppendInt(buf[:0], int64(tid), 10)
	m.placeMu.RLock()
	defer m.placeMu.RUnlock()
	g := m.groups[group]
	if g == nil {
		return m.noGroup(group, tgid)
	}
	if !m.threads {
		return fmt.Errorf("cgroups: placing thread %d of pid %d in %s: thread placement is not enabled (Options.Threads)", tid, tgid, group)
	}
	fds, err := g.openThreadFds()
	if err != nil {
		return fmt.Errorf("cgroups: placing thread %d of pid %d in %s: %w", tid, tgid, group, err)
	}
	for i, fd := range fds {
		err := writeProcs(fd, b)
		if err == unix.EOPNOTSUPP && m.version == 2 {
			err = m.enterThreaded(fd, tgid, tid)
		}
		if err != nil {
			return fmt.Errorf("cgroups: placing thread %d of pid %d in %s: writing %s: %w", tid, tgid, group, g.threadFiles[i], err)
		}
	}
	return nil
}

// enterThreaded moves process tgid whole into the twin of HomeGroup and
// writes tid to fd (a twin's cgroup.threads) again. It is serialized so
// that two threads of one process placed at once cannot move each other
// back home: the second finds the process in the threaded subtree and
// only writes its own thread. Called with m.placeMu read-locked.
func (m *Manager) enterThreaded(fd, tgid, tid int) error {
	m.threadMu.Lock()
	defer m.threadMu.Unlock()
	b := strconv.AppendInt(nil, int64(tid), 10)
	if err := writeProcs(fd, b); err != unix.EOPNOTSUPP {
		return err
	}
	// Moving the process of a thread id that is not its own would move
	// an unrelated process.
	proc, task := "/proc/"+strconv.Itoa(tgid), "/task/"+string(b)
	if err := unix.Access(proc+task, unix.F_OK); err != nil {
		switch {
		case err != unix.ENOENT:
			return fmt.Errorf("checking %s%s: %w", proc, task, err)
		case unix.Access(proc, unix.F_OK) != nil:
			return fmt.Errorf("process %d is gone: %w", tgid, unix.ESRCH)
		case unix.Access("/proc/"+string(b), unix.F_OK) != nil:
			// /proc/TID exists for every live thread, listed or not.
			return fmt.Errorf("thread %d of process %d is gone: %w", tid, tgid, unix.ESRCH)
		}
		return fmt.Errorf("thread %d is not a thread of process %d (no %s%s)", tid, tgid, proc, task)
	}
	home := m.groups[HomeGroup]
	if home == nil || home.twin == nil {
		return errors.New("the threaded twin of the home group is missing")
	}
	procs := filepath.Join(home.twin.dir, "cgroup.procs")
	hfd, err := unix.Open(procs, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", procs, err)
	}
	defer unix.Close(hfd)
	if err := writeProcs(hfd, strconv.AppendInt(nil, int64(tgid), 10)); err != nil {
		return fmt.Errorf("moving process %d into the threaded subtree first (writing %s): %w", tgid, procs, err)
	}
	return writeProcs(fd, b)
}

// ThreadPath is where a thread that PlaceThread put in group appears in
// /proc/PID/task/TID/cgroup (and /proc/thread-self/cgroup): under v2 the
// "0::" line, the group's threaded twin Parent/Name/threads/<group>; under
// v1 the cpu hierarchy's line, the same as Path.
func (m *Manager) ThreadPath(group string) string {
	if m.version == 2 {
		return path.Join(m.hier[0].parent, m.name, threadsDir, group)
	}
	return m.Path(group)
}

// updateTwin writes the cpu and pids settings of desired (a group's, from
// update) to the group's twin, only those that changed. Called with m.mu
// held.
func (m *Manager) updateTwin(g *group, desired []setting) error {
	if g.twin == nil {
		return nil
	}
	var want []setting
	for _, s := range desired {
		if slices.Contains(threadedControllers(), s.ctrl) {
			want = append(want, s)
		}
	}
	writes := diff(g.twin.applied, want)
	if err := apply(g.twin.applied, writes, func(string) (string, error) { return g.twin.dir, nil }); err != nil {
		return fmt.Errorf("cgroups: group %s, its threaded twin: %w", g.name, err)
	}
	return nil
}

// threadInnerDirs lists the directories in the threaded subtree that hand
// controllers down to twins, outer first: the threaded domain, then the
// twins of the groups that have groups inside them. Called with m.mu held.
func (m *Manager) threadInnerDirs() []string {
	if !m.threads || m.version != 2 {
		return nil
	}
	dirs := []string{m.threadRoot}
	for _, name := range m.innerGroups() {
		if g := m.groups[name]; g.twin != nil {
			dirs = append(dirs, g.twin.dir)
		}
	}
	return dirs
}

// moveThreads moves every thread in from's per-thread files (v1 tasks in
// the hierarchies PlaceThread uses, v2 the twin's cgroup.threads) into the
// same files of to, one thread at a time, so that a process whose other
// threads serve other groups keeps them there. Threads that are gone are
// skipped.
func (m *Manager) moveThreads(from, to *group) error {
	if len(from.threadFiles) == 0 {
		return nil
	}
	toFds, err := to.openThreadFds()
	if err != nil {
		return fmt.Errorf("cgroups: removing %s: %w", from.name, err)
	}
	for i, file := range from.threadFiles {
		tids, err := readPids(file)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("cgroups: removing %s: %w", from.name, err)
		}
		for _, tid := range tids {
			b := strconv.AppendInt(nil, int64(tid), 10)
			if err := writeProcs(toFds[i], b); err != nil && err != unix.ESRCH {
				return fmt.Errorf("cgroups: removing %s: moving thread %d to %s: %w", from.name, tid, to.threadFiles[i], err)
			}
		}
	}
	return nil
}

// delete removes the twin's directory; one already gone is no error.
func (t *twin) delete() error {
	if _, err := os.Stat(t.dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := t.cg2.Delete(); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// usage adds the twin's CPU time and throttling, tasks and threads to u.
func (t *twin) usage(u *Usage) error {
	st, err := t.cg2.StatFiltered(cgroup2.StatCPU)
	if err != nil {
		return fmt.Errorf("reading %s: %w", t.dir, err)
	}
	if c := st.GetCPU(); c != nil {
		u.CPUUsec += c.UsageUsec
		u.Periods += c.NrPeriods
		u.ThrottledPeriods += c.NrThrottled
		u.ThrottledUsec += c.ThrottledUsec
	}
	var tu Usage
	if err := memoryUsage(&tu, 2, "", t.dir); err != nil {
		return err
	}
	if tu.Pids {
		u.Pids = true
		u.Tasks += tu.Tasks
		u.TasksMaxEvents += tu.TasksMaxEvents
	}
	tids, err := readPids(filepath.Join(t.dir, "cgroup.threads"))
	if err != nil {
		return err
	}
	u.Threads += len(tids)
	return nil
}

// isThreadsName says whether a group name is the threaded subtree or in
// it: no group of the manager's.
func isThreadsName(name string) bool {
	return name == threadsDir || strings.HasPrefix(name, threadsDir+"/")
}
