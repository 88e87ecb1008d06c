package cgroup

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	cgroups "github.com/containerd/cgroups/v3"
	"golang.org/x/sys/unix"
)

// HomeGroup holds the server's processes that serve no connection.
const HomeGroup = "home"

// Options say where the manager makes its subtree.
type Options struct {
	// Parent is the absolute cgroup path to nest under; "" means the
	// supervisor's own cgroup, as systemd's Delegate=yes expects.
	Parent string
	// Name is the subtree the manager owns under Parent, e.g. "vhqos.1234".
	Name   string
	Logger *slog.Logger
	// Root is where cgroup file systems are mounted; "" means /sys/fs/cgroup.
	Root string
}

// Manager owns one subtree: Parent/Name with a child per group. It is safe
// for concurrent use.
type Manager struct {
	log     *slog.Logger
	version int
	// dirs are the subtree's directories: one per v1 hierarchy used, or the
	// single v2 one.
	dirs []hierarchyDir
	// rel is the subtree's path as /proc/PID/cgroup shows it.
	rel string

	mu     sync.RWMutex
	groups map[string]*group
	// v2 only: controllers enabled for the subtree so far, and where the
	// supervisor was before it moved into a leaf of its own ("" if it did not).
	enabled    map[string]bool
	selfOrigin string
	selfLeaf   string
	closed     bool
}

// hierarchyDir is the subtree's directory in one hierarchy.
type hierarchyDir struct {
	controller string // "cpu", "cpuacct", "blkio" on v1; "" on v2
	path       string
}

type group struct {
	name  string
	dirs  []hierarchyDir
	procs []*os.File // cgroup.procs of each dir, kept open for Place
	res   Resources
	set   bool
}

// v1Controllers are the hierarchies vhqos uses on the v1 layout.
var v1Controllers = []string{"cpu", "cpuacct", "blkio"}

// New creates the subtree and its home group.
func New(ctx context.Context, opts Options) (*Manager, error) {
	if err := checkName(opts.Name); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	root := opts.Root
	if root == "" {
		root = "/sys/fs/cgroup"
	}
	m := &Manager{log: log, groups: map[string]*group{}, enabled: map[string]bool{}}
	own, err := ownCgroups()
	if err != nil {
		return nil, err
	}
	if cgroups.Mode() == cgroups.Unified {
		m.version = 2
		if err := m.setupV2(root, own[""], opts); err != nil {
			return nil, err
		}
	} else {
		m.version = 1
		if err := m.setupV1(root, own, opts); err != nil {
			return nil, err
		}
	}
	if err := m.Set(HomeGroup, Resources{}); err != nil {
		m.Close(ctx)
		return nil, err
	}
	return m, nil
}

func (m *Manager) setupV1(root string, own map[string]string, opts Options) error {
	seen := map[string]bool{}
	for _, c := range v1Controllers {
		mount := filepath.Join(root, c)
		real, err := filepath.EvalSymlinks(mount)
		if err != nil {
			if c == "blkio" {
				m.log.Warn("no blkio cgroup hierarchy: IO limits are unavailable", "path", mount)
				continue
			}
			return fmt.Errorf("no %s cgroup hierarchy at %s: mount it, or boot with unified cgroup v2", c, mount)
		}
		if seen[real] {
			continue // co-mounted, e.g. cpu,cpuacct
		}
		seen[real] = true
		parent := opts.Parent
		if parent == "" {
			parent = own[c]
		}
		dir := filepath.Join(real, parent, opts.Name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			m.removeDirs()
			return fmt.Errorf("creating cgroup %s: %w", dir, err)
		}
		m.dirs = append(m.dirs, hierarchyDir{controller: c, path: dir})
		if c == "cpu" {
			m.rel = filepath.Join(parent, opts.Name)
		}
	}
	return nil
}

func (m *Manager) setupV2(root, own string, opts Options) error {
	parent := opts.Parent
	if parent == "" {
		parent = own
		if own != "/" {
			// No internal processes: the supervisor leaves the cgroup whose
			// children get the controllers for a leaf of its own.
			if err := m.leaveParent(root, own, opts.Name); err != nil {
				return err
			}
		}
	}
	dir := filepath.Join(root, parent, opts.Name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		m.restoreSelf()
		return fmt.Errorf("creating cgroup %s: %w", dir, err)
	}
	m.dirs = []hierarchyDir{{path: dir}}
	m.rel = filepath.Join(parent, opts.Name)
	return nil
}

// leaveParent moves the supervisor from its own cgroup into a sibling leaf,
// refusing when other processes share that cgroup (they would keep it from
// delegating controllers, and moving them is not vhqos's business).
func (m *Manager) leaveParent(root, own, name string) error {
	procs, err := readPids(filepath.Join(root, own, "cgroup.procs"))
	if err != nil {
		return fmt.Errorf("reading the processes of cgroup %s: %w", own, err)
	}
	self := os.Getpid()
	for _, p := range procs {
		if p != self {
			return fmt.Errorf("cgroup %s holds other processes (pid %d) besides vhqos, so it cannot delegate controllers: run vhqos as a systemd service with Delegate=yes, under `systemd-run --scope -p Delegate=yes`, or set settings.cgroup_parent", own, p)
		}
	}
	leaf := filepath.Join(root, own, name+".supervisor")
	if err := os.Mkdir(leaf, 0o755); err != nil {
		return fmt.Errorf("creating the supervisor's cgroup %s: %w", leaf, err)
	}
	if err := writeFile(filepath.Join(leaf, "cgroup.procs"), strconv.Itoa(self)); err != nil {
		os.Remove(leaf)
		return fmt.Errorf("moving vhqos into %s: %w", leaf, err)
	}
	m.selfOrigin = filepath.Join(root, own)
	m.selfLeaf = leaf
	return nil
}

func (m *Manager) restoreSelf() {
	if m.selfLeaf == "" {
		return
	}
	if err := writeFile(filepath.Join(m.selfOrigin, "cgroup.procs"), strconv.Itoa(os.Getpid())); err != nil {
		m.log.Warn("moving vhqos back to its cgroup", "path", m.selfOrigin, "err", err)
	}
	if err := os.Remove(m.selfLeaf); err != nil {
		m.log.Warn("removing the supervisor's cgroup", "path", m.selfLeaf, "err", err)
	}
	m.selfLeaf = ""
}

// Version is 1 on the v1 and hybrid layouts, 2 on unified cgroup v2.
func (m *Manager) Version() int { return m.version }

// Path is the group's path as /proc/PID/cgroup shows it (the cpu line on
// v1, the "0::" line on v2).
func (m *Manager) Path(name string) string { return filepath.Join(m.rel, name) }

// Set creates group name if needed and gives it the limits r; limits that
// r leaves unset go back to the kernel's defaults.
func (m *Manager) Set(name string, r Resources) error {
	if err := checkName(name); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("cgroup manager is closed")
	}
	g := m.groups[name]
	created := false
	if g == nil {
		var err error
		if m.version == 2 {
			if err := m.enableV2(r); err != nil {
				return err
			}
		}
		if g, err = m.create(name); err != nil {
			return err
		}
		created = true
	} else if m.version == 2 {
		if err := m.enableV2(r); err != nil {
			return err
		}
	}
	if err := m.apply(g, r); err != nil {
		if created {
			g.close()
			removeGroupDirs(g)
		}
		return err
	}
	if created {
		m.groups[name] = g
	}
	return nil
}

func (m *Manager) create(name string) (*group, error) {
	g := &group{name: name}
	for _, d := range m.dirs {
		dir := filepath.Join(d.path, name)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			g.close()
			removeGroupDirs(g)
			return nil, fmt.Errorf("creating cgroup %s: %w", dir, err)
		}
		f, err := os.OpenFile(filepath.Join(dir, "cgroup.procs"), os.O_WRONLY, 0)
		if err != nil {
			g.dirs = append(g.dirs, hierarchyDir{d.controller, dir})
			g.close()
			removeGroupDirs(g)
			return nil, fmt.Errorf("opening %s/cgroup.procs: %w", dir, err)
		}
		g.dirs = append(g.dirs, hierarchyDir{d.controller, dir})
		g.procs = append(g.procs, f)
	}
	return g, nil
}

// Place moves process pid, with all its threads, into group name. It is on
// the per-connection path: one write per hierarchy to a file kept open.
func (m *Manager) Place(name string, pid int) error {
	m.mu.RLock()
	g := m.groups[name]
	m.mu.RUnlock()
	if g == nil {
		return fmt.Errorf("placing pid %d: no cgroup group %q", pid, name)
	}
	var buf [20]byte
	b := strconv.AppendInt(buf[:0], int64(pid), 10)
	for i, f := range g.procs {
		if _, err := unix.Pwrite(int(f.Fd()), b, 0); err != nil {
			return fmt.Errorf("moving pid %d into %s: %w", pid, g.dirs[i].path, err)
		}
	}
	return nil
}

// ProcsFiles lists the cgroup.procs files of a group, one per hierarchy,
// for a process that must enter the group itself before it starts work.
func (m *Manager) ProcsFiles(name string) []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []string
	if g := m.groups[name]; g != nil {
		for _, d := range g.dirs {
			out = append(out, filepath.Join(d.path, "cgroup.procs"))
		}
	}
	return out
}

// Remove moves the group's processes home and deletes the group.
func (m *Manager) Remove(name string) error {
	if name == HomeGroup {
		return errors.New("the home group is removed only by Close")
	}
	m.mu.Lock()
	g := m.groups[name]
	delete(m.groups, name)
	home := m.groups[HomeGroup]
	m.mu.Unlock()
	if g == nil {
		return nil
	}
	g.close()
	for i, d := range g.dirs {
		pids, err := readPids(filepath.Join(d.path, "cgroup.procs"))
		if err != nil {
			return fmt.Errorf("reading %s: %w", d.path, err)
		}
		for _, pid := range pids {
			if home != nil && i < len(home.dirs) {
				writeFile(filepath.Join(home.dirs[i].path, "cgroup.procs"), strconv.Itoa(pid))
			}
		}
	}
	return removeGroupDirs(g)
}

// Close kills every process left in the subtree, removes every cgroup the
// manager made and puts the supervisor back where it was.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	groups := m.groups
	m.groups = map[string]*group{}
	m.mu.Unlock()
	for _, g := range groups {
		g.close()
	}
	var errs []error
	if err := m.killAll(ctx); err != nil {
		errs = append(errs, err)
	}
	for _, g := range groups {
		if err := removeGroupDirs(g); err != nil {
			errs = append(errs, err)
		}
	}
	if err := m.removeDirs(); err != nil {
		errs = append(errs, err)
	}
	m.restoreSelf()
	return errors.Join(errs...)
}

// killAll SIGKILLs every process in the subtree until none is left.
func (m *Manager) killAll(ctx context.Context) error {
	if m.version == 2 {
		if err := writeFile(filepath.Join(m.dirs[0].path, "cgroup.kill"), "1"); err != nil && !errors.Is(err, os.ErrNotExist) {
			m.log.Debug("cgroup.kill failed, killing one by one", "err", err)
		}
	}
	for {
		pids := m.allPids()
		if len(pids) == 0 {
			return nil
		}
		for _, p := range pids {
			unix.Kill(p, unix.SIGKILL)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("processes %v still in %s: %w", pids, m.rel, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (m *Manager) allPids() []int {
	var pids []int
	for _, d := range m.dirs {
		filepath.WalkDir(d.path, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				list, _ := readPids(filepath.Join(p, "cgroup.procs"))
				pids = append(pids, list...)
			}
			return nil
		})
	}
	return pids
}

func (m *Manager) removeDirs() error {
	var errs []error
	for _, d := range m.dirs {
		if err := rmdirRetry(d.path); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (g *group) close() {
	for _, f := range g.procs {
		f.Close()
	}
	g.procs = nil
}

func removeGroupDirs(g *group) error {
	var errs []error
	for _, d := range g.dirs {
		if err := rmdirRetry(d.path); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// rmdirRetry removes a cgroup directory; the kernel may report it busy for
// a moment after its last process exited.
func rmdirRetry(dir string) error {
	var err error
	for i := 0; i < 50; i++ {
		err = unix.Rmdir(dir)
		if err == nil || err == unix.ENOENT {
			return nil
		}
		if err != unix.EBUSY {
			break
		}
		time.Sleep(time.Duration(i+1) * time.Millisecond)
	}
	return fmt.Errorf("removing cgroup %s: %w", dir, err)
}

func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("invalid cgroup name %q", name)
	}
	return nil
}

// ownCgroups reads /proc/self/cgroup: controller -> path, "" for v2.
func ownCgroups() (map[string]string, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("reading vhqos's own cgroup: %w", err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			out[""] = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			out[c] = parts[2]
		}
	}
	return out, sc.Err()
}

func readPids(path string) ([]int, error) {
	data, err := os.ReadFile(path)
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

func writeFile(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
