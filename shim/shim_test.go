package shim

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == Arg {
		os.Exit(Main(os.Args[2:]))
	}
	os.Exit(m.Run())
}

func startShim(t *testing.T, argv []string, syscalls []string) (*Process, error) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Generous: the handshake with the re-executed test binary is quick,
	// but the machine may be busy.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return Start(ctx, Config{Self: self, Argv: argv, Syscalls: syscalls, Stderr: os.Stderr})
}

func TestStartFailures(t *testing.T) {
	tests := []struct {
		name     string
		argv     []string
		syscalls []string
		want     string
	}{
		{"server not found", []string{"/nonexistent/httpd"}, []string{"accept"}, "finding the server"},
		{"unknown syscall", []string{"/bin/true"}, []string{"acept"}, `syscall "acept" cannot be intercepted`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := startShim(t, tc.argv, tc.syscalls)
			if err == nil {
				p.Exec()
				p.Cmd.Wait()
				t.Fatalf("started, want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

// The server runs in a process group of its own, under the filter, with
// neither the notification fd nor the control socket leaked into it.
func TestExecedServer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to install the filter without no_new_privs")
	}
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	script := `echo pgid=$(ps -o pgid= -p $$ | tr -d ' ') pid=$$; for f in /proc/$$/fd/*; do echo "$f=$(readlink $f)"; done | tr '\n' ' '; echo; grep -E '^(Seccomp|NoNewPrivs):' /proc/$$/status`
	p, err := Start(context.Background(), Config{Self: self, Argv: []string{"/bin/sh", "-c", script}, Syscalls: []string{"accept"}, Stdout: out, Stderr: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	// Nobody answers notifications here; the script makes no accept.
	defer unix.Close(p.NotifyFd)
	if err := p.Exec(); err != nil {
		t.Fatal(err)
	}
	if err := p.Cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(out.Name())
	got := string(data)
	pid := p.Pid()
	if !strings.Contains(got, "pgid="+strconv.Itoa(pid)+" pid="+strconv.Itoa(pid)) {
		t.Errorf("server is not the leader of its own process group: %q", got)
	}
	if !strings.Contains(got, "Seccomp:\t2") {
		t.Errorf("server is not under a seccomp filter: %q", got)
	}
	if !strings.Contains(got, "NoNewPrivs:\t0") {
		t.Errorf("as root, no_new_privs must stay off (suexec): %q", got)
	}
	// Neither the control socket nor the notification fd (an anon inode)
	// may reach the server.
	if strings.Contains(got, "socket:") || strings.Contains(got, "anon_inode") {
		t.Errorf("server inherited the shim's fds: %q", got)
	}
}

func TestFdLayout(t *testing.T) {
	tests := []struct {
		inherited        []int
		slots, controlFd int
	}{
		{nil, 1, 3},
		{[]int{3}, 2, 4},
		{[]int{3, 4, 5}, 4, 6},
		{[]int{3, 7}, 2, 4},       // the gap at 4; 7 is left where it is
		{[]int{9}, 1, 3},          // 9 is left where it is
		{[]int{1021, 1023}, 1, 3}, // near RLIMIT_NOFILE: no slot up there
	}
	for _, tc := range tests {
		slots, controlFd := fdLayout(tc.inherited)
		if slots != tc.slots || controlFd != tc.controlFd {
			t.Errorf("fdLayout(%v) = %d slots, control fd %d; want %d, %d", tc.inherited, slots, controlFd, tc.slots, tc.controlFd)
		}
	}
}

func TestWithListenPID(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		want []string
	}{
		{"rewritten in place", []string{"A=1", "LISTEN_PID=10", "LISTEN_FDS=2"}, []string{"A=1", "LISTEN_PID=42", "LISTEN_FDS=2"}},
		{"duplicate dropped", []string{"LISTEN_PID=10", "B=2", "LISTEN_PID=11"}, []string{"LISTEN_PID=42", "B=2"}},
		{"added when missing", []string{"LISTEN_FDS=1"}, []string{"LISTEN_FDS=1", "LISTEN_PID=42"}},
		{"a longer name is another variable", []string{"LISTEN_PIDS=1", "LISTEN_PID="}, []string{"LISTEN_PIDS=1", "LISTEN_PID=42"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := withListenPID(tc.env, 42); strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("withListenPID(%q) = %q, want %q", tc.env, got, tc.want)
			}
		})
	}
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		args    []string
		want    shimArgs
		wantErr string
	}{
		{[]string{"--control-fd", "5", "--syscalls", "accept,accept4", "--listen-pid", "--", "httpd", "-X"},
			shimArgs{controlFd: 5, syscalls: []string{"accept", "accept4"}, listenPID: true, argv: []string{"httpd", "-X"}}, ""},
		{[]string{"--control-fd", "3", "--syscalls", "", "--", "httpd"}, shimArgs{controlFd: 3, argv: []string{"httpd"}}, ""},
		{[]string{"--syscalls", "accept", "--", "httpd"}, shimArgs{}, "no --control-fd"},
		{[]string{"--control-fd", "2", "--", "httpd"}, shimArgs{}, `--control-fd "2": want a number from 3 up`},
		{[]string{"--control-fd", "x", "--", "httpd"}, shimArgs{}, `--control-fd "x"`},
		{[]string{"--control-fd"}, shimArgs{}, "--control-fd needs a value"},
		{[]string{"--control-fd", "3", "--"}, shimArgs{}, "no server command"},
		{[]string{"--bogus"}, shimArgs{}, `unexpected argument "--bogus"`},
	}
	for _, tc := range tests {
		got, err := parseArgs(tc.args)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("parseArgs(%q): error %v, want one containing %q", tc.args, err, tc.wantErr)
			}
			continue
		}
		if err != nil || fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("parseArgs(%q) = %+v, %v; want %+v", tc.args, got, err, tc.want)
		}
	}
}

// freeFds returns n consecutive fd numbers from 40 up that are not open
// here, so that a test can dup onto them without clobbering anything.
func freeFds(t *testing.T, n int) int {
	t.Helper()
	for base := 40; base < 200; base++ {
		free := true
		for fd := base; fd < base+n && free; fd++ {
			_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
			free = err == unix.EBADF
		}
		if free {
			return base
		}
	}
	t.Fatal("no free fd numbers between 40 and 200")
	return -1
}

// inheritablePipe makes a pipe whose read end sits at fd without
// FD_CLOEXEC, as a parent would pass it, and returns its write end. The
// caller closes fd (Start does).
func inheritablePipe(t *testing.T, fd int) *os.File {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := unix.Dup3(int(r.Fd()), fd, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func TestInheritedFds(t *testing.T) {
	base := freeFds(t, 2)
	inheritablePipe(t, base)
	defer unix.Close(base)
	// base+1 is close-on-exec: one of the process's own.
	r, _, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := unix.Dup3(int(r.Fd()), base+1, unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(base + 1)
	fds, err := InheritedFds()
	if err != nil {
		t.Fatal(err)
	}
	has := map[int]bool{}
	for _, fd := range fds {
		has[fd] = true
		if fd < 3 {
			t.Errorf("InheritedFds listed stdio fd %d", fd)
		}
	}
	if !has[base] || has[base+1] || has[int(r.Fd())] {
		t.Errorf("InheritedFds() = %v, want %d (no FD_CLOEXEC) and neither %d nor %d (close-on-exec)", fds, base, base+1, r.Fd())
	}
}

// Inherited fds reach the server at their numbers, the same open file
// descriptions with their flags (O_NONBLOCK), the gap between them stays
// closed, the control socket above them does not leak, LISTEN_PID names
// the server, and the caller's copies are closed.
func TestInheritedFdsReachServer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to install the filter without no_new_privs")
	}
	// Whatever this test process inherited passes on too, as vhqos passes
	// all it inherited.
	before, err := InheritedFds()
	if err != nil {
		t.Fatal(err)
	}
	base := freeFds(t, 3) // base and base+2 inherited, base+1 a gap
	w1 := inheritablePipe(t, base)
	w2 := inheritablePipe(t, base+2)
	if err := unix.SetNonblock(base+2, true); err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(w1, "one\n")
	fmt.Fprint(w2, "two\n")
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	a, b := strconv.Itoa(base), strconv.Itoa(base+2)
	script := `echo pid=$$ LISTEN_PID=$LISTEN_PID LISTEN_FDS=$LISTEN_FDS; for f in /proc/$$/fd/*; do printf '%s ' ${f##*/}; done; echo; ` +
		`grep flags /proc/$$/fdinfo/` + b + `; head -n1 /proc/self/fd/` + a + `; head -n1 /proc/self/fd/` + b
	inherit := append([]int{base, base + 2}, before...)
	sort.Ints(inherit)
	p, err := Start(context.Background(), Config{
		Self: self, Argv: []string{"/bin/sh", "-c", script}, Syscalls: []string{"accept"},
		Env:    []string{"PATH=/usr/bin:/bin", "LISTEN_PID=1", "LISTEN_FDS=2"},
		Stdout: out, Stderr: os.Stderr,
		Inherit: inherit, ListenPID: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p.NotifyFd)
	for _, fd := range inherit {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
			t.Errorf("fd %d still open in the caller after Start (%v)", fd, err)
		}
	}
	if err := p.Exec(); err != nil {
		t.Fatal(err)
	}
	if err := p.Cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(out.Name())
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 5 {
		t.Fatalf("unexpected output %q", data)
	}
	pid := strconv.Itoa(p.Pid())
	if want := "pid=" + pid + " LISTEN_PID=" + pid + " LISTEN_FDS=2"; lines[0] != want {
		t.Errorf("server said %q, want %q", lines[0], want)
	}
	// The shell's glob opens the directory at the lowest free fd, 3.
	want := append([]int{0, 1, 2, 3}, inherit...)
	var got []int
	for _, f := range strings.Fields(lines[1]) {
		fd, _ := strconv.Atoi(f)
		got = append(got, fd)
	}
	sort.Ints(want)
	sort.Ints(got)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("server's open fds %v, want %v (neither the gap %d nor the control socket %d)", got, want, base+1, inherit[len(inherit)-1]+1)
	}
	flags, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(lines[2], "flags:")), 8, 32)
	if flags&unix.O_NONBLOCK == 0 {
		t.Errorf("fd %d lost O_NONBLOCK on its way to the server: %q", base+2, lines[2])
	}
	if lines[3] != "one" || lines[4] != "two" {
		t.Errorf("server read %q and %q from its inherited pipes, want one and two", lines[3], lines[4])
	}
}

func TestStartRefusesBadInherit(t *testing.T) {
	for _, inherit := range [][]int{{2}, {5, 4}, {4, 4}} {
		_, err := Start(context.Background(), Config{Argv: []string{"/bin/true"}, Inherit: inherit})
		if err == nil || !strings.Contains(err.Error(), "want distinct fds from 3 up, sorted") {
			t.Errorf("Start with Inherit %v: error %v", inherit, err)
		}
	}
}

// An inherited fd just below the hard RLIMIT_NOFILE reaches the server, as
// it would without vhqos: the shim must not need fd numbers above it (Go's
// child moves its exec-error pipe past the last slot it is given). The
// test runs itself again under bash with the limit lowered and the fd
// opened there, as a launcher would pass it: lowering the limit here could
// not be undone without CAP_SYS_RESOURCE.
func TestInheritedFdAtDescriptorLimit(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to install the filter without no_new_privs")
	}
	const limit, fd = 256, 253 // bash keeps 255 for itself
	if os.Getenv("VHQOS_SHIM_AT_LIMIT") == "1" {
		inheritedAtLimit(t, fd)
		return
	}
	file := filepath.Join(t.TempDir(), "line")
	if err := os.WriteFile(file, []byte("near the limit\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	script := fmt.Sprintf(`ulimit -n %d && exec %d<"$1" && exec "$0" -test.run='^TestInheritedFdAtDescriptorLimit$' -test.v`, limit, fd)
	cmd := exec.Command("bash", "-c", script, self, file)
	cmd.Env = append(os.Environ(), "VHQOS_SHIM_AT_LIMIT=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "server read: near the limit") {
		t.Errorf("with fd %d inherited under a limit of %d fds: %v\n%s", fd, limit, err, out)
	}
}

// inheritedAtLimit is TestInheritedFdAtDescriptorLimit's child: it passes
// what it inherited to a server that reads fd.
func inheritedAtLimit(t *testing.T, fd int) {
	inherit, err := InheritedFds()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(inherit, fd) {
		t.Fatalf("fd %d not inherited (have %v)", fd, inherit)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	self, _ := os.Executable()
	p, err := Start(context.Background(), Config{
		Self: self, Argv: []string{"/bin/sh", "-c", "head -n1 /proc/self/fd/" + strconv.Itoa(fd)}, Syscalls: []string{"accept"},
		Env: []string{"PATH=/usr/bin:/bin"}, Stdout: w, Stderr: os.Stderr, Inherit: inherit,
	})
	w.Close()
	if err != nil {
		t.Fatalf("starting the server: %v", err)
	}
	defer unix.Close(p.NotifyFd)
	if err := p.Exec(); err != nil {
		t.Fatal(err)
	}
	if err := p.Cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	line, _ := io.ReadAll(r)
	t.Logf("server read: %s", strings.TrimSpace(string(line)))
}
