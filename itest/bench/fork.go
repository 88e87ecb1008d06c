package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/vhqos/vhqos/cgroup"
)

// loadgenEnv marks the bench binary re-executed as the load generator of
// -fork; its arguments are the server's key, the connection count and the
// duration.
const loadgenEnv = "VHQOS_BENCH_LOADGEN"

// forkAddr is where every fork-after-accept server listens.
const forkAddr = "127.0.0.2:8080"

// forkServer is one fork-after-accept server and what a client exchanges
// with it.
type forkServer struct {
	key  string // names it to the load generator
	name string
	argv func(dir string) []string
	// request is written whole; closeWrite then half-closes, for a server
	// that answers only at end of input.
	request    string
	closeWrite bool
	answered   func(reply []byte) bool
}

func forkServers() []forkServer {
	return []forkServer{
		{
			key:  "socat",
			name: "socat fork, EXEC:/bin/cat (fork and exec per connection)",
			argv: func(string) []string {
				// socat listens with a backlog of 5 by default: 16
				// clients overflow it, and the kernel answers with SYN
				// cookies, 1 s SYN retransmits and resets, which would
				// measure the backlog rather than the server. -t 30:
				// after the client's half-close socat waits only 0.5 s
				// for cat's answer by default, which a loaded machine
				// overruns (empty answers).
				return []string{"socat", "-t", "30", "TCP-LISTEN:8080,bind=127.0.0.2,fork,reuseaddr,backlog=128", "EXEC:/bin/cat"}
			},
			request:    "hello\n",
			closeWrite: true,
			answered:   func(reply []byte) bool { return string(reply) == "hello\n" },
		},
		{
			key:  "busybox",
			name: "busybox httpd, static file (fork per connection)",
			argv: func(dir string) []string {
				return []string{"busybox", "httpd", "-f", "-p", forkAddr, "-h", dir}
			},
			request: "GET /index.html HTTP/1.0\r\n\r\n",
			answered: func(reply []byte) bool {
				return bytes.HasPrefix(reply, []byte("HTTP/1.0 200")) || bytes.HasPrefix(reply, []byte("HTTP/1.1 200"))
			},
		},
	}
}

// The load generator must be placed in cgroup "client" before its
// goroutines start, so it is this binary again (see forkRun); init takes it
// over before main sets up namespaces and parses the bench's flags.
func init() {
	if os.Getenv(loadgenEnv) != "" {
		if err := loadgenMain(os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "bench loadgen:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// loadResult is what the load generator reports, as JSON on stdout.
type loadResult struct {
	OK         int
	Errors     int
	Elapsed    time.Duration
	FirstError string
}

// loadgenMain runs conns loops of one connection at a time against the
// server named by args[0] for args[2], once a line arrives on stdin.
func loadgenMain(args []string) error {
	if len(args) != 3 {
		return fmt.Errorf("want arguments SERVER CONNS DURATION, got %q", args)
	}
	var srv *forkServer
	for _, s := range forkServers() {
		if s.key == args[0] {
			srv = &s
		}
	}
	if srv == nil {
		return fmt.Errorf("no server %q", args[0])
	}
	conns, err := strconv.Atoi(args[1])
	if err != nil {
		return fmt.Errorf("connection count: %w", err)
	}
	d, err := time.ParseDuration(args[2])
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	// Wait until the bench has put this process in its cgroup.
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return fmt.Errorf("waiting for the start line: %w", err)
	}
	start := time.Now()
	end := start.Add(d)
	results := make([]loadResult, conns)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func(r *loadResult) {
			defer wg.Done()
			for time.Now().Before(end) {
				if err := exchange(srv); err != nil {
					if r.Errors == 0 {
						r.FirstError = err.Error()
					}
					r.Errors++
				} else {
					r.OK++
				}
			}
		}(&results[i])
	}
	wg.Wait()
	// The last connections end after the deadline: the rate is over the
	// time they actually took.
	total := loadResult{Elapsed: time.Since(start)}
	for _, r := range results {
		total.OK += r.OK
		total.Errors += r.Errors
		if total.FirstError == "" {
			total.FirstError = r.FirstError
		}
	}
	return json.NewEncoder(os.Stdout).Encode(total)
}

// exchange is one connection: request, answer to end of stream, close.
func exchange(srv *forkServer) error {
	c, err := net.DialTimeout("tcp", forkAddr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, srv.request); err != nil {
		return fmt.Errorf("writing the request: %w", err)
	}
	if srv.closeWrite {
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			return fmt.Errorf("half-closing: %w", err)
		}
	}
	reply, err := io.ReadAll(io.LimitReader(c, 1<<20))
	if err != nil {
		return fmt.Errorf("reading the answer (%d bytes so far): %w", len(reply), err)
	}
	if !srv.answered(reply) {
		return fmt.Errorf("unexpected answer %q", truncate(reply, 80))
	}
	return nil
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// forkRunResult is one run: connections per second, connections, errors,
// and vhqos's CPU time (zero for native).
type forkRunResult struct {
	loadResult
	rate float64
	cpu  time.Duration
}

// forkBench measures fork-after-accept servers native and under vhqos in
// each track mode, alternating runs so that drift in the machine's speed
// hits every mode alike, and prints each mode's median ratio to native and
// vhqos's CPU time per connection.
func forkBench(bin string, pairs, conns int, d time.Duration) error {
	dir, err := os.MkdirTemp("", "vhqos-fork-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	www := filepath.Join(dir, "www")
	if err := os.MkdirAll(www, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(www, "index.html"), []byte("<html><body>hello</body></html>\n"), 0o644); err != nil {
		return err
	}
	// The runs of one pair, in the order they alternate: native, then
	// vhqos with each track setting.
	modes := []string{"native", "accept", "fork", "full"}
	for _, mode := range modes[1:] {
		table := fmt.Sprintf("[settings]\ntrack = %q\n%s", mode, qos)
		if err := os.WriteFile(filepath.Join(dir, mode+".toml"), []byte(table), 0o644); err != nil {
			return err
		}
	}
	// The same fair sharing as for Apache (see measure): the client and
	// the native server in sibling cgroups of equal weight.
	cg, err := cgroup.New(context.Background(), cgroup.Options{Name: "vhqos-bench." + strconv.Itoa(os.Getpid())})
	if err != nil {
		return fmt.Errorf("creating the bench's cgroups: %w", err)
	}
	defer cg.Close(context.Background())
	for _, g := range []string{"client", "native"} {
		if err := cg.Set(g, cgroup.Resources{}); err != nil {
			return fmt.Errorf("creating cgroup %s: %w", g, err)
		}
	}
	fmt.Printf("Fork-after-accept servers, Go client -c%d -d%v (new connection each time), %d alternating pairs; %s\n", conns, d, pairs, kernel())
	// Per server, per wrapped mode: ratios to native and vhqos's CPU time
	// per connection in µs, one per pair.
	type summary struct {
		key         string
		ratios, cpu map[string][]float64
	}
	var sums []summary
	for _, srv := range forkServers() {
		fmt.Printf("\n%s\n", srv.name)
		sum := summary{key: srv.key, ratios: map[string][]float64{}, cpu: map[string][]float64{}}
		for i := 0; i < pairs; i++ {
			res := map[string]forkRunResult{}
			for _, mode := range modes {
				r, err := forkRun(cg, bin, dir, srv, mode, conns, d)
				if err != nil {
					return fmt.Errorf("%s, %s, pair %d: %w", srv.key, mode, i+1, err)
				}
				res[mode] = r
				if r.Errors > 0 {
					fmt.Printf("    (%s: %d errors in %d connections, first: %s)\n", mode, r.Errors, r.OK+r.Errors, r.FirstError)
				}
			}
			native := res["native"].rate
			fmt.Printf("  pair %d: native %6.0f conn/s", i+1, native)
			for _, mode := range modes[1:] {
				ratio := res[mode].rate / native
				sum.ratios[mode] = append(sum.ratios[mode], ratio)
				if res[mode].OK > 0 {
					sum.cpu[mode] = append(sum.cpu[mode], res[mode].cpu.Seconds()*1e6/float64(res[mode].OK))
				}
				fmt.Printf(", %s %6.0f (%.3f)", mode, res[mode].rate, ratio)
			}
			fmt.Println()
		}
		sums = append(sums, sum)
	}
	fmt.Printf("\nMedian over the pairs: ratio to native, and vhqos CPU time per connection\n")
	for _, sum := range sums {
		for _, mode := range modes[1:] {
			fmt.Printf("  %-8s track = %-8q ratio %.3f   vhqos CPU %6.1f µs/conn\n", sum.key, mode, median(sum.ratios[mode]), median(sum.cpu[mode]))
		}
	}
	return nil
}

// forkRun starts srv natively in cgroup "native" or under vhqos with track
// = mode, runs the load generator against it and stops it.
func forkRun(cg *cgroup.Manager, bin, dir string, srv forkServer, mode string, conns int, d time.Duration) (forkRunResult, error) {
	argv := srv.argv(filepath.Join(dir, "www"))
	wrapped := mode != "native"
	if wrapped {
		argv = append([]string{bin, "run", "--config", filepath.Join(dir, mode+".toml"), "--status-socket", filepath.Join(dir, "status.sock"), "--"}, argv...)
	}
	logFile := filepath.Join(dir, "server.log")
	out, err := os.Create(logFile)
	if err != nil {
		return forkRunResult{}, err
	}
	defer out.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so that whatever it leaves behind can be
	// killed at the end.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return forkRunResult{}, fmt.Errorf("starting %s: %w", argv[0], err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	// vhqos starts the server in a process group of its own.
	pgids := []int{cmd.Process.Pid}
	stopped := false
	defer func() {
		if !stopped {
			stop(cmd, exited)
			for _, g := range pgids {
				syscall.Kill(-g, syscall.SIGKILL)
			}
		}
	}()
	if !wrapped {
		// Before the first connection, so every child is born in there.
		for _, pid := range processGroup(cmd.Process.Pid) {
			if err := cg.Place("native", pid); err != nil {
				return forkRunResult{}, err
			}
		}
	}
	if err := waitAccepting(forkAddr, exited); err != nil {
		data, _ := os.ReadFile(logFile)
		return forkRunResult{}, fmt.Errorf("%w; %s said:\n%s", err, argv[0], tail(string(data)))
	}
	if wrapped {
		server, err := serverOf(cmd.Process.Pid)
		if err != nil {
			return forkRunResult{}, err
		}
		pgids = append(pgids, server)
	}
	load, err := runLoad(cg, srv.key, conns, d)
	if err != nil {
		return forkRunResult{}, err
	}
	res := forkRunResult{loadResult: load, rate: float64(load.OK) / load.Elapsed.Seconds()}
	if wrapped {
		// Before stopping: afterwards it is gone.
		res.cpu = processCPU(cmd.Process.Pid)
	}
	stopped = true
	stopErr := stop(cmd, exited)
	// What the server left behind: socat's children, for one.
	for _, g := range pgids {
		syscall.Kill(-g, syscall.SIGKILL)
	}
	if stopErr != nil {
		return forkRunResult{}, stopErr
	}
	if err := waitGone(pgids); err != nil {
		return forkRunResult{}, err
	}
	return res, nil
}

// runLoad runs the load generator against server key in cgroup "client".
func runLoad(cg *cgroup.Manager, key string, conns int, d time.Duration) (loadResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d+time.Minute)
	defer cancel()
	self, err := os.Executable()
	if err != nil {
		return loadResult{}, fmt.Errorf("finding the bench binary: %w", err)
	}
	cmd := exec.CommandContext(ctx, self, key, strconv.Itoa(conns), d.String())
	cmd.Env = append(os.Environ(), loadgenEnv+"=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start, err := cmd.StdinPipe()
	if err != nil {
		return loadResult{}, err
	}
	if err := cmd.Start(); err != nil {
		return loadResult{}, fmt.Errorf("starting the load generator: %w", err)
	}
	if err := cg.Place("client", cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return loadResult{}, err
	}
	io.WriteString(start, "start\n")
	start.Close()
	if err := cmd.Wait(); err != nil {
		return loadResult{}, fmt.Errorf("load generator: %w: %s", err, stderr.Bytes())
	}
	var r loadResult
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		return loadResult{}, fmt.Errorf("reading the load generator's result %q: %w", stdout.Bytes(), err)
	}
	return r, nil
}

// stop sends SIGTERM (vhqos forwards it to the server) and waits; after
// 20 s it kills the process group.
func stop(cmd *exec.Cmd, exited <-chan struct{}) error {
	select {
	case <-exited:
		return nil
	default:
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		return nil
	case <-time.After(20 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		return fmt.Errorf("%s did not stop in 20 s after SIGTERM", cmd.Path)
	}
}

// waitAccepting waits until addr accepts a TCP connection.
func waitAccepting(addr string, exited <-chan struct{}) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return errors.New("exited before accepting connections on " + addr)
		case <-time.After(10 * time.Millisecond):
		}
	}
	return fmt.Errorf("nothing accepts connections on %s after 30 s", addr)
}

// waitGone waits until no process is left in the process groups pgids:
// killed processes take a moment to exit and be reaped.
func waitGone(pgids []int) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		var left []int
		for _, g := range pgids {
			left = append(left, processGroup(g)...)
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v still alive 5 s after the server stopped", left)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
