package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vhqos/vhqos/cgroup"
	"github.com/vhqos/vhqos/itest"
)

// threadsQoS is two address vhosts of different CPU weights: under
// placement = "thread" a worker thread moves between their cgroups as it
// serves one vhost's connection and then the other's.
const threadsQoS = `
[[vhost]]
name = "shop"
match = ["127.0.0.2"]
cpu_weight = 400
dscp = "EF"

[[vhost]]
name = "blog"
match = ["127.0.0.3"]
cpu_weight = 100
dscp = "AF21"
`

// threadsAddrs are the vhosts' addresses; wrk's threads take one each
// (threadsWrkScript).
var threadsAddrs = []string{"127.0.0.2", "127.0.0.3"}

// threadsWrkScript sends each wrk thread to one vhost's address in turn,
// so that both vhosts are loaded at once. Only setup is scripted: wrk's
// per-request path stays in C.
const threadsWrkScript = `
local addrs = {%s}
local n = 0
function setup(thread)
  thread.addr = wrk.lookup(addrs[n %% #addrs + 1], "8080")[1]
  n = n + 1
end
`

// Apache's event MPM as Debian configures it: two children of 25
// threads (mpm_event.conf: StartServers 2, ThreadsPerChild 25).
const (
	threadsServers  = 2
	threadsPerChild = 25
)

// burnLua is a mod_lua handler that keeps its thread busy for a fixed
// number of iterations (some 1 ms of CPU on the bench's machine), the
// work of a dynamic page done in the serving thread.
const burnLua = `function handle(r)
  r.content_type = "text/plain"
  local x = 0
  for i = 1, %d do x = (x + i * 7) %% 1000003 end
  r:puts(tostring(x), "\n")
  return apache2.OK
end
`

// idleWindow is how long the supervisors' idle cost is measured, once per
// variant.
const idleWindow = 5 * time.Second

// burnIterations is burnLua's loop count.
const burnIterations = 100000

// threadsVariant is one way of running the server in the -threads bench.
type threadsVariant struct {
	name string
	// floor is the floor's mode, "" for vhqos or native; table the QoS
	// table for vhqos ("" for native or the floor).
	floor, table string
	// cgroup is where the bench puts a native or floor server.
	cgroup string
	// matching is the variant this one is measured against: the floor
	// of the same interception for vhqos.
	matching int
	// optional variants run only when -only names them.
	optional bool
}

// threadsRun is what one run of one variant measured.
type threadsRun struct {
	result
	// supCPU and supSwitches are the supervisor's (floor's, or vhqos's
	// keeper, supervisor and helpers together) CPU time and context
	// switches over wrk's run; serverCPU and serverSwitches Apache's.
	supCPU, serverCPU           time.Duration
	supSwitches, serverSwitches int
	// notifications the supervisor answered, and threads vhqos moved,
	// over wrk's run (-1: not known).
	notifications, threadMoves int64
	placement                  string // what vhqos status says it places by
	// idleCPU and idleSwitches are the supervisor's over idle, a window
	// with no requests before wrk starts (0: not measured).
	idle         time.Duration
	idleCPU      time.Duration
	idleSwitches int
}

// threadsBench measures Debian's Apache with the event MPM, two address
// vhosts, native, under the floor and under vhqos with placement =
// "process" and "thread", alternating in one run, for Connection: close
// and keep-alive. Each vhqos placement is also compared with the floor of
// the same interception: "continue" (accepts only, answered "continue":
// the kernel accepts on a listener per address, as vhqos does under
// placement = "process") and "reads" (accepts and the read family,
// answered "continue"). With lua the request is a CPU-bound mod_lua
// handler instead of a static file. With profileDir, the last round's
// vhqos placement = "thread" runs are recorded with perf record -g there.
func threadsBench(cg *cgroup.Manager, bin string, pairs, conns int, opts measureOptions, profileDir string, lua bool) error {
	work, err := os.MkdirTemp("", "vhqos-bench-threads-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	// Apache's children (www-data) read the Lua script.
	if err := os.Chmod(work, 0o755); err != nil {
		return err
	}
	tables := map[string]string{}
	for _, placement := range []string{"process", "thread"} {
		tables[placement] = filepath.Join(work, placement+".toml")
		table := "[settings]\nplacement = \"" + placement + "\"\n" + threadsQoS
		if err := os.WriteFile(tables[placement], []byte(table), 0o644); err != nil {
			return fmt.Errorf("writing the QoS table: %w", err)
		}
	}
	script := filepath.Join(work, "addrs.lua")
	quoted := make([]string, len(threadsAddrs))
	for i, a := range threadsAddrs {
		quoted[i] = strconv.Quote(a)
	}
	if err := os.WriteFile(script, []byte(fmt.Sprintf(threadsWrkScript, strings.Join(quoted, ", "))), 0o644); err != nil {
		return err
	}
	path, extra := "/index.html", ""
	if lua {
		handler := filepath.Join(work, "burn.lua")
		if err := os.WriteFile(handler, []byte(fmt.Sprintf(burnLua, burnIterations)), 0o644); err != nil {
			return err
		}
		path = "/burn"
		extra = "LoadModule lua_module /usr/lib/apache2/modules/mod_lua.so\nLuaScope thread\nLuaMapHandler ^/burn$ " + handler + " handle\n"
	}
	floorBin, removeFloor, err := buildFloor()
	if err != nil {
		return err
	}
	defer removeFloor()
	if profileDir != "" {
		if err := os.MkdirAll(profileDir, 0o755); err != nil {
			return err
		}
	}
	variants := []threadsVariant{
		{name: "native", cgroup: "native", matching: -1},
		{name: "floor (continue)", floor: "continue", cgroup: "floor", matching: -1},
		{name: "vhqos placement=process", table: tables["process"], matching: 1},
		{name: "floor (reads)", floor: "reads", cgroup: "floor", matching: -1},
		{name: "vhqos placement=thread", table: tables["thread"], matching: 3},
		// vhqos emulates every accept under placement = "thread": this
		// floor does too, to tell that cost from the rest (run when -only
		// names it, e.g. -only 'thread|emulate').
		{name: "floor (emulate, reads)", floor: "emulate-reads", cgroup: "floor", matching: -1, optional: true},
	}
	variants = selectVariants(variants, opts.only)
	what := "static file (" + path + ")"
	if lua {
		what = fmt.Sprintf("CPU-bound mod_lua handler (%d iterations)", burnIterations)
	}
	fmt.Printf("Apache event MPM (%d children of %d threads), %s, two address vhosts (cpu_weight 400 and 100), wrk -t2 -c%d -d%v (one thread per vhost), %d alternating rounds of %s; %s\n",
		threadsServers, threadsPerChild, what, conns, opts.duration, pairs, variantNames(variants), kernel())
	for _, close := range []bool{true, false} {
		runs := make([][]threadsRun, len(variants))
		for i := 0; i < pairs; i++ {
			var line []string
			for vi, v := range variants {
				var perfOut string
				if profileDir != "" && i == pairs-1 && v.table == tables["thread"] {
					perfOut = filepath.Join(profileDir, fmt.Sprintf("threads-%s-vhqos-thread.data", label(close)))
				}
				var idle time.Duration
				if close && i == 0 && (v.floor != "" || v.table != "") {
					idle = idleWindow
				}
				r, err := measureThreads(cg, bin, floorBin, v, path, extra, script, close, conns, opts, perfOut, idle)
				if err != nil {
					return fmt.Errorf("%s: %w", v.name, err)
				}
				if v.table == tables["thread"] && r.threadMoves <= 0 {
					fmt.Printf("    (vhqos placement=thread moved no thread in this run: vhqos status says placement %q, %d thread moves)\n", r.placement, r.threadMoves)
				}
				runs[vi] = append(runs[vi], r)
				line = append(line, fmt.Sprintf("%s %.0f", v.name, r.rps))
			}
			fmt.Printf("  %-10s round %d: %s req/s\n", label(close), i+1, strings.Join(line, ", "))
			if close && i == 0 {
				var idle []string
				for vi, v := range variants {
					if r := runs[vi][0]; r.idle > 0 {
						idle = append(idle, fmt.Sprintf("%s %.2f ms, %.0f switches", v.name,
							r.idleCPU.Seconds()*1e3/r.idle.Seconds(), float64(r.idleSwitches)/r.idle.Seconds()))
					}
				}
				fmt.Printf("  idle, supervisor per second over %v with no requests (before round 1): %s\n", idleWindow, strings.Join(idle, "; "))
			}
		}
		fmt.Printf("  %-10s medians over %d rounds:\n", label(close), pairs)
		fmt.Printf("    %-24s %8s %8s %8s %10s %9s %10s %10s %10s %9s\n", "", "req/s", "/native", "/floor", "sup µs/req", "notif/req", "sup cs/req", "srv µs/req", "srv cs/req", "moves/req")
		for vi, v := range variants {
			var rps, toNative, toFloor, supCPU, notif, supCS, srvCPU, srvCS, moves []float64
			for i, r := range runs[vi] {
				n := float64(r.requests)
				rps = append(rps, r.rps)
				toNative = append(toNative, r.rps/runs[0][i].rps)
				if v.matching >= 0 {
					toFloor = append(toFloor, r.rps/runs[v.matching][i].rps)
				}
				if n == 0 {
					continue
				}
				supCPU = append(supCPU, r.supCPU.Seconds()*1e6/n)
				supCS = append(supCS, float64(r.supSwitches)/n)
				srvCPU = append(srvCPU, r.serverCPU.Seconds()*1e6/n)
				srvCS = append(srvCS, float64(r.serverSwitches)/n)
				if r.notifications >= 0 {
					notif = append(notif, float64(r.notifications)/n)
				}
				if r.threadMoves >= 0 {
					moves = append(moves, float64(r.threadMoves)/n)
				}
			}
			dash := func(v []float64, format string) string {
				if len(v) == 0 {
					return "-"
				}
				return fmt.Sprintf(format, median(v))
			}
			sup := v.floor != "" || v.table != ""
			fmt.Printf("    %-24s %8.0f %8.3f %8s %10s %9s %10s %10.1f %10.2f %9s\n", v.name, median(rps), median(toNative), dash(toFloor, "%.3f"),
				map[bool]string{true: dash(supCPU, "%.1f"), false: "-"}[sup], dash(notif, "%.2f"),
				map[bool]string{true: dash(supCS, "%.2f"), false: "-"}[sup], median(srvCPU), median(srvCS), dash(moves, "%.3f"))
		}
		// vhqos placement = "thread" against the floor that also
		// emulates accepts, when both ran.
		thread, emulating := -1, -1
		for vi, v := range variants {
			switch {
			case v.table == tables["thread"]:
				thread = vi
			case v.floor == "emulate-reads":
				emulating = vi
			}
		}
		if thread >= 0 && emulating >= 0 {
			var ratio []float64
			for i := range runs[thread] {
				ratio = append(ratio, runs[thread][i].rps/runs[emulating][i].rps)
			}
			fmt.Printf("    %s / %s: %.3f\n", variants[thread].name, variants[emulating].name, median(ratio))
		}
	}
	return nil
}

// selectVariants keeps the variants whose name contains only, or one of
// its |-separated parts (all but the optional ones when it is empty), with
// native and the floors they are measured against.
func selectVariants(vs []threadsVariant, only string) []threadsVariant {
	keep := make([]bool, len(vs))
	for i, v := range vs {
		if i == 0 || only == "" && !v.optional || only != "" && namedIn(v.name, only) {
			keep[i] = true
			if v.matching >= 0 {
				keep[v.matching] = true
			}
		}
	}
	var out []threadsVariant
	index := map[int]int{}
	for i, v := range vs {
		if keep[i] {
			index[i] = len(out)
			out = append(out, v)
		}
	}
	for i := range out {
		if out[i].matching >= 0 {
			out[i].matching = index[out[i].matching]
		}
	}
	return out
}

// namedIn reports whether name contains one of the |-separated parts of
// only.
func namedIn(name, only string) bool {
	for _, part := range strings.Split(only, "|") {
		if strings.Contains(name, part) {
			return true
		}
	}
	return false
}

func variantNames(vs []threadsVariant) string {
	names := make([]string, len(vs))
	for i, v := range vs {
		names[i] = v.name
	}
	return strings.Join(names, ", ")
}

// measureThreads starts Apache (event MPM) as variant v says, runs wrk
// against path on both vhosts and stops it, returning wrk's figures and
// what the supervisor and the server spent over wrk's run alone (their
// start and stop are left out). perfOut, if set, records the supervisor
// with perf record -g there for the length of the run. With idle, the
// supervisor's cost is also measured over that long with no requests,
// before wrk starts.
func measureThreads(cg *cgroup.Manager, bin, floorBin string, v threadsVariant, path, extra, script string, close bool, conns int, opts measureOptions, perfOut string, idle time.Duration) (threadsRun, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	statusSock := filepath.Join(os.TempDir(), fmt.Sprintf("vhqos-bench-threads-%d.sock", os.Getpid()))
	prefix := opts.pinServer()
	switch {
	case v.floor != "":
		prefix = append(prefix, floorBin, v.floor, "--")
	case v.table != "":
		prefix = append(prefix, bin, "run", "--config", v.table, "--status-socket", statusSock, "--")
	}
	cfg := itest.ApacheConfig{
		VHosts:  []itest.VHost{{Name: "shop", Addr: threadsAddrs[0] + ":8080"}, {Name: "blog", Addr: threadsAddrs[1] + ":8080"}},
		Prefix:  prefix,
		MPM:     "event",
		Servers: threadsServers,
		Threads: threadsPerChild,
		Extra:   extra,
	}
	a, err := itest.StartApache(ctx, cfg)
	if err != nil {
		return threadsRun{}, err
	}
	defer a.Remove()
	defer a.Stop()
	top := a.Cmd.Process.Pid
	// The server's process group is led by Apache's parent: the command
	// itself natively, else the supervisor's child that is not one of
	// vhqos's own helpers.
	serverLeader := top
	var supervisors []int
	if v.floor != "" || v.table != "" {
		supervisors = append([]int{top}, vhqosHelpers(top)...)
		if serverLeader, err = serverOf(top); err != nil {
			return threadsRun{}, fmt.Errorf("%s: %w", v.name, err)
		}
	}
	server := processGroup(serverLeader)
	if v.cgroup != "" {
		// As measure does: a native or floor server in a cgroup of its
		// own, a sibling of wrk's, as vhqos's server is in one of its.
		for _, pid := range server {
			if err := cg.Place(v.cgroup, pid); err != nil {
				return threadsRun{}, err
			}
		}
	}
	var run threadsRun
	run.notifications, run.threadMoves = -1, -1
	counts := func() (notifications, moves int64, placement string, err error) {
		switch {
		case v.table != "":
			st, err := vhqosStatus(bin, statusSock)
			return int64(st.Supervisor.Notifications), int64(st.Supervisor.ThreadPlacements), st.Supervisor.Placement, err
		case v.floor != "":
			// Written to the server's stderr, read once it has stopped.
			return 0, -1, "", syscall.Kill(top, syscall.SIGPWR)
		}
		return -1, -1, "", nil
	}
	if idle > 0 {
		// A window with no requests: what the supervisor costs a
		// server that waits (timers, sweeps, the Go runtime).
		c0, s0 := costOf(supervisors)
		time.Sleep(idle)
		c1, s1 := costOf(supervisors)
		run.idle, run.idleCPU, run.idleSwitches = idle, c1-c0, s1-s0
	}
	n0, m0, _, err := counts()
	if err != nil {
		return threadsRun{}, err
	}
	sup0, supCS0 := costOf(supervisors)
	srv0, srvCS0 := costOf(server)
	var perf *exec.Cmd
	if perfOut != "" {
		perf = exec.Command("perf", "record", "-q", "-g", "-o", perfOut, "-p", joinPids(supervisors))
		if err := perf.Start(); err != nil {
			return threadsRun{}, fmt.Errorf("starting perf record: %w", err)
		}
	}
	args := []string{"-t2", "-c" + strconv.Itoa(conns), "-d" + opts.duration.String(), "-s", script}
	if close {
		args = append(args, "-H", "Connection: close")
	}
	procs := cg.ProcsFiles("client")
	wrkCmd := `exec wrk "$@"`
	if opts.pin {
		wrkCmd = `exec taskset -c 1 wrk "$@"`
	}
	sh := `for f in ` + strings.Join(procs, " ") + `; do echo $$ > $f; done; ` + wrkCmd
	out, wrkErr := exec.Command("sh", append([]string{"-c", sh, "sh"}, append(args, "http://"+threadsAddrs[0]+":8080"+path)...)...).CombinedOutput()
	sup1, supCS1 := costOf(supervisors)
	srv1, srvCS1 := costOf(server)
	if perf != nil {
		perf.Process.Signal(syscall.SIGINT)
		perf.Wait()
	}
	n1, m1, placement, err := counts()
	if err != nil {
		return threadsRun{}, err
	}
	run.supCPU, run.supSwitches = sup1-sup0, supCS1-supCS0
	run.serverCPU, run.serverSwitches = srv1-srv0, srvCS1-srvCS0
	run.placement = placement
	if v.table != "" {
		run.notifications, run.threadMoves = n1-n0, m1-m0
	}
	a.Stop()
	if v.floor != "" {
		if c := floorCounts(a.Output()); len(c) >= 2 {
			run.notifications = c[1] - c[0]
		}
	}
	if wrkErr != nil {
		return threadsRun{}, fmt.Errorf("wrk: %v: %s", wrkErr, out)
	}
	run.result, err = wrkResult(out, v.name)
	return run, err
}

// costOf sums the CPU time and context switches of the threads of pids.
func costOf(pids []int) (time.Duration, int) {
	var cpu time.Duration
	switches := 0
	for _, pid := range pids {
		cpu += threadsCPU(pid)
		switches += processSwitches(pid)
	}
	return cpu, switches
}

// threadsCPU sums the time on CPU of the live threads of pid, from
// /proc/PID/task/TID/schedstat (its first field, in nanoseconds): finer
// than /proc/PID/stat's clock ticks, which a supervisor's few
// milliseconds of a second would round away. A thread that exits takes
// its share with it, as processSwitches loses its switches.
func threadsCPU(pid int) time.Duration {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var total time.Duration
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		if f := strings.Fields(string(data)); len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			total += time.Duration(ns)
		}
	}
	return total
}

var floorCountRe = regexp.MustCompile(`floor: (\d+) notifications`)

// floorCounts reads the floor's notification counts from its output, in
// the order it wrote them.
func floorCounts(out string) []int64 {
	var c []int64
	for _, m := range floorCountRe.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		c = append(c, n)
	}
	return c
}

// statusReport is the part of vhqos status --json the bench reads.
type statusReport struct {
	Supervisor struct {
		Notifications    uint64 `json:"notifications"`
		Placement        string `json:"placement"`
		ThreadPlacements uint64 `json:"thread_placements"`
	} `json:"supervisor"`
}

// vhqosStatus asks the vhqos at sock for its report.
func vhqosStatus(bin, sock string) (statusReport, error) {
	var st statusReport
	out, err := exec.Command(bin, "status", "--socket", sock, "--json").Output()
	if err != nil {
		return st, fmt.Errorf("vhqos status: %w", err)
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("reading vhqos status --json: %w", err)
	}
	return st, nil
}
