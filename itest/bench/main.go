// Command bench measures what vhqos costs Apache prefork: the same server
// and configuration native, under the floor (a minimal C supervisor, the
// least the mechanism costs: floor/floor.c) and under vhqos, alternating
// in one run, with wrk over loopback, for Connection: close and
// keep-alive. It reports the median ratios of requests/s (vhqos / native,
// floor / native, vhqos / floor) and each supervisor's CPU time and
// context switches per accepted connection. Run it as root with
// `make bench`; -profile DIR also records the supervisors with perf.
package main

import (
	"bytes"
	"context"
	_ "embed"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vhqos/vhqos/cgroup"
	"github.com/vhqos/vhqos/itest"
)

const nsEnv = "VHQOS_BENCH_NS"

// floorSource is the reference supervisor, compiled with cc when the
// bench starts.
//
//go:embed floor/floor.c
var floorSource []byte

// The vhost keeps the default CPU weight: the benchmark measures what the
// mechanism costs, not the effect of giving the server a bigger share.
const qos = `
[[vhost]]
name = "shop"
match = ["127.0.0.2"]
dscp = "EF"
`

// nameQoS tells the vhosts of one address apart by HTTP Host and TLS SNI.
const nameQoS = `
[[vhost]]
name = "shop"
match = ["shop.example"]
dscp = "EF"

[[vhost]]
name = "blog"
match = ["blog.example"]
dscp = "AF21"
`

// setup is one server configuration to measure, and where wrk sends its
// requests.
type setup struct {
	name      string
	url       string
	listenAll string
	names     bool // name-based vhosts, HTTP on :8080 and HTTPS on :8443
	// floorMode is how the floor answers this setup's accepts: "continue"
	// where vhqos lets the kernel accept, "emulate" where vhqos accepts.
	floorMode string
	// server is the address Apache listens on ("" for 127.0.0.2), and
	// clients, if set, the veth pair whose other end wrk runs behind
	// (-rates: shaping the server's device, not lo, which the client's
	// packets would cross too).
	server  string
	clients *itest.Veth
}

func main() {
	pairs := flag.Int("pairs", 5, "native/wrapped pairs per measurement")
	pin := flag.Bool("pin", false, "run the server (and vhqos) on CPU 0 and wrk on CPU 1, so the client does not compete with the server")
	duration := flag.Duration("d", 5*time.Second, "length of each wrk run")
	conns := flag.Int("c", 16, "wrk connections")
	vhqos := flag.String("vhqos", "build/vhqos", "the vhqos binary")
	reload := flag.Bool("reload", false, "measure QoS table reload latency instead")
	names := flag.Bool("names", false, "measure name-based vhosts (HTTP Host, TLS SNI) over HTTP and HTTPS instead of address-based ones")
	fork := flag.Bool("fork", false, "measure fork-after-accept servers (socat, busybox httpd) in connections/s instead, native and under each track setting")
	profile := flag.String("profile", "", "record each supervisor's Connection: close runs with perf record -g into this directory (perf report -i FILE reads them); with -threads, vhqos placement = \"thread\" in the last round, close and keep-alive")
	syscalls := flag.String("syscalls", "", "count each supervisor's system calls in its last Connection: close run with perf trace -s into this directory (DIR/PATH-WHO.txt)")
	only := flag.String("only", "", "measure only the paths whose name contains this text (e.g. wildcard); with -threads, the variants whose name contains it or one of its |-separated parts (e.g. 'thread|emulate'), with native and the floors they are measured against")
	baseline := flag.String("baseline", "", "another vhqos binary (an earlier build) measured in each round too, for vhqos/baseline")
	fpm := flag.Bool("fpm", false, "measure php-fpm behind a native nginx instead: native, floor and vhqos with two name vhosts (FastCGI HTTP_HOST)")
	caps := flag.Bool("caps", false, "measure vhqos with max_connections = 1000000 on every vhost (a cap never reached) against the same table without it, instead of native and the floor")
	rates := flag.Bool("rates", false, "measure vhqos with egress_rate and connection_rate on every vhost (limits never reached; lo shaped) against the same table without them, instead of native and the floor")
	threads := flag.Bool("threads", false, "measure Apache's event MPM (threaded) with two address vhosts instead: native, floor (continue), vhqos placement = \"process\", floor (reads: accepts and the read family answered \"continue\") and vhqos placement = \"thread\"")
	lua := flag.Bool("lua", false, "with -threads: ask for a CPU-bound mod_lua handler (some 1 ms of CPU) instead of the static file")
	sparse := flag.Bool("sparse", false, "measure what the floor and vhqos cost per second with the server idle and at 10 and 100 connections/s (Connection: close, one at a time, for -d each) instead of at full load")
	egressRate := flag.String("egress-rate", "10Gbit", "with -rates: the egress_rate (\"\": none)")
	connectionRate := flag.String("connection-rate", "100Gbit", "with -rates: the connection_rate (\"\": none)")
	flag.Parse()
	if os.Getenv(nsEnv) == "" {
		// A network namespace of its own: any loopback address and port,
		// nothing of the host's touched.
		cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
		cmd.Env = append(os.Environ(), nsEnv+"=1")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS}
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: lo up: %v %s\n", err, out)
		os.Exit(1)
	}
	// fail exits without running deferred calls: run returns its error
	// once its own have closed what it opened (cgroups, the veth pair).
	run := func() error {
		bin, _ := filepath.Abs(*vhqos)
		if *reload {
			return reloadBench(bin)
		}
		if *fork {
			return forkBench(bin, *pairs, *conns, *duration)
		}
		table := qos
		server := "127.0.0.2"
		var clients *itest.Veth
		if *rates {
			var err error
			if clients, err = itest.NewVeth(benchDevice, "vqbench1", "169.254.90.1", "169.254.90.2"); err != nil {
				return err
			}
			defer clients.Close()
			if err := clients.InClients(clientSysctls); err != nil {
				return err
			}
			server = clients.SrvIP
			table = strings.ReplaceAll(table, "127.0.0.2", server)
		}
		setups := []setup{
			{name: "listener per address (kernel accepts)", url: "http://" + server + ":8080/index.html", floorMode: "continue"},
			{name: "wildcard listener (vhqos emulates accept)", url: "http://" + server + ":8080/index.html", listenAll: "8080", floorMode: "emulate"},
		}
		if *names {
			table = nameQoS
			setups = []setup{
				{name: "name-based, HTTP (Host header)", url: "http://shop.example:8080/index.html", names: true, floorMode: "emulate"},
				{name: "name-based, HTTPS (TLS SNI)", url: "https://shop.example:8443/index.html", names: true, floorMode: "emulate"},
			}
			if err := privateHosts(server + " shop.example blog.example\n"); err != nil {
				return err
			}
		}
		for i := range setups {
			setups[i].server, setups[i].clients = server, clients
		}
		qosFile, removeTable, err := writeTable(table)
		if err != nil {
			return err
		}
		defer removeTable()

		cg, err := cgroup.New(context.Background(), cgroup.Options{Name: "vhqos-bench." + strconv.Itoa(os.Getpid())})
		if err != nil {
			return err
		}
		defer cg.Close(context.Background())
		for _, g := range []string{"client", "native", "floor"} {
			if err := cg.Set(g, cgroup.Resources{}); err != nil {
				return err
			}
		}
		opts := measureOptions{duration: *duration, only: *only, pin: *pin}
		switch {
		case *fpm:
			return fpmBench(cg, bin, *pairs, *conns, opts)
		case *threads:
			return threadsBench(cg, bin, *pairs, *conns, opts, *profile, *lua)
		case *caps:
			return capsBench(cg, bin, table, setups, *pairs, *conns, opts)
		case *rates:
			return ratesBench(cg, bin, table, *egressRate, *connectionRate, setups, *pairs, *conns, opts)
		}
		floorBin, removeFloor, err := buildFloor()
		if err != nil {
			return err
		}
		defer removeFloor()
		for _, dir := range []string{*profile, *syscalls} {
			if dir == "" {
				continue
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
		}
		vhqosRun := func(bin string) []string {
			return append(opts.pinServer(), bin, "run", "--config", qosFile, "--status-socket", filepath.Join(os.TempDir(), fmt.Sprintf("vhqos-bench-%d.sock", os.Getpid())), "--")
		}
		if *sparse {
			return sparseBench(cg, floorBin, vhqosRun, bin, *baseline, setups, *only, *pairs, *duration)
		}
		fmt.Printf("Apache prefork, static file, wrk -t2 -c%d -d%v, %d alternating rounds of native, floor (C reference supervisor), vhqos; %s\n", *conns, *duration, *pairs, kernel())
		for pi, path := range setups {
			if !strings.Contains(path.name, *only) {
				continue
			}
			fmt.Printf("\n%s (floor: %s)\n", path.name, path.floorMode)
			for _, close := range []bool{true, false} {
				var toNative, floorToNative, toFloor, cpuPerConn, floorCPUPerConn, switchesPerConn, floorSwitchesPerConn []float64
				var toBaseline, baselineCPUPerConn []float64
				for i := 0; i < *pairs; i++ {
					pinServer := opts.pinServer()
					// Only the last round is profiled or traced: perf's own
					// cost must not shift the medians much.
					perfTo := func(who string) []string {
						switch {
						case !close || i != *pairs-1:
							return nil
						case *profile != "":
							return []string{"record", "-q", "-g", "-o", filepath.Join(*profile, fmt.Sprintf("%d-%s.data", pi+1, who))}
						case *syscalls != "":
							return []string{"trace", "-s", "-o", filepath.Join(*syscalls, fmt.Sprintf("%d-%s.txt", pi+1, who))}
						}
						return nil
					}
					native, _, err := measure(cg, pinServer, *pin, path, close, *conns, *duration, nil)
					if err != nil {
						return err
					}
					floor, floorSup, err := measure(cg, append(pinServer, floorBin, path.floorMode, "--"), *pin, path, close, *conns, *duration, perfTo("floor"))
					if err != nil {
						return err
					}
					wrapped, sup, err := measure(cg, vhqosRun(bin), *pin, path, close, *conns, *duration, perfTo("vhqos"))
					if err != nil {
						return err
					}
					if *baseline != "" {
						base, baseSup, err := measure(cg, vhqosRun(*baseline), *pin, path, close, *conns, *duration, nil)
						if err != nil {
							return err
						}
						toBaseline = append(toBaseline, wrapped.rps/base.rps)
						if close && base.requests > 0 {
							baselineCPUPerConn = append(baselineCPUPerConn, baseSup.cpu.Seconds()*1e6/float64(base.requests))
						}
						fmt.Printf("  %-10s round %d: baseline %8.0f req/s, vhqos/baseline %.3f\n", label(close), i+1, base.rps, wrapped.rps/base.rps)
					}
					toNative = append(toNative, wrapped.rps/native.rps)
					floorToNative = append(floorToNative, floor.rps/native.rps)
					toFloor = append(toFloor, wrapped.rps/floor.rps)
					if close && wrapped.requests > 0 && floor.requests > 0 {
						cpuPerConn = append(cpuPerConn, sup.cpu.Seconds()*1e6/float64(wrapped.requests))
						floorCPUPerConn = append(floorCPUPerConn, floorSup.cpu.Seconds()*1e6/float64(floor.requests))
						switchesPerConn = append(switchesPerConn, float64(sup.switches)/float64(wrapped.requests))
						floorSwitchesPerConn = append(floorSwitchesPerConn, float64(floorSup.switches)/float64(floor.requests))
					}
					fmt.Printf("  %-10s round %d: native %8.0f, floor %8.0f, vhqos %8.0f req/s; vhqos/native %.3f, floor/native %.3f, vhqos/floor %.3f\n",
						label(close), i+1, native.rps, floor.rps, wrapped.rps, wrapped.rps/native.rps, floor.rps/native.rps, wrapped.rps/floor.rps)
				}
				fmt.Printf("  %-10s medians: vhqos/native %.3f, floor/native %.3f, vhqos/floor %.3f", label(close), median(toNative), median(floorToNative), median(toFloor))
				if close {
					fmt.Printf("; supervisor CPU per connection: vhqos %.1f µs, floor %.1f µs (%.2f); context switches per connection: vhqos %.2f, floor %.2f",
						median(cpuPerConn), median(floorCPUPerConn), median(cpuPerConn)/median(floorCPUPerConn), median(switchesPerConn), median(floorSwitchesPerConn))
				}
				if len(toBaseline) > 0 {
					fmt.Printf("; vhqos/baseline %.3f", median(toBaseline))
					if close {
						fmt.Printf(", baseline CPU per connection %.1f µs", median(baselineCPUPerConn))
					}
				}
				fmt.Println()
			}
		}
		return nil
	}
	if err := run(); err != nil {
		fail(err)
	}
}

// buildFloor compiles the reference supervisor into a temporary directory
// and returns its path, and remove, which deletes the directory.
func buildFloor() (bin string, remove func(), err error) {
	dir, err := os.MkdirTemp("", "vhqos-floor")
	if err != nil {
		return "", nil, fmt.Errorf("building the floor supervisor: %w", err)
	}
	remove = func() { os.RemoveAll(dir) }
	src := filepath.Join(dir, "floor.c")
	if err := os.WriteFile(src, floorSource, 0o644); err != nil {
		remove()
		return "", nil, fmt.Errorf("building the floor supervisor: %w", err)
	}
	bin = filepath.Join(dir, "floor")
	if out, err := exec.Command("cc", "-O2", "-Wall", "-o", bin, src).CombinedOutput(); err != nil {
		remove()
		return "", nil, fmt.Errorf("building the floor supervisor with cc: %v\n%s", err, out)
	}
	return bin, remove, nil
}

func label(close bool) string {
	if close {
		return "close"
	}
	return "keep-alive"
}

// measureOptions are the flags every measurement shares.
type measureOptions struct {
	duration time.Duration
	only     string
	pin      bool
}

// pinServer is the command prefix that keeps the server on CPU 0 when
// pinning is asked for.
func (o measureOptions) pinServer() []string {
	if o.pin {
		return []string{"taskset", "-c", "0"}
	}
	return nil
}

type result struct {
	rps      float64
	requests int
}

var (
	rpsRe  = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	reqsRe = regexp.MustCompile(`(\d+) requests in`)
	errRe  = regexp.MustCompile(`Socket errors|Non-2xx`)
)

// measure starts Apache (under prefix, if any), runs wrk against it and
// stops it, returning wrk's figures and the supervisor's own cost (CPU
// time, context switches). perfArgs, if set, run perf (record or trace)
// on the supervisor for the length of the run: its arguments but -p. wrk runs in cgroup "client", native Apache in
// "native" and the floor's Apache in "floor", siblings of equal weight:
// under vhqos the server's processes sit in a cgroup too, and the CPU
// scheduler treats a cgroup as one entity, so without this the runs would
// differ in how CPU is shared rather than in what each supervisor costs.
func measure(cg *cgroup.Manager, prefix []string, pin bool, su setup, close bool, conns int, d time.Duration, perfArgs []string) (result, supervisorCost, error) {
	wrapped := len(prefix) > 0 && prefix[len(prefix)-1] == "--"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Enough processes for every keep-alive connection from the start.
	a, supervisors, err := startApache(ctx, cg, prefix, su, conns+4)
	if err != nil {
		return result{}, supervisorCost{}, err
	}
	defer a.Remove()
	var perf *exec.Cmd
	if perfArgs != nil {
		perf = exec.Command("perf", append(perfArgs, "-p", joinPids(supervisors))...)
		if err := perf.Start(); err != nil {
			return result{}, supervisorCost{}, fmt.Errorf("starting perf %s: %w", perfArgs[0], err)
		}
	}
	args := []string{"-t2", "-c" + strconv.Itoa(conns), "-d" + d.String()}
	if close {
		args = append(args, "-H", "Connection: close")
	}
	// wrk enters its cgroup through a shell that moves itself first.
	procs := cg.ProcsFiles("client")
	script := `for f in ` + strings.Join(procs, " ") + `; do echo $$ > $f; done; exec wrk "$@"`
	if pin {
		script = `for f in ` + strings.Join(procs, " ") + `; do echo $$ > $f; done; exec taskset -c 1 wrk "$@"`
	}
	wrk := exec.Command("sh", append([]string{"-c", script, "sh"}, append(args, su.url)...)...)
	var out []byte
	if su.clients != nil {
		var buf bytes.Buffer
		wrk.Stdout, wrk.Stderr = &buf, &buf
		if err = su.clients.InClients(wrk.Start); err == nil {
			err = wrk.Wait()
		}
		out = buf.Bytes()
	} else {
		out, err = wrk.CombinedOutput()
	}
	var cost supervisorCost
	if wrapped {
		for _, pid := range supervisors {
			cost.cpu += processCPU(pid)
			cost.switches += processSwitches(pid)
		}
	}
	if perf != nil {
		perf.Process.Signal(syscall.SIGINT)
		perf.Wait()
	}
	a.Stop()
	if err != nil {
		return result{}, supervisorCost{}, fmt.Errorf("wrk: %v: %s", err, out)
	}
	res, err := wrkResult(out, map[bool]string{true: "vhqos", false: "native"}[wrapped])
	return res, cost, err
}

// startApache starts Apache with servers processes for su under prefix
// (none: native; the floor's or vhqos's command line, ending in "--") and
// puts it in its cgroup: "native", "floor", or under vhqos the ones vhqos
// places it in. It returns Apache and the supervisor's processes (none
// when native; vhqos is a keeper, a supervisor and an idle reaper: its
// cost is theirs together).
func startApache(ctx context.Context, cg *cgroup.Manager, prefix []string, su setup, servers int) (*itest.Apache, []int, error) {
	wrapped := len(prefix) > 0 && prefix[len(prefix)-1] == "--"
	server := su.server
	if server == "" {
		server = "127.0.0.2"
	}
	cfg := itest.ApacheConfig{
		VHosts:    []itest.VHost{{Name: "shop", Addr: server + ":8080"}},
		Prefix:    prefix,
		ListenAll: su.listenAll,
		Servers:   servers,
	}
	if su.names {
		cert, key, err := itest.MakeCertificate(os.TempDir(), "shop.example", "blog.example")
		if err != nil {
			return nil, nil, err
		}
		cfg.VHosts = []itest.VHost{{Name: "shop.example", Addr: server + ":8080"}, {Name: "blog.example", Addr: server + ":8080"}}
		cfg.TLSAddr, cfg.CertFile, cfg.KeyFile = server+":8443", cert, key
	}
	a, err := itest.StartApache(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case !wrapped:
		for _, pid := range processGroup(a.Cmd.Process.Pid) {
			if err := cg.Place("native", pid); err != nil {
				a.Remove()
				return nil, nil, err
			}
		}
		return a, nil, nil
	case strings.Contains(prefix[len(prefix)-3], "floor"):
		// The floor's server sits in a cgroup of its own too, as under
		// vhqos: the floor itself stays where it was started, as vhqos
		// does. (The floor's child leads the server's process group.)
		for _, child := range childrenOf(a.Cmd.Process.Pid) {
			for _, pid := range processGroup(child) {
				if err := cg.Place("floor", pid); err != nil {
					a.Remove()
					return nil, nil, err
				}
			}
		}
		return a, []int{a.Cmd.Process.Pid}, nil
	}
	return a, append([]int{a.Cmd.Process.Pid}, vhqosHelpers(a.Cmd.Process.Pid)...), nil
}

// wrkResult reads a wrk run's requests/s and request count from its
// output, and shows the line of socket errors or non-2xx answers if there
// is one; against says which server it ran against.
func wrkResult(out []byte, against string) (result, error) {
	if e := errRe.Find(out); e != nil {
		line := out[bytes.Index(out, e):]
		if i := bytes.IndexByte(line, '\n'); i > 0 {
			line = line[:i]
		}
		fmt.Printf("    (wrk against %s: %s)\n", against, line)
	}
	m := rpsRe.FindSubmatch(out)
	n := reqsRe.FindSubmatch(out)
	if m == nil || n == nil {
		return result{}, fmt.Errorf("cannot read wrk's output:\n%s", out)
	}
	rps, _ := strconv.ParseFloat(string(m[1]), 64)
	reqs, _ := strconv.Atoi(string(n[1]))
	return result{rps: rps, requests: reqs}, nil
}

// privateHosts makes this mount namespace's /etc/hosts say hosts, so that
// wrk resolves the vhosts' names (and sends them as SNI) without touching
// the machine's file: mounts are made private first, so the bind mount
// stays in here.
func privateHosts(hosts string) error {
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making mounts private: %w", err)
	}
	f := filepath.Join(os.TempDir(), "vhqos-bench-hosts")
	if err := os.WriteFile(f, []byte(hosts), 0o644); err != nil {
		return err
	}
	if err := syscall.Mount(f, "/etc/hosts", "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mounting %s on /etc/hosts: %w", f, err)
	}
	return nil
}

// childrenOf lists the children of every thread of pid: a process lists
// its children by the thread that forked them, and a Go program forks from
// whichever thread runs the goroutine.
func childrenOf(pid int) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var kids []int
	for _, t := range tasks {
		data, _ := os.ReadFile(t)
		for _, f := range strings.Fields(string(data)) {
			if k, err := strconv.Atoi(f); err == nil {
				kids = append(kids, k)
			}
		}
	}
	return kids
}

// vhqosHelpers lists the processes vhqos run (pid) started for itself:
// the supervisor and the reaper, not the server.
func vhqosHelpers(pid int) []int {
	var helpers []int
	for _, k := range childrenOf(pid) {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", k))
		if strings.Contains(string(cmdline), "--keeper-state") {
			helpers = append(helpers, k)
		}
	}
	return helpers
}

// writeTable writes a QoS table into a directory of its own, as an
// operator keeps /etc/vhqos, and returns its path and what removes both.
// vhqos watches the table's directory (an editor's rename replaces the
// file): in a busy one, /tmp with the bench's own logs and perf data
// growing, every write there would wake its watcher mid-measurement.
func writeTable(table string) (path string, remove func(), err error) {
	dir, err := os.MkdirTemp("", "vhqos-bench-table")
	if err != nil {
		return "", nil, fmt.Errorf("making a directory for the QoS table: %w", err)
	}
	path = filepath.Join(dir, "qos.toml")
	if err := os.WriteFile(path, []byte(table), 0o644); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("writing the QoS table: %w", err)
	}
	return path, func() { os.RemoveAll(dir) }, nil
}

// serverOf returns the server that the supervisor pid (vhqos run, or the
// floor) started: its one child that is not one of vhqos's helpers.
func serverOf(pid int) (int, error) {
	helpers := map[int]bool{}
	for _, h := range vhqosHelpers(pid) {
		helpers[h] = true
	}
	var servers []int
	for _, c := range childrenOf(pid) {
		if !helpers[c] {
			servers = append(servers, c)
		}
	}
	if len(servers) != 1 {
		return 0, fmt.Errorf("supervisor %d has children %v besides its own helpers, want one server", pid, servers)
	}
	return servers[0], nil
}

func joinPids(pids []int) string {
	s := make([]string, len(pids))
	for i, p := range pids {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ",")
}

// processGroup lists the processes in process group pgid.
func processGroup(pgid int) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if g, err := syscall.Getpgid(pid); err == nil && g == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// supervisorCost is what a supervisor process spent over its whole life:
// CPU time, and context switches of all its threads (each one a wake-up
// or a preemption, which these machines make expensive).
type supervisorCost struct {
	cpu      time.Duration
	switches int
}

// processSwitches sums the voluntary and involuntary context switches of
// every thread of pid.
func processSwitches(pid int) int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	total := 0
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
				n, _ := strconv.Atoi(strings.TrimSpace(v))
				total += n
			} else if v, ok := strings.CutPrefix(line, "nonvoluntary_ctxt_switches:"); ok {
				n, _ := strconv.Atoi(strings.TrimSpace(v))
				total += n
			}
		}
	}
	return total
}

// processCPU is the user+system time of one process (all its threads).
func processCPU(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

func kernel() string {
	var u syscall.Utsname
	syscall.Uname(&u)
	var b []byte
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return "Linux " + string(b)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}
