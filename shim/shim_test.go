package shim

import (
	"context"
	"os"
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
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
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
