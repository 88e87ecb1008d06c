package shim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Arg is the hidden first argument that makes the vhqos binary act as the
// shim; cmd/vhqos dispatches on it before parsing anything else.
const Arg = "__shim"

// Messages on the control socket (SOCK_SEQPACKET keeps them apart).
const (
	msgFd  = "fd"   // shim -> supervisor, carries the notification fd
	msgGo  = "go"   // supervisor -> shim: placed, exec now
	msgErr = "err:" // shim -> supervisor, followed by the reason
)

// Config says what the shim starts and what it intercepts.
type Config struct {
	// Self is the vhqos binary to re-execute as the shim; "" means /proc/self/exe.
	Self string
	// Argv is the server's command line; Argv[0] is looked up in PATH.
	Argv []string
	// Syscalls are the names the filter sends to the supervisor.
	Syscalls []string
	Env      []string
	Dir      string
	Stdin    *os.File
	Stdout   *os.File
	Stderr   *os.File
	// Inherit are fds (3 and up, sorted, as InheritedFds lists them) that
	// the server gets at the same numbers, untouched: the listening sockets
	// of socket activation and whatever else vhqos's parent passed on. The
	// shim's own control socket takes the lowest number none of them has,
	// and is closed at exec. Start
	// closes the caller's copies once the shim holds them, so that
	// afterwards only the server does, as it would without vhqos.
	Inherit []int
	// ListenPID makes the shim set LISTEN_PID to its own pid, which
	// becomes the server's at exec: the launcher set it to vhqos's.
	ListenPID bool
}

// Process is a started shim that has handed over its notification fd and
// waits for Exec before it becomes the server.
type Process struct {
	Cmd *exec.Cmd
	// NotifyFd receives the seccomp notifications of the server and of every
	// process it forks. The supervisor owns it.
	NotifyFd int
	control  *os.File
}

// Pid is the server's process id (the shim becomes the server on exec).
func (p *Process) Pid() int { return p.Cmd.Process.Pid }

// Start launches the shim in a process group of its own (Apache prefork
// signals its whole group on shutdown; that must not reach vhqos) and waits
// until it has installed the filter and sent the notification fd.
func Start(ctx context.Context, cfg Config) (*Process, error) {
	if len(cfg.Argv) == 0 {
		return nil, errors.New("no server command given")
	}
	for i, fd := range cfg.Inherit {
		if fd < 3 || i > 0 && fd <= cfg.Inherit[i-1] {
			return nil, fmt.Errorf("inherited fds %v: want distinct fds from 3 up, sorted", cfg.Inherit)
		}
	}
	self := cfg.Self
	if self == "" {
		self = "/proc/self/exe"
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("creating the shim's control socket: %w", err)
	}
	// Non-blocking on our side only, so the Go poller can time it out.
	if err := unix.SetNonblock(pair[0], true); err != nil {
		unix.Close(pair[0])
		unix.Close(pair[1])
		return nil, fmt.Errorf("creating the shim's control socket: %w", err)
	}
	ours := os.NewFile(uintptr(pair[0]), "shim-control")
	theirs := os.NewFile(uintptr(pair[1]), "shim-control-child")
	defer theirs.Close()

	// os.NewFile leaves the fds as they are (it does not change O_NONBLOCK
	// of a descriptor it did not open, nor does Fd), and for a slot that
	// holds its own number the child only clears FD_CLOEXEC, which an
	// inherited fd does not have: the server gets the very open file
	// descriptions, flags and all.
	slots, controlFd := fdLayout(cfg.Inherit)
	extra := make([]*os.File, slots)
	for _, fd := range cfg.Inherit {
		f := os.NewFile(uintptr(fd), "inherited-"+strconv.Itoa(fd))
		defer f.Close()
		if fd < controlFd {
			extra[fd-3] = f
		}
	}
	extra[controlFd-3] = theirs

	args := []string{"vhqos-shim", Arg, "--control-fd", strconv.Itoa(controlFd), "--syscalls", strings.Join(cfg.Syscalls, ",")}
	if cfg.ListenPID {
		args = append(args, "--listen-pid")
	}
	args = append(append(args, "--"), cfg.Argv...)
	cmd := &exec.Cmd{
		Path:       self,
		Args:       args,
		Env:        cfg.Env,
		Dir:        cfg.Dir,
		Stdin:      cfg.Stdin,
		Stdout:     cfg.Stdout,
		Stderr:     cfg.Stderr,
		ExtraFiles: extra,
		SysProcAttr: &syscall.SysProcAttr{
			Setpgid: true,
			// If vhqos is killed outright, the server must not run on
			// unsupervised with nobody to answer its notifications.
			Pdeathsig: syscall.SIGKILL,
		},
	}
	if err := cmd.Start(); err != nil {
		ours.Close()
		return nil, fmt.Errorf("starting the shim %s: %w", self, err)
	}
	p := &Process{Cmd: cmd, control: ours, NotifyFd: -1}
	stop := context.AfterFunc(ctx, func() { ours.SetDeadline(time.Now()) })
	defer stop()
	fd, err := receiveFd(ours)
	if err != nil {
		p.abort()
		return nil, err
	}
	p.NotifyFd = fd
	return p, nil
}

// Exec lets the shim exec the server and reports whether the exec worked.
func (p *Process) Exec() error {
	defer p.control.Close()
	if _, err := p.control.Write([]byte(msgGo)); err != nil {
		return fmt.Errorf("telling the shim to exec: %w", err)
	}
	buf := make([]byte, 4096)
	n, err := p.control.Read(buf)
	if n == 0 || err != nil {
		// EOF: the control socket was close-on-exec, so exec succeeded.
		return nil
	}
	return errors.New(strings.TrimPrefix(string(buf[:n]), msgErr))
}

// abort kills a shim that failed before exec and reaps it.
func (p *Process) abort() {
	p.control.Close()
	p.Cmd.Process.Kill()
	p.Cmd.Wait()
}

func receiveFd(control *os.File) (int, error) {
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	conn, err := control.SyscallConn()
	if err != nil {
		return -1, err
	}
	var n, oobn int
	var recvErr error
	err = conn.Read(func(fd uintptr) bool {
		n, oobn, _, _, recvErr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_CMSG_CLOEXEC)
		return recvErr != unix.EAGAIN
	})
	if err == nil {
		err = recvErr
	}
	if err != nil {
		return -1, fmt.Errorf("waiting for the shim's notification fd: %w", err)
	}
	msg := buf[:n]
	if n == 0 {
		return -1, errors.New("the shim exited before installing the seccomp filter")
	}
	if bytes.HasPrefix(msg, []byte(msgErr)) {
		return -1, errors.New(string(msg[len(msgErr):]))
	}
	if string(msg) != msgFd {
		return -1, fmt.Errorf("unexpected message %q from the shim", msg)
	}
	cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(cmsgs) != 1 {
		return -1, fmt.Errorf("parsing the shim's fd message: %v", err)
	}
	fds, err := unix.ParseUnixRights(&cmsgs[0])
	if err != nil || len(fds) != 1 {
		return -1, fmt.Errorf("parsing the shim's fd message: %v", err)
	}
	return fds[0], nil
}

// Main is the shim itself, run as
// `vhqos __shim --control-fd N --syscalls a,b [--listen-pid] -- SERVER ARGS`:
// its control socket is fd N, a number no fd it passes on to the server has.
// It returns only on failure, with the exit status to use.
func Main(args []string) int {
	a, err := parseArgs(args)
	if err != nil {
		// Without --control-fd there is nobody to tell but stderr.
		fmt.Fprintf(os.Stderr, "vhqos shim: %v\n", err)
		return 127
	}
	controlFd, syscalls, argv := a.controlFd, a.syscalls, a.argv
	fail := func(err error) int { return report(controlFd, err) }
	// Everything that can fail for ordinary reasons happens before the
	// filter is in place, so the error reaches the operator unchanged.
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return fail(fmt.Errorf("finding the server: %w", err))
	}
	unix.CloseOnExec(controlFd)

	// The filter is per thread and exec keeps only the execing thread's, so
	// install it and exec on one locked thread.
	runtime.LockOSThread()
	noNewPrivs := os.Geteuid() != 0
	notifyFd, err := loadFilter(syscalls, noNewPrivs)
	if err != nil {
		return fail(err)
	}
	rights := unix.UnixRights(notifyFd)
	if err := unix.Sendmsg(controlFd, []byte(msgFd), rights, nil, 0); err != nil {
		return fail(fmt.Errorf("sending the notification fd: %w", err))
	}
	// The server must never hold its own notification fd: it could answer
	// for itself.
	unix.Close(notifyFd)
	buf := make([]byte, 16)
	n, err := unix.Read(controlFd, buf)
	if err != nil || string(buf[:n]) != msgGo {
		// The supervisor gave up on us; exit quietly, it reports why.
		return 1
	}
	env := os.Environ()
	if a.listenPID {
		// This process becomes the server, so its pid is the server's.
		env = withListenPID(env, os.Getpid())
	}
	err = unix.Exec(path, argv, env)
	return fail(fmt.Errorf("executing %s: %w", path, err))
}

// shimArgs is the shim's command line.
type shimArgs struct {
	controlFd int
	syscalls  []string
	listenPID bool
	argv      []string
}

func parseArgs(args []string) (shimArgs, error) {
	a := shimArgs{controlFd: -1}
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "--control-fd":
			if i+1 >= len(args) {
				return a, errors.New("shim: --control-fd needs a value")
			}
			i++
			fd, err := strconv.Atoi(args[i])
			if err != nil || fd < 3 {
				return a, fmt.Errorf("shim: --control-fd %q: want a number from 3 up", args[i])
			}
			a.controlFd = fd
		case "--syscalls":
			if i+1 >= len(args) {
				return a, errors.New("shim: --syscalls needs a value")
			}
			i++
			if args[i] != "" {
				a.syscalls = strings.Split(args[i], ",")
			}
		case "--listen-pid":
			a.listenPID = true
		case "--":
			a.argv = args[i+1:]
			if len(a.argv) == 0 {
				return a, errors.New("shim: no server command")
			}
			if a.controlFd < 0 {
				return a, errors.New("shim: no --control-fd")
			}
			return a, nil
		default:
			return a, fmt.Errorf("shim: unexpected argument %q", args[i])
		}
	}
	return a, errors.New("shim: no server command")
}

// report tells the supervisor err over the control socket (or stderr if
// that is gone) and returns the exit status a failed exec conventionally has.
func report(controlFd int, err error) int {
	if _, werr := unix.Write(controlFd, []byte(msgErr+err.Error())); werr != nil {
		fmt.Fprintf(os.Stderr, "vhqos shim: %v\n", err)
	}
	return 127
}
