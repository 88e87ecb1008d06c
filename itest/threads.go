package itest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// PythonThreads is Python's http.server.ThreadingHTTPServer (a thread per
// connection, in one process) made for a test. Its documents, for any Host:
//
//	/whoami               answers at once (ParseThreadReport reads it)
//	/hold?gate=G&min=S    leaves a mark that Started counts, then holds its
//	                      request, asleep, until the test opens the gate G
//	                      (OpenGate; G is letters, digits and "-") and at
//	                      least S seconds (0 when absent) have passed
//	/burn?gate=G          leaves the same mark, then keeps a CPU busy in the
//	                      serving thread until the gate G opens
//
// Each answers, one per line: "pid P", "tid T" (the serving thread),
// "start L" for each line L of /proc/thread-self/cgroup as the handler
// began, "end L" the same as it answered. Holds and burns give up after 10
// minutes.
//
// The burn hashes (hashlib releases the GIL while it hashes a large
// buffer): a loop of Python code would hold the GIL, and its threads would
// take turns at it whatever their cgroups' weights.
type PythonThreads struct {
	*Daemon
	Addr string // where it listens, "127.0.0.2:8080"
}

// PythonThreadsConfig says what to start.
type PythonThreadsConfig struct {
	Addr string // IPv4 address:port; "" is 127.0.0.2:8080
	// Prefix is put in front of the command: nil runs it natively,
	// {vhqos, "run", "--config", FILE, "--"} under vhqos.
	Prefix []string
	// Wrap goes between Prefix and python3, e.g. {"taskset", "-c", "0"}.
	Wrap []string
}

const threadsPy = `import hashlib, http.server, os, re, sys, threading, time
from urllib.parse import parse_qs, urlsplit

host, port, state = sys.argv[1], int(sys.argv[2]), sys.argv[3]
BUF = b"x" * (1 << 20)


def cgroup():
    with open("/proc/thread-self/cgroup") as f:
        return f.read()


def gate_open(gate):
    return os.path.exists(os.path.join(state, "gates", gate))


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        start = cgroup()
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        gate = q.get("gate", "")
        if url.path in ("/hold", "/burn"):
            if not re.fullmatch(r"[A-Za-z0-9-]+", gate):
                return self.answer(400, "name a gate: ?gate=G, G letters, digits and -\n")
            tid = threading.get_native_id()
            open(os.path.join(state, "started", "%s.%d" % (gate, tid)), "w").close()
            end = time.monotonic() + 600
            if url.path == "/hold":
                # Asleep, as a server waiting on a slow backend would be.
                until = time.monotonic() + float(q.get("min", "0"))
                while not (gate_open(gate) and time.monotonic() >= until) and time.monotonic() < end:
                    time.sleep(0.02)
            else:
                h = hashlib.sha256()
                while not gate_open(gate) and time.monotonic() < end:
                    for _ in range(4):
                        h.update(BUF)
        elif url.path != "/whoami":
            return self.answer(404, "no such document\n")
        lines = ["pid %d" % os.getpid(), "tid %d" % threading.get_native_id()]
        lines += ["start " + l for l in start.splitlines()]
        lines += ["end " + l for l in cgroup().splitlines()]
        self.answer(200, "\n".join(lines) + "\n")

    def answer(self, code, body):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer.allow_reuse_address = True
http.server.ThreadingHTTPServer((host, port), Handler).serve_forever()
`

// StartPythonThreads writes the server into a fresh directory and starts
// it. It returns once the server listens. The caller stops it and removes
// the directory; tests use RunPythonThreads.
func StartPythonThreads(ctx context.Context, cfg PythonThreadsConfig) (*PythonThreads, error) {
	p := &PythonThreads{Addr: cfg.Addr}
	if p.Addr == "" {
		p.Addr = "127.0.0.2:8080"
	}
	host, port, ok := strings.Cut(p.Addr, ":")
	if !ok {
		return nil, fmt.Errorf("python threads: address %q: want IPv4 address:port", p.Addr)
	}
	dir, err := scratchDir()
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"gates", "started"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	script := filepath.Join(dir, "threads.py")
	if err := os.WriteFile(script, []byte(threadsPy), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	argv := append(append([]string{}, cfg.Wrap...), "python3", script, host, port, dir)
	p.Daemon, err = StartDaemon(ctx, DaemonConfig{Name: "python ThreadingHTTPServer", Dir: dir, Prefix: cfg.Prefix, Argv: argv, Listen: []string{p.Addr}})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// RunPythonThreads is StartPythonThreads for a test, stopped and checked
// like RunDaemon.
func RunPythonThreads(t testing.TB, cfg PythonThreadsConfig) *PythonThreads {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, err := StartPythonThreads(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.stopAtEnd(t)
	return p
}

// OpenGate lets the holds and burns at gate g answer (at their next check,
// many times a second) and any that come later answer at once.
func (p *PythonThreads) OpenGate(g string) error { return openGate(p.Dir, g) }

// openGate creates the file g in the scratch directory dir's gates/, where
// the test servers' holds and burns look for their gate.
func openGate(dir, g string) error {
	if err := os.WriteFile(filepath.Join(dir, "gates", g), nil, 0o644); err != nil {
		return fmt.Errorf("opening gate %s: %w", g, err)
	}
	return nil
}

// Started lists the threads (by id) whose hold or burn at gate g has
// begun.
func (p *PythonThreads) Started(g string) ([]int, error) {
	return startedMarks(filepath.Join(p.Dir, "started"), g)
}

// startedMarks reads the marks G.TID in dir.
func startedMarks(dir, g string) ([]int, error) {
	marks, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading the marks in %s: %w", dir, err)
	}
	var out []int
	for _, m := range marks {
		if tid, ok := strings.CutPrefix(m.Name(), g+"."); ok {
			if n, err := strconv.Atoi(tid); err == nil {
				out = append(out, n)
			}
		}
	}
	return out, nil
}

// ThreadReport is what a handler that runs in the serving thread (the
// Python server's, Apache's mod_lua ones) says about that thread.
type ThreadReport struct {
	PID, TID int
	// Start and End are /proc/thread-self/cgroup as the handler began and
	// as it answered: path by controller list ("" for cgroup v2's line).
	Start, End map[string]string
}

// StartCgroup is the serving thread's cgroup as its handler began: the
// unified hierarchy's on cgroup v2, the cpu controller's on v1.
func (r ThreadReport) StartCgroup() string { return cpuCgroup(r.Start) }

// EndCgroup is the same as the handler answered.
func (r ThreadReport) EndCgroup() string { return cpuCgroup(r.End) }

// ParseThreadReport reads a ThreadReport from a handler's answer.
func ParseThreadReport(body string) (ThreadReport, error) {
	r := ThreadReport{Start: map[string]string{}, End: map[string]string{}}
	for _, line := range strings.Split(body, "\n") {
		key, val, _ := strings.Cut(strings.TrimSpace(line), " ")
		var err error
		switch key {
		case "pid":
			r.PID, err = strconv.Atoi(val)
		case "tid":
			r.TID, err = strconv.Atoi(val)
		case "start", "end":
			controllers, path, ok := splitCgroupLine(val)
			if !ok {
				return r, fmt.Errorf("bad cgroup line %q", line)
			}
			if key == "start" {
				r.Start[controllers] = path
			} else {
				r.End[controllers] = path
			}
		}
		if err != nil {
			return r, fmt.Errorf("bad line %q: %v", line, err)
		}
	}
	if r.PID == 0 || r.TID == 0 || len(r.Start) == 0 || len(r.End) == 0 {
		return r, fmt.Errorf("not a thread report: %q", body)
	}
	return r, nil
}
