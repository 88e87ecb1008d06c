package cgroup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Options configure a Manager.
type Options struct {
	// Parent is the absolute cgroup path (as /proc/PID/cgroup shows it) to
	// nest under; "" means the supervisor's own cgroup. Missing components
	// are created and removed again by Close.
	Parent string
	// Name is the subtree the manager owns under Parent, e.g. "vhqos.1234".
	// An empty leftover of that name is removed; one holding processes is
	// an error.
	Name string
	// Attach adopts the subtree Parent/Name that another process's New
	// made and still owns, instead of making one: New fails, naming the
	// directory, when the subtree does not exist; it opens every group
	// already in it (Groups lists them), moves no process, and Set creates
	// the groups that are missing. It reads the limits it finds back, so
	// that its first Set of a group also resets those an earlier process
	// set and the caller no longer wants. Close then only releases what the manager holds (open
	// files): the subtree, its processes and the controllers stay for the
	// owner's Close. With Attach, Parent "" means the owner's cgroup: the
	// caller's own, or under v2 the parent of the leaf <Name>.supervisor
	// when the caller sits there (a child the owner started inherits it).
	// Parent must be what the owner was given.
	Attach bool
	// Threads makes PlaceThread work: under cgroup v2 New (or an
	// attached New that finds none) makes the threaded subtree
	// Parent/Name/threads with a threaded twin of every group, which Set,
	// Remove and Usage keep in step with the group; under v1 it needs no
	// cgroups of its own. Without it nothing of this exists and
	// PlaceThread fails, except that an attached manager under v2 uses a
	// threaded subtree it finds (its owner's, or an earlier attached
	// manager's). See threads.go.
	Threads bool
	Logger  *slog.Logger
}

// Usage is what a group has consumed since it was created.
type Usage struct {
	// CPUUsec is the CPU time its processes used, in µs.
	CPUUsec uint64
	// Periods counts the enforcement periods that elapsed while a CPU cap
	// was set, ThrottledPeriods those in which the cap bit, and
	// ThrottledUsec how long its processes were held back in all.
	Periods          uint64
	ThrottledPeriods uint64
	ThrottledUsec    uint64
	// IOReadBytes and IOWriteBytes sum all block devices. IO says whether
	// the kernel accounts IO for the group at all (v1: the blkio hierarchy
	// is mounted; v2: the io controller is enabled for the subtree).
	IOReadBytes  uint64
	IOWriteBytes uint64
	IO           bool
	// Processes is how many processes the group holds now: under v2
	// those in it as a whole (Place's; a process in the threaded subtree
	// shows in Threads only, since the kernel lists no processes of a
	// threaded cgroup), under v1 every process with a thread there (v1's
	// cgroup.procs).
	Processes int
	// Threads is how many threads (tasks) the group holds now: every
	// thread of its processes and the threads PlaceThread put there alone
	// (v2: the lines of cgroup.threads of the group and of its threaded
	// twin; v1: the lines of tasks in the cpu hierarchy). Unlike Tasks it
	// needs no pids controller.
	Threads int
	// Memory says whether the kernel accounts memory for the group (v1:
	// the memory hierarchy is mounted; v2: the memory controller is
	// enabled for the subtree, which a memory limit of any group does).
	// MemoryBytes is the memory charged to it now (v2 memory.current, v1
	// memory.usage_in_bytes), page cache included.
	Memory      bool
	MemoryBytes uint64
	// MemoryEvents are the kernel's counts of the times the group ran into
	// its memory limits, by the names of v2's memory.events: "high"
	// (memory_high was exceeded: the group was throttled and reclaimed),
	// "max" (a charge hit memory_max), "oom" (reclaim could not make room
	// under memory_max) and "oom_kill" (the OOM killer killed a process
	// of the group). v1 counts only "max" (memory.failcnt) and "oom_kill"
	// (memory.oom_control): the other keys are absent there. Nil without
	// Memory.
	MemoryEvents map[string]uint64
	// Pids says whether the kernel counts the group's tasks (v1: the pids
	// hierarchy is mounted; v2: the pids controller is enabled, which a
	// tasks_max of any group does). Tasks is how many tasks (processes and
	// threads) it holds (pids.current); TasksMaxEvents how many forks and
	// clones pids.max refused (pids.events "max").
	Pids           bool
	Tasks          uint64
	TasksMaxEvents uint64
}

// hierarchy is one mounted cgroup hierarchy the manager uses: under v2 the
// unified one, under v1 each distinct hierarchy carrying cpu, cpuacct,
// blkio, memory or pids (four when cpu and cpuacct are co-mounted, five
// when not).
type hierarchy struct {
	ctrls  []string // the controllers of interest it carries ("cpu", "cpuacct", "blkio", "memory", "pids"; v2: none listed)
	root   string   // directory of its root cgroup
	parent string   // Parent as /proc/PID/cgroup shows it in this hierarchy
}

// dir is the directory of a cgroup below Parent in this hierarchy.
func (h *hierarchy) dir(rel ...string) string {
	return filepath.Join(append([]string{h.root, h.parent}, rel...)...)
}

// group is one cgroup (per hierarchy) the manager made under Parent/Name.
type group struct {
	name    string
	dirs    []string // per hierarchy
	procs   []string // the cgroup.procs paths, for messages
	fdMu    sync.Mutex
	fds     []int // open cgroup.procs, per hierarchy, written by Place; opened on first use
	applied map[string]setting
	// threadFiles are where PlaceThread writes a thread id (v1: tasks in
	// the per-thread hierarchies, v2: the twin's cgroup.threads), tfds
	// the same opened on first use, twin the v2 threaded twin; all empty
	// without thread placement (threads.go).
	threadFiles []string
	tfds        []int
	twin        *twin
	// want is what the last Set asked for (wantSet: there was one), and
	// quota the CPU quota last written, which under v1 may be lower than
	// want's (nested.go).
	want    Resources
	wantSet bool
	quota   float64
	cg1     cgroup1.Cgroup
	stat1   cgroup1.Cgroup // cg1 without memory and pids, for Usage
	cg2     *cgroup2.Manager
}

// Manager owns the subtree Parent/Name and the groups in it (or, attached,
// works in another process's). Place is safe
// for concurrent use with everything; the other methods serialize.
type Manager struct {
	log     *slog.Logger
	version int
	name    string
	self    int

	hier     []*hierarchy
	ctrlHier map[string]int // v1 controller → index in hier
	subs1    []cgroup1.Subsystem
	unowned  []string   // v1 controllers an attached manager left out (dropUnusedV1)
	created  [][]string // per hierarchy: the Parent directories New made, top-down
	owned    bool       // Parent/Name is ours: no other vhqos had it
	attached bool       // Options.Attach: Parent/Name is another process's

	v2 v2state

	threads    bool             // PlaceThread works (Options.Threads; threads.go)
	threadHier []int            // v1: the hierarchies PlaceThread writes to, all but memory's
	troot      *cgroup2.Manager // v2: the threaded subtree's domain, Parent/Name/threads
	threadRoot string           // and its directory
	threadMu   sync.Mutex       // serializes moving a process into the threaded subtree (enterThreaded)

	mu      sync.Mutex // serializes Set, Remove and Close
	closing []*group   // the groups Close is removing
	done    bool       // Close finished

	placeMu sync.RWMutex // guards groups and closed against Place; changed only with mu held too
	groups  map[string]*group
	closed  bool
}

// layout says where the cgroup filesystems are; tests point v2 at the
// hybrid layout's /sys/fs/cgroup/unified.
type layout struct {
	v2mount string // non-empty: unified cgroup v2 mounted here
}

// New detects the host's cgroup layout, creates Parent/Name and its home
// group and, under v2 when Parent is the supervisor's own (non-root) cgroup,
// moves the supervisor into the leaf Parent/<Name>.supervisor so that Parent
// may hand controllers down. With Options.Attach it adopts an existing
// Parent/Name instead (see Attach).
func New(ctx context.Context, opts Options) (*Manager, error) {
	lay, err := hostLayout()
	if err != nil {
		return nil, err
	}
	return newManager(ctx, opts, lay)
}

// hostLayout asks cgroups.Mode which backend this host's limits use.
func hostLayout() (layout, error) {
	var lay layout
	switch cgroups.Mode() {
	case cgroups.Unified:
		lay.v2mount = "/sys/fs/cgroup"
	case cgroups.Legacy, cgroups.Hybrid:
		// Limits live in the v1 hierarchies.
	default:
		return lay, errors.New("cgroups: no cgroup filesystem is mounted at /sys/fs/cgroup; mount cgroup2 there (or the v1 cpu, cpuacct and blkio hierarchies)")
	}
	return lay, nil
}

func newManager(ctx context.Context, opts Options, lay layout) (*Manager, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := validName(opts.Name); err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	if opts.Parent != "" {
		if err := validParent(opts.Parent); err != nil {
			return nil, err
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{
		log:      log.With("component", "cgroup"),
		name:     opts.Name,
		self:     os.Getpid(),
		attached: opts.Attach,
		groups:   make(map[string]*group),
	}
	var err error
	if lay.v2mount != "" {
		m.version = 2
		err = m.initV2(ctx, opts.Parent, lay.v2mount)
	} else {
		m.version = 1
		err = m.initV1(ctx, opts.Parent)
	}
	if err == nil {
		err = m.initThreads(opts.Threads)
	}
	switch {
	case err != nil:
	case m.attached:
		err = m.adoptGroups()
	default:
		var home *group
		if home, err = m.createGroup(HomeGroup); err == nil {
			m.groups[HomeGroup] = home
			if m.version == 2 {
				m.markBase()
			}
		}
	}
	if err != nil {
		if cerr := m.Close(ctx); cerr != nil {
			m.log.Warn("cleaning up after a failed start", "err", cerr)
		}
		return nil, err
	}
	if m.attached {
		m.log.Info("cgroups attached", "version", m.version, "subtree", m.subtreeDirs(), "groups", len(m.groups))
	} else {
		m.log.Info("cgroups ready", "version", m.version, "subtree", m.subtreeDirs(), "supervisor_leaf", m.v2.leaf)
	}
	return m, nil
}

// Attached reports whether the manager adopted another process's subtree
// (Options.Attach), so that its Close leaves the subtree in place.
func (m *Manager) Attached() bool { return m.attached }

// Groups lists the manager's groups, sorted: HomeGroup and those Set made,
// and for an attached manager also every group it found in the subtree,
// such as the group of a vhost that a table applied before no longer has.
func (m *Manager) Groups() []string {
	m.placeMu.RLock()
	defer m.placeMu.RUnlock()
	out := make([]string, 0, len(m.groups))
	for name := range m.groups {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// initV1 finds the cpu, cpuacct, blkio, memory and pids hierarchies, then
// prepares Parent/Name in each (or, attaching, checks that it is there).
func (m *Manager) initV1(ctx context.Context, parent string) error {
	if err := m.findV1(parent); err != nil {
		return err
	}
	if m.attached {
		m.dropUnusedV1()
		return m.checkSubtree()
	}
	return m.prepareSubtree(ctx)
}

// dropUnusedV1 leaves out, for Attach, the memory and pids hierarchies in
// which the owner made no subtree: an owner from a vhqos without memory
// and task limits used cpu, cpuacct and blkio only, and a supervisor it
// runs after `vhqos upgrade` must work in that subtree, without memory
// and task limits (Set says why it cannot apply them), rather than fail.
func (m *Manager) dropUnusedV1() {
	var hier []*hierarchy
	var subs []cgroup1.Subsystem
	ctrlHier := make(map[string]int)
	for _, h := range m.hier {
		onlyNew := !slices.ContainsFunc(h.ctrls, func(c string) bool { return c != "memory" && c != "pids" })
		if _, err := os.Stat(h.dir(m.name)); onlyNew && errors.Is(err, os.ErrNotExist) {
			m.log.Info("the subtree's owner uses no cgroup v1 hierarchy for these controllers (a vhqos from before memory and task limits): restart vhqos to use their limits", "controllers", h.ctrls, "missing", h.dir(m.name))
			for _, c := range h.ctrls {
				m.unowned = append(m.unowned, c)
			}
			continue
		}
		for _, c := range h.ctrls {
			ctrlHier[c] = len(hier)
		}
		hier = append(hier, h)
	}
	for _, s := range m.subs1 {
		if _, ok := ctrlHier[string(s.Name())]; ok {
			subs = append(subs, s)
		}
	}
	m.hier, m.ctrlHier, m.subs1 = hier, ctrlHier, subs
}

// v1Controllers are the v1 controllers whose hierarchies hold the
// subtree: those the limits and the usage figures use. A process is
// placed in every one of them.
func v1Controllers() []string { return []string{"cpu", "cpuacct", "blkio", "memory", "pids"} }

// findV1 finds the hierarchies of v1Controllers that are mounted and where
// Parent is in each.
func (m *Manager) findV1(parent string) error {
	all, err := cgroup1.Default()
	if err != nil {
		if errors.Is(err, cgroup1.ErrMountPointNotExist) {
			// ip netns exec mounts a /sys of its own, without the
			// cgroup hierarchies: the most common way to get here.
			return fmt.Errorf("cgroups: no cgroup hierarchy is mounted under /sys/fs/cgroup in vhqos's mount namespace (%w); `ip netns exec` mounts a /sys of its own without them: enter the network namespace with `nsenter --net=/run/netns/NAME` instead, or mount them", err)
		}
		return fmt.Errorf("cgroups: finding the cgroup v1 hierarchies: %w", err)
	}
	self, _, err := cgroups.ParseCgroupFileUnified("/proc/self/cgroup")
	if err != nil {
		return fmt.Errorf("cgroups: reading /proc/self/cgroup: %w", err)
	}
	m.ctrlHier = make(map[string]int)
	devs := make(map[uint64]int)
	for _, s := range all {
		name := string(s.Name())
		if !slices.Contains(v1Controllers(), name) {
			continue
		}
		p, ok := s.(interface{ Path(string) string })
		if !ok {
			continue
		}
		root := p.Path("/")
		var st unix.Stat_t
		if err := unix.Stat(root, &st); err != nil {
			return fmt.Errorf("cgroups: the %s hierarchy: %w", name, err)
		}
		m.subs1 = append(m.subs1, s)
		if i, ok := devs[st.Dev]; ok { // co-mounted with an earlier one
			m.hier[i].ctrls = append(m.hier[i].ctrls, name)
			m.ctrlHier[name] = i
			continue
		}
		par := parent
		if par == "" {
			if par, ok = self[name]; !ok {
				return fmt.Errorf("cgroups: /proc/self/cgroup has no line for the v1 %s hierarchy", name)
			}
		}
		devs[st.Dev] = len(m.hier)
		m.ctrlHier[name] = len(m.hier)
		m.hier = append(m.hier, &hierarchy{ctrls: []string{name}, root: root, parent: path.Clean(par)})
	}
	if len(m.hier) == 0 {
		return errors.New("cgroups: none of the cgroup v1 cpu, cpuacct, blkio, memory and pids hierarchies is mounted under /sys/fs/cgroup")
	}
	return nil
}

// checkSubtree makes sure, for Attach, that Parent/Name exists in every
// hierarchy.
func (m *Manager) checkSubtree() error {
	for _, dir := range m.subtreeDirs() {
		st, err := os.Stat(dir)
		if err == nil && !st.IsDir() {
			err = errors.New("not a directory")
		}
		if err != nil {
			return fmt.Errorf("cgroups: attaching to the cgroup subtree %s: %w (the vhqos that made it must be running, with the same settings.cgroup_parent)", dir, err)
		}
	}
	return nil
}

// adoptGroups opens, for Attach, every group in Parent/Name (the home
// group too, created if it is missing) and reads back the limits an
// earlier process set there (seedApplied), so that the first Set of each
// removes those the caller no longer wants.
func (m *Manager) adoptGroups() error {
	dir := m.hier[0].dir(m.name)
	below, err := groupsBelow(dir)
	if err != nil {
		return fmt.Errorf("cgroups: listing the groups of %s: %w", dir, err)
	}
	names := []string{HomeGroup}
	for _, name := range below {
		if isThreadsName(name) {
			continue // the threaded twins: each group opens its own
		}
		if name != HomeGroup {
			names = append(names, name)
		}
		if parent := parentGroup(name); parent != "" && m.version == 2 {
			if m.v2.inner == nil {
				m.v2.inner = map[string]bool{}
			}
			m.v2.inner[parent] = true
		}
	}
	for _, name := range names {
		g, err := m.createGroup(name)
		if err != nil {
			return err
		}
		if err := m.seedApplied(g); err != nil {
			return err
		}
		m.groups[name] = g
	}
	return nil
}

// prepareSubtree removes an empty leftover Parent/Name and notes which
// Parent directories are missing (the first group's creation makes them).
func (m *Manager) prepareSubtree(ctx context.Context) error {
	m.created = make([][]string, len(m.hier))
	for i, h := range m.hier {
		dir := h.dir(m.name)
		if _, err := os.Stat(dir); err == nil {
			pids, err := procsUnder(dir)
			if err != nil {
				return fmt.Errorf("cgroups: reading leftover %s: %w", dir, err)
			}
			if len(pids) > 0 {
				return fmt.Errorf("cgroups: %s already exists and holds processes %v: another vhqos with this name is running", dir, pids)
			}
			m.log.Warn("removing a leftover cgroup subtree", "dir", dir)
			if err := removeTree(ctx, dir); err != nil {
				return fmt.Errorf("cgroups: removing leftover %s: %w", dir, err)
			}
		}
		rel := "/"
		for _, c := range splitPath(h.parent) {
			rel = path.Join(rel, c)
			d := filepath.Join(h.root, rel)
			if _, err := os.Stat(d); errors.Is(err, os.ErrNotExist) {
				m.created[i] = append(m.created[i], d)
			}
		}
	}
	m.owned = true
	return nil
}

// validParent accepts a clean absolute cgroup path.
func validParent(p string) error {
	if !path.IsAbs(p) || path.Clean(p) != p || slices.Contains(splitPath(p), "..") {
		return fmt.Errorf("cgroups: parent %q must be a clean absolute cgroup path such as /vhqos", p)
	}
	return nil
}

// splitPath splits a clean absolute cgroup path into its components.
func splitPath(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" {
			out = append(out, c)
		}
	}
	return out
}

// subtreeDirs lists Parent/Name in every hierarchy.
func (m *Manager) subtreeDirs() []string {
	out := make([]string, len(m.hier))
	for i, h := range m.hier {
		out[i] = h.dir(m.name)
	}
	return out
}

// createGroup makes Parent/Name/name in every hierarchy (with the library)
// and opens its cgroup.procs files for Place.
func (m *Manager) createGroup(name string) (*group, error) {
	g := &group{name: name, applied: make(map[string]setting)}
	var err error
	if m.version == 1 {
		pathOf := func(sub cgroup1.Name) (string, error) {
			i, ok := m.ctrlHier[string(sub)]
			if !ok {
				return "", cgroup1.ErrControllerNotActive
			}
			return path.Join(m.hier[i].parent, m.name, name), nil
		}
		g.cg1, err = cgroup1.New(pathOf, &specs.LinuxResources{}, cgroup1.WithHierarchy(func() ([]cgroup1.Subsystem, error) { return m.subs1, nil }))
		if err == nil {
			// Usage reads the memory and pids figures itself
			// (memoryUsage): the library's Stat of those controllers
			// would parse memory.stat and a dozen more files for figures
			// nobody shows, half again the time of a Usage.
			g.stat1, err = cgroup1.New(pathOf, &specs.LinuxResources{}, cgroup1.WithHierarchy(func() ([]cgroup1.Subsystem, error) {
				return slices.DeleteFunc(slices.Clone(m.subs1), func(s cgroup1.Subsystem) bool {
					return s.Name() == cgroup1.Memory || s.Name() == cgroup1.Pids
				}), nil
			}))
		}
	} else {
		var sub *cgroup2.Manager
		h := m.hier[0]
		sub, err = cgroup2.Load(path.Join(h.parent, m.name), cgroup2.WithMountpoint(h.root))
		if err == nil {
			g.cg2, err = sub.NewChild(name, nil)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("cgroups: creating %s: %w", m.hier[0].dir(m.name, name), err)
	}
	for _, h := range m.hier {
		dir := h.dir(m.name, name)
		g.dirs = append(g.dirs, dir)
		g.procs = append(g.procs, filepath.Join(dir, "cgroup.procs"))
	}
	if err := m.prepareThreads(g); err != nil {
		if derr := g.delete(); derr != nil {
			m.log.Warn("removing a group whose threaded twin failed", "group", name, "err", derr)
		}
		return nil, err
	}
	return g, nil
}

// openFds opens the group's cgroup.procs files on first use and keeps them
// open for every later Place: a table of 10,000 vhosts must not hold 30,000
// fds for groups nobody is ever placed in.
func (g *group) openFds() ([]int, error) {
	g.fdMu.Lock()
	defer g.fdMu.Unlock()
	if g.fds != nil {
		return g.fds, nil
	}
	fds, err := openWrite(g.procs)
	if err != nil {
		return nil, err
	}
	g.fds = fds
	return fds, nil
}

// openWrite opens files for writing, all or none.
func openWrite(files []string) ([]int, error) {
	fds := make([]int, 0, len(files))
	for _, file := range files {
		fd, err := unix.Open(file, unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			for _, f := range fds {
				unix.Close(f)
			}
			return nil, fmt.Errorf("cgroups: opening %s: %w", file, err)
		}
		fds = append(fds, fd)
	}
	return fds, nil
}

func (g *group) closeFds() {
	g.fdMu.Lock()
	defer g.fdMu.Unlock()
	for _, fd := range g.fds {
		unix.Close(fd)
	}
	for _, fd := range g.tfds {
		unix.Close(fd)
	}
	g.fds, g.tfds = nil, nil
}

// Version is 1 on the v1 and hybrid layouts (limits live in v1), 2 on
// unified cgroup v2.
func (m *Manager) Version() int { return m.version }

// Path is where group appears in /proc/PID/cgroup: the "0::" line under
// v2, the cpu hierarchy's line under v1.
func (m *Manager) Path(group string) string {
	h := m.hier[0]
	if i, ok := m.ctrlHier["cpu"]; ok {
		h = m.hier[i]
	}
	return path.Join(h.parent, m.name, group)
}

// Set creates group if needed and gives it the limits r, writing only the
// files whose value changes; limits r no longer sets go back to the
// kernel's defaults. Set is idempotent.
func (m *Manager) Set(group string, r Resources) error {
	if err := validGroup(group); err != nil {
		return fmt.Errorf("cgroups: %w", err)
	}
	if err := r.validate(); err != nil {
		return fmt.Errorf("cgroups: limits of %s: %w", group, err)
	}
	if isThreadsName(group) {
		return fmt.Errorf("cgroups: %s: the name %q is the threaded subtree's", group, threadsDir)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("cgroups: setting limits of %s: the manager is closed", group)
	}
	g := m.groups[group]
	if g == nil {
		if err := m.checkParent(group); err != nil {
			return err
		}
		if err := m.handDown(parentGroup(group)); err != nil {
			return err
		}
		var err error
		if g, err = m.createGroup(group); err != nil {
			return err
		}
		m.placeMu.Lock()
		m.groups[group] = g
		m.placeMu.Unlock()
		m.log.Debug("created cgroup", "group", group, "dirs", g.dirs)
	}
	return m.setNested(g, r)
}

// update brings g's files to r.
func (m *Manager) update(g *group, r Resources) error {
	var desired []setting
	var err error
	if m.version == 2 {
		for _, c := range wantedControllers(r, "io") {
			if err := m.enableControllers([]string{c}); err != nil {
				return fmt.Errorf("cgroups: limits of %s: %s: %w", g.name, keysNeeding(r, c), err)
			}
		}
		dir := g.dirs[0]
		desired, err = v2Settings(r, statWeightFiles(dir, "io.weight", "io.bfq.weight"), dir)
	} else {
		for _, c := range wantedControllers(r, "blkio") {
			if slices.Contains(m.unowned, c) {
				return fmt.Errorf("cgroups: limits of %s: %s: the running vhqos keeper made no cgroups in the v1 %s hierarchy (it is older than this supervisor); restart vhqos to apply it", g.name, keysNeeding(r, c), c)
			}
			if _, ok := m.ctrlHier[c]; !ok {
				return fmt.Errorf("cgroups: limits of %s: %s: the cgroup v1 %s controller, which it needs, is not mounted (no /sys/fs/cgroup/%s)", g.name, keysNeeding(r, c), c, c)
			}
		}
		blkio := ""
		if i, ok := m.ctrlHier["blkio"]; ok {
			blkio = g.dirs[i]
		}
		desired, err = v1Settings(r, statWeightFiles(blkio, "blkio.weight", "blkio.bfq.weight"), blkio)
	}
	if err != nil {
		return fmt.Errorf("cgroups: limits of %s: %w", g.name, err)
	}
	writes := diff(g.applied, desired)
	if len(writes) == 0 {
		if err := m.updateTwin(g, desired); err != nil {
			return err
		}
		g.quota = r.CPUQuotaPercent
		return nil
	}
	err = apply(g.applied, writes, func(ctrl string) (string, error) {
		if m.version == 2 {
			return g.dirs[0], nil
		}
		i, ok := m.ctrlHier[ctrl]
		if !ok {
			return "", fmt.Errorf("the cgroup v1 %s controller is not mounted", ctrl)
		}
		return g.dirs[i], nil
	})
	if err != nil {
		return fmt.Errorf("cgroups: group %s: %w", g.name, err)
	}
	if err := m.updateTwin(g, desired); err != nil {
		return err
	}
	g.quota = r.CPUQuotaPercent
	if m.log.Enabled(context.Background(), slog.LevelDebug) {
		for _, w := range writes {
			m.log.Debug("cgroup limit", "group", g.name, "file", w.s.file, "value", w.value)
		}
	}
	return nil
}

// Place moves the whole process pid (a thread id selects its process) into
// group with one write per hierarchy to a cgroup.procs file kept open.
func (m *Manager) Place(group string, pid int) error {
	if pid <= 0 || pid == m.self {
		return fmt.Errorf("cgroups: placing pid %d in %s: not a server process", pid, group)
	}
	var buf [20]byte
	b := strconv.AppendInt(buf[:0], int64(pid), 10)
	m.placeMu.RLock()
	defer m.placeMu.RUnlock()
	g := m.groups[group]
	if g == nil {
		return m.noGroup(group, pid)
	}
	fds, err := g.openFds()
	if err != nil {
		return fmt.Errorf("cgroups: placing pid %d in %s: %w", pid, group, err)
	}
	for i, fd := range fds {
		if err := writeProcs(fd, b); err != nil {
			return fmt.Errorf("cgroups: placing pid %d in %s: writing %s: %w", pid, group, g.procs[i], err)
		}
	}
	return nil
}

func (m *Manager) noGroup(group string, pid int) error {
	if m.closed {
		return fmt.Errorf("cgroups: placing pid %d in %s: the manager is closed", pid, group)
	}
	return fmt.Errorf("cgroups: placing pid %d in %s: no such group (Set creates it)", pid, group)
}

// writeProcs writes a pid to an open cgroup.procs. EINVAL means the task
// is still being forked (TASK_NEW); runc and containerd retry it too.
func writeProcs(fd int, pid []byte) error {
	for try := 0; ; try++ {
		_, err := unix.Write(fd, pid)
		switch {
		case err == nil:
			return nil
		case err == unix.EINTR:
		case err == unix.EINVAL && try < 5:
			time.Sleep(time.Duration(try+1) * time.Millisecond)
		default:
			return err
		}
	}
}

// Remove moves the processes of group home and deletes it. Removing a
// group that does not exist does nothing.
func (m *Manager) Remove(group string) error { return m.RemoveTo(group, HomeGroup) }

// RemoveTo moves the group's processes into group to and deletes the group:
// when a vhost leaves the table, the processes serving it go on serving
// with the defaults' limits. With thread placement the threads PlaceThread
// put there move one by one into to (under v2 into its threaded twin), and
// the twin is deleted too.
func (m *Manager) RemoveTo(group, to string) error {
	if err := validGroup(group); err != nil {
		return fmt.Errorf("cgroups: %w", err)
	}
	if group == HomeGroup {
		return fmt.Errorf("cgroups: the %s group cannot be removed", HomeGroup)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.groups[group]
	if g == nil {
		return nil
	}
	if m.hasChildren(group) {
		return fmt.Errorf("cgroups: removing %s: groups are still inside it (remove them first)", group)
	}
	// From here on Place refuses the group, so nothing new arrives.
	m.placeMu.Lock()
	delete(m.groups, group)
	m.placeMu.Unlock()
	g.closeFds()
	dest := m.groups[to]
	if dest == nil || to == group {
		dest = m.groups[HomeGroup]
	}
	deadline := time.Now().Add(2 * time.Second)
	for try := 0; ; try++ {
		if err := m.moveAll(g, dest); err != nil {
			return err
		}
		err := g.delete()
		if err == nil {
			m.log.Debug("removed cgroup", "group", group)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroups: removing %s: %w", g.dirs[0], err)
		}
		time.Sleep(time.Duration(min(try+1, 20)) * time.Millisecond)
	}
}

// moveAll moves every process of from into to, in every hierarchy, and
// its threads (moveThreads): under v1 thread by thread in the per-thread
// hierarchies, where a process may have threads in several groups.
func (m *Manager) moveAll(from, to *group) error {
	toFds, err := to.openFds()
	if err != nil {
		return err
	}
	if err := m.moveThreads(from, to); err != nil {
		return err
	}
	for i, dir := range from.dirs {
		if slices.Contains(m.threadHier, i) {
			continue // moved thread by thread
		}
		pids, err := readPids(filepath.Join(dir, "cgroup.procs"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("cgroups: removing %s: %w", from.name, err)
		}
		for _, pid := range pids {
			b := strconv.AppendInt(nil, int64(pid), 10)
			if err := writeProcs(toFds[i], b); err != nil && err != unix.ESRCH {
				return fmt.Errorf("cgroups: removing %s: moving pid %d to %s: %w", from.name, pid, to.procs[i], err)
			}
		}
	}
	return nil
}

// delete removes the group's directories with the library; a group
// already gone is no error.
func (g *group) delete() error {
	gone := true
	for _, d := range g.dirs {
		if _, err := os.Stat(d); err == nil {
			gone = false
		}
	}
	var err error
	switch {
	case gone:
	case g.cg1 != nil:
		err = g.cg1.Delete()
	case g.cg2 != nil:
		err = g.cg2.Delete()
	}
	if errors.Is(err, cgroup1.ErrCgroupDeleted) || errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	if err == nil && g.twin != nil {
		err = g.twin.delete()
	}
	return err
}

// Pids lists the processes in a group.
func (m *Manager) Pids(group string) ([]int, error) {
	m.placeMu.RLock()
	g := m.groups[group]
	m.placeMu.RUnlock()
	if g == nil {
		return nil, fmt.Errorf("cgroups: processes of %s: no such group", group)
	}
	return readPids(g.procs[0])
}

// Usage reports what group has consumed.
func (m *Manager) Usage(group string) (Usage, error) {
	m.placeMu.RLock()
	g := m.groups[group]
	m.placeMu.RUnlock()
	if g == nil {
		return Usage{}, fmt.Errorf("cgroups: usage of %s: no such group", group)
	}
	var u Usage
	pids, err := readPids(g.procs[0])
	if err != nil {
		return u, fmt.Errorf("cgroups: usage of %s: %w", group, err)
	}
	u.Processes = len(pids)
	if g.cg2 != nil {
		st, err := g.cg2.StatFiltered(cgroup2.StatCPU | cgroup2.StatIO)
		if err != nil {
			return u, fmt.Errorf("cgroups: usage of %s in %s: %w", group, g.dirs[0], err)
		}
		if c := st.GetCPU(); c != nil {
			u.CPUUsec, u.Periods, u.ThrottledPeriods, u.ThrottledUsec = c.UsageUsec, c.NrPeriods, c.NrThrottled, c.ThrottledUsec
		}
		if _, err := os.Stat(filepath.Join(g.dirs[0], "io.stat")); err == nil {
			u.IO = true
			for _, e := range st.GetIo().GetUsage() {
				u.IOReadBytes += e.Rbytes
				u.IOWriteBytes += e.Wbytes
			}
		}
		if err := memoryUsage(&u, 2, g.dirs[0], g.dirs[0]); err != nil {
			return u, fmt.Errorf("cgroups: usage of %s: %w", group, err)
		}
		tids, err := readPids(filepath.Join(g.dirs[0], "cgroup.threads"))
		if err != nil {
			return u, fmt.Errorf("cgroups: usage of %s: %w", group, err)
		}
		u.Threads = len(tids)
		if g.twin != nil {
			if err := g.twin.usage(&u); err != nil {
				return u, fmt.Errorf("cgroups: usage of %s, its threaded twin: %w", group, err)
			}
		}
		return u, nil
	}
	tasks := g.dirs[0]
	if i, ok := m.ctrlHier["cpu"]; ok {
		tasks = g.dirs[i]
	}
	tids, err := readPids(filepath.Join(tasks, "tasks"))
	if err != nil {
		return u, fmt.Errorf("cgroups: usage of %s: %w", group, err)
	}
	u.Threads = len(tids)
	memDir, pidsDir := "", ""
	if i, ok := m.ctrlHier["memory"]; ok {
		memDir = g.dirs[i]
	}
	if i, ok := m.ctrlHier["pids"]; ok {
		pidsDir = g.dirs[i]
	}
	if err := memoryUsage(&u, 1, memDir, pidsDir); err != nil {
		return u, fmt.Errorf("cgroups: usage of %s: %w", group, err)
	}
	st, err := g.stat1.Stat(cgroup1.IgnoreNotExist)
	if err != nil {
		return u, fmt.Errorf("cgroups: usage of %s in %v: %w", group, g.dirs, err)
	}
	if c := st.GetCPU(); c != nil {
		u.CPUUsec = c.GetUsage().GetTotal() / 1000
		t := c.GetThrottling()
		u.Periods, u.ThrottledPeriods, u.ThrottledUsec = t.GetPeriods(), t.GetThrottledPeriods(), t.GetThrottledTime()/1000
	}
	if b := st.GetBlkio(); b != nil {
		_, u.IO = m.ctrlHier["blkio"]
		for _, e := range b.GetIoServiceBytesRecursive() {
			switch e.GetOp() {
			case "Read":
				u.IOReadBytes += e.GetValue()
			case "Write":
				u.IOWriteBytes += e.GetValue()
			}
		}
	}
	return u, nil
}

// Close kills every process left in the subtree (v2: cgroup.kill; else
// SIGKILL to each until none is left, bounded by ctx), removes every cgroup
// the manager created, gives back the controllers it or an attached manager
// enabled and moves the supervisor back where it was. Close is idempotent;
// it tries every step and reports every failure. An attached manager's
// Close only closes its files: no process is moved or killed, nothing is
// removed, no controller is disabled.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.done {
		return nil
	}
	if !m.closed {
		m.placeMu.Lock()
		m.closed = true
		for _, g := range m.groups {
			m.closing = append(m.closing, g)
		}
		m.groups = nil
		m.placeMu.Unlock()
		for _, g := range m.closing {
			g.closeFds()
		}
	}

	if m.attached {
		m.done = true
		return nil
	}
	var errs []error
	if m.owned {
		if m.version == 2 {
			m.adoptEnabled()
		}
		_, err := m.killAll(ctx)
		errs = append(errs, err)
		for _, g := range m.closing {
			if err := g.delete(); err != nil {
				m.log.Debug("deleting a group", "group", g.name, "err", err) // removeTree decides
			}
		}
		for _, dir := range m.subtreeDirs() {
			errs = append(errs, removeTree(ctx, dir))
		}
	}
	if m.version == 2 {
		errs = append(errs, m.restoreV2())
	}
	for i := range m.created {
		for j := len(m.created[i]) - 1; j >= 0; j-- {
			d := m.created[i][j]
			if err := unix.Rmdir(d); err != nil && err != unix.ENOENT {
				m.log.Info("leaving a parent cgroup in place", "dir", d, "err", err)
			}
		}
	}
	err := errors.Join(errs...)
	if err != nil {
		return fmt.Errorf("cgroups: closing (Close may be called again): %w", err)
	}
	m.done = true
	m.log.Debug("cgroups removed", "subtree", m.subtreeDirs())
	return nil
}

// retryBusy runs f until it succeeds, fails other than with EBUSY (a
// cgroup whose last processes are still exiting), or ctx ends.
func retryBusy(ctx context.Context, f func() error) error {
	for try := 1; ; try++ {
		err := f()
		if err == nil || !errors.Is(err, unix.EBUSY) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(min(try, 50)) * time.Millisecond):
		}
	}
}

// ProcsFiles lists the cgroup.procs files of a group, one per hierarchy,
// for a process that must enter the group itself before it starts work.
func (m *Manager) ProcsFiles(group string) []string {
	m.placeMu.RLock()
	defer m.placeMu.RUnlock()
	if g := m.groups[group]; g != nil {
		return append([]string(nil), g.procs...)
	}
	return nil
}
