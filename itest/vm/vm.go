package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Config describes one VM run. The zero value of every field but Cache is
// usable.
type Config struct {
	// Cache holds the kernel (fetched once), and per run the initramfs
	// and the scratch disk. It must be on the host root the VM sees, so
	// not under /tmp; CacheDir gives the repository's .cache/vm.
	Cache string
	// Dir is the command's working directory, on the host root the VM
	// mounts read-only; empty means the current directory. It must not be
	// under /tmp or /run, which are the VM's own tmpfs.
	Dir string
	// Env is added to the command's environment, as NAME=VALUE. The
	// command starts with PATH, HOME=/root, USER, LOGNAME, TERM=dumb,
	// TMPDIR=/tmp and MODPROBE_OPTIONS only; Env may override them.
	Env []string
	// Output receives what the command writes to stdout and stderr (one
	// stream: both are the VM's serial console). Nil means os.Stdout.
	Output io.Writer
	// Log receives one line for each preparation step and qemu's own
	// messages. Nil means they are dropped.
	Log io.Writer
	// Verbose also copies the boot and power-off console (firmware,
	// kernel, init) to Output.
	Verbose bool
	// MemoryMiB and CPUs size the VM: 0 means 2048 MiB and 2.
	MemoryMiB int
	CPUs      int
	// DiskMiB is the size of the scratch disk, /dev/vda in the VM: a
	// sparse file, new and empty for every run. 0 means 256.
	DiskMiB int
	// Qemu and Busybox override the programs used; empty means
	// qemu-system-x86_64 from PATH and /bin/busybox (it must be static).
	Qemu    string
	Busybox string
	// Systemd boots the host's systemd as init (PID 1) instead of the
	// busybox stage 2, on a writable root: an overlay of a tmpfs over the
	// host's root (shared read-only as always). The command runs as the
	// service vhqos-vm.service once basic.target is reached, with only
	// vhqos-vm.target started (no getty, none of the host's enabled
	// services), and the VM powers off when it ends. Its output goes to
	// the console as without Systemd; what it writes to files is lost
	// with the VM.
	Systemd bool
}

// Defaults applied by Run.
const (
	DefaultMemoryMiB = 2048
	DefaultCPUs      = 2
	DefaultDiskMiB   = 256
)

// modulesNeeded are what the VM needs that Debian's kernel has as modules:
// virtio over PCI, the 9p file system over virtio for the root, and the
// virtio disk. moduleLoadOrder adds their dependencies (virtio,
// virtio_ring, virtio_pci_*_dev, netfs, fscache, 9pnet) from modules.dep.
func modulesNeeded() []string {
	return []string{"virtio_pci", "9pnet_virtio", "9p", "virtio_blk"}
}

// tmpfsDirs are replaced in the VM by its own file systems: a working
// directory or program there is not the host's.
func tmpfsDirs() []string { return []string{"/tmp", "/run", "/proc", "/sys", "/dev"} }

// ansiEscape matches the terminal control sequences firmware prints.
var ansiEscape = regexp.MustCompile(`\x1b(\[[0-9;?]*[ -/]*[@-~]|[@-_]|c)`)

// envName is what a variable passed into the VM may be called.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// afterExit is how long qemu may take to power off once the command's
// exit status is in.
const afterExit = 30 * time.Second

// Run boots a VM with Debian's stable kernel and unified cgroup v2, runs
// argv in it as root in cfg.Dir, and returns the command's exit status
// (0-255; a command killed by signal N gives 128+N, as sh reports it). An
// error means the command's status is unknown: the kernel could not be
// fetched, qemu failed, the VM stopped before reporting a status, or ctx
// ended first (qemu is then killed).
func Run(ctx context.Context, cfg Config, argv []string) (int, error) {
	if err := cfg.complete(); err != nil {
		return 0, err
	}
	if err := checkCommand(cfg.Dir, cfg.Env, argv); err != nil {
		return 0, err
	}
	qemu := cfg.Qemu
	if qemu == "" {
		var err error
		if qemu, err = exec.LookPath("qemu-system-x86_64"); err != nil {
			return 0, errors.New("qemu-system-x86_64 not found in PATH: apt-get install qemu-system-x86")
		}
	}
	k, err := FetchKernel(ctx, cfg.Cache, cfg.Log)
	if err != nil {
		return 0, err
	}
	needed := modulesNeeded()
	if cfg.Systemd {
		needed = append(needed, "overlay")
	}
	mods, err := moduleLoadOrder(k.Modules, needed)
	if err != nil {
		return 0, fmt.Errorf("kernel %s: %w", k.Release, err)
	}

	run, release, err := newRunDir(cfg.Cache)
	if err != nil {
		return 0, err
	}
	defer release()

	m, err := newMarkers()
	if err != nil {
		return 0, err
	}
	g := &guest{markers: m, dir: cfg.Dir, env: cfg.Env, argv: argv, kernelRoot: k.Root}
	if cfg.Systemd {
		// /lib/modules/RELEASE in the overlay points at the cached
		// kernel's modules: udev and modprobe find them there.
		g.systemd, g.release, g.modulesDir = true, k.Release, k.Modules
	} else if p, err := lookPathSbin("modprobe"); err == nil {
		g.modprobe = p
	} else {
		fmt.Fprintf(cfg.Log, "vm: no modprobe on the host (apt-get install kmod): the VM cannot load modules on demand\n")
	}
	initrd := filepath.Join(run, "initrd.cpio")
	f, err := os.Create(initrd)
	if err != nil {
		return 0, fmt.Errorf("creating the initramfs: %w", err)
	}
	err = writeInitramfs(f, cfg.Busybox, k.Modules, mods, g)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("writing the initramfs: %w", cerr)
	}
	if err != nil {
		return 0, err
	}
	disk := filepath.Join(run, "scratch.img")
	if err := sparseFile(disk, int64(cfg.DiskMiB)<<20); err != nil {
		return 0, err
	}

	args := qemuArgs(cfg, k, initrd, disk)
	fmt.Fprintf(cfg.Log, "vm: booting Linux %s in qemu (software emulation, %d CPUs, %d MiB) to run %s\n",
		k.Release, cfg.CPUs, cfg.MemoryMiB, describe(argv))
	// qemu's stdout and stderr are copied by two goroutines, and Output
	// and Log may well be one writer.
	var mu sync.Mutex
	con := newConsole(m, &lockedWriter{mu: &mu, w: cfg.Output}, cfg.Verbose)
	var qemuErr tailBuffer
	cmd := exec.CommandContext(ctx, qemu, args...)
	cmd.Stdin = nil // /dev/null: qemu leaves the terminal alone
	cmd.Stdout = con
	cmd.Stderr = io.MultiWriter(&qemuErr, &lockedWriter{mu: &mu, w: cfg.Log})
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("starting %s: %w", qemu, err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		// Once the VM has said how it ended, qemu gets a while to power off.
		select {
		case <-con.done:
		case <-stop:
			return
		}
		select {
		case <-time.After(afterExit):
			cmd.Process.Kill()
		case <-stop:
		}
	}()
	waitErr := cmd.Wait()
	con.Close()
	elapsed := time.Since(start).Round(10 * time.Millisecond)

	switch {
	case con.exited:
		fmt.Fprintf(cfg.Log, "vm: the command exited with status %d (%s from boot to power-off)\n", con.status, elapsed)
		if con.err != nil {
			return con.status, fmt.Errorf("copying the VM's output: %w", con.err)
		}
		return con.status, nil
	case ctx.Err() != nil:
		return 0, fmt.Errorf("VM killed after %s, the command unfinished: %w", elapsed, context.Cause(ctx))
	case con.failure != "":
		return 0, fmt.Errorf("the VM could not run the command: %s\n%s", con.failure, indent(con.boot))
	case con.started:
		return 0, fmt.Errorf("the VM stopped after %s while the command ran, without reporting its exit status (qemu: %v; the console is in the output)\n%s",
			elapsed, exitDescription(waitErr), indent(qemuErr.Bytes()))
	default:
		return 0, fmt.Errorf("the VM stopped after %s before the command ran (qemu: %v); its console:\n%s%s",
			elapsed, exitDescription(waitErr), indent(qemuErr.Bytes()), indent(con.boot))
	}
}

// complete checks cfg and fills in the defaults.
func (cfg *Config) complete() error {
	if cfg.Cache == "" {
		return errors.New("vm.Config.Cache is empty: give the cache directory (vm.CacheDir finds the repository's)")
	}
	abs, err := filepath.Abs(cfg.Cache)
	if err != nil {
		return fmt.Errorf("cache directory: %w", err)
	}
	cfg.Cache = abs
	if under(abs, tmpfsDirs()) {
		return fmt.Errorf("the cache %s is under a directory the VM replaces with its own; the VM could not load modules from it", abs)
	}
	if cfg.Dir == "" {
		if cfg.Dir, err = os.Getwd(); err != nil {
			return fmt.Errorf("current directory: %w", err)
		}
	}
	if cfg.Dir, err = filepath.Abs(cfg.Dir); err != nil {
		return fmt.Errorf("working directory: %w", err)
	}
	if cfg.Output == nil {
		cfg.Output = os.Stdout
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = DefaultMemoryMiB
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = DefaultCPUs
	}
	if cfg.DiskMiB == 0 {
		cfg.DiskMiB = DefaultDiskMiB
	}
	if cfg.MemoryMiB < 128 || cfg.CPUs < 1 || cfg.DiskMiB < 1 {
		return fmt.Errorf("VM too small: %d MiB, %d CPUs, %d MiB disk", cfg.MemoryMiB, cfg.CPUs, cfg.DiskMiB)
	}
	if cfg.Busybox == "" {
		cfg.Busybox = "/bin/busybox"
	}
	return nil
}

// checkCommand refuses, before booting, what cannot work in the VM.
func checkCommand(dir string, env, argv []string) error {
	if len(argv) == 0 || argv[0] == "" {
		return errors.New("no command to run in the VM")
	}
	if under(dir, tmpfsDirs()) {
		return fmt.Errorf("working directory %s: the VM has its own %s; use a directory on the host's disk", dir, strings.Join(tmpfsDirs(), ", "))
	}
	if fi, err := os.Stat(dir); err != nil {
		return fmt.Errorf("working directory: %w", err)
	} else if !fi.IsDir() {
		return fmt.Errorf("working directory %s is not a directory", dir)
	}
	if strings.Contains(argv[0], "/") {
		prog := argv[0]
		if !filepath.IsAbs(prog) {
			prog = filepath.Join(dir, prog)
		}
		if under(prog, tmpfsDirs()) {
			return fmt.Errorf("program %s is under a directory the VM replaces with its own; build it elsewhere (e.g. build/ in the repository)", prog)
		}
		if _, err := os.Stat(prog); err != nil {
			return fmt.Errorf("program: %w", err)
		}
	}
	for _, e := range env {
		name, _, ok := strings.Cut(e, "=")
		if !ok || !envName.MatchString(name) {
			return fmt.Errorf("environment entry %q is not NAME=VALUE", e)
		}
	}
	return nil
}

// under reports whether path is one of dirs or inside one.
func under(path string, dirs []string) bool {
	path = filepath.Clean(path)
	for _, d := range dirs {
		if path == d || strings.HasPrefix(path, d+"/") {
			return true
		}
	}
	return false
}

// qemuArgs is the qemu command line: no KVM (it hangs when nested), no
// network device, the host root as the 9p share "hostroot", the scratch
// disk on virtio, the serial console on stdout.
func qemuArgs(cfg Config, k *Kernel, initrd, disk string) []string {
	return []string{
		"-accel", "tcg",
		"-cpu", "max",
		"-m", strconv.Itoa(cfg.MemoryMiB),
		"-smp", strconv.Itoa(cfg.CPUs),
		"-nographic",
		"-vga", "none",
		"-no-reboot",
		"-nic", "none",
		"-kernel", k.Boot,
		"-initrd", initrd,
		"-append", kernelCommandLine(loopsPerJiffy(k)) + systemdCommandLine(cfg.Systemd),
		"-virtfs", "local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap",
		"-drive", "file=" + disk + ",if=virtio,format=raw,cache=unsafe",
	}
}

// kernelCommandLine: serial console, only errors from the kernel on it,
// cgroup v1 disabled entirely (unified only), any panic powers the VM off
// at once (-no-reboot) instead of hanging until the timeout, and the delay
// loop calibration skipped when lpj is known.
func kernelCommandLine(lpj int) string {
	cmdline := "console=ttyS0 quiet loglevel=3 panic=-1 oops=panic cgroup_no_v1=all rdinit=/init"
	if lpj > 0 {
		cmdline += " lpj=" + strconv.Itoa(lpj)
	}
	return cmdline
}

// systemdCommandLine is what systemd as init reads from the kernel's
// command line: start vhqos-vm.target only, no status lines on the
// console, no first-boot questions (it would wait for an answer).
func systemdCommandLine(systemd bool) string {
	if !systemd {
		return ""
	}
	return " systemd.unit=" + systemdTarget + " systemd.show_status=false systemd.firstboot=off"
}

// newRunDir makes a directory in cache for one run's files and locks it;
// release removes it. Directories of runs that were killed (their lock is
// free) are removed first.
func newRunDir(cache string) (dir string, release func(), err error) {
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", nil, fmt.Errorf("creating the VM cache: %w", err)
	}
	old, _ := filepath.Glob(filepath.Join(cache, "run-*"))
	for _, d := range old {
		if f, err := os.Open(filepath.Join(d, "lock")); err == nil {
			if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
				os.RemoveAll(d)
			}
			f.Close()
		}
	}
	dir, err = os.MkdirTemp(cache, "run-")
	if err != nil {
		return "", nil, fmt.Errorf("creating a run directory: %w", err)
	}
	unlock, err := lockFile(filepath.Join(dir, "lock"))
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	return dir, func() { os.RemoveAll(dir); unlock() }, nil
}

// sparseFile creates a file of size bytes that takes no space until
// written.
func sparseFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("creating the scratch disk: %w", err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sizing the scratch disk: %w", err)
	}
	return nil
}

// CacheDir returns .cache/vm in the vhqos repository that holds dir (the
// directory with vhqos's go.mod, found upwards from dir).
func CacheDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("finding the repository: %w", err)
	}
	for d := abs; ; d = filepath.Dir(d) {
		data, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && bytes.HasPrefix(bytes.TrimSpace(data), []byte("module github.com/vhqos/vhqos\n")) {
			return filepath.Join(d, ".cache", "vm"), nil
		}
		if d == "/" {
			return "", fmt.Errorf("%s is not inside the vhqos repository (no go.mod of github.com/vhqos/vhqos above it)", abs)
		}
	}
}

// describe shows argv on one line, quoted where needed, cut at 200
// bytes.
func describe(argv []string) string {
	words := make([]string, len(argv))
	for i, a := range argv {
		words[i] = a
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`*?[]{}()<>|&;#~") {
			words[i] = shellQuote(a)
		}
	}
	s := strconv.Quote(strings.Join(words, " "))
	s = s[1 : len(s)-1]
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

func exitDescription(err error) string {
	if err == nil {
		return "exited with status 0"
	}
	return err.Error()
}

// indent prepares console text for an error message: terminal escapes
// (the firmware clears the screen) removed, each line indented.
func indent(b []byte) string {
	b = ansiEscape.ReplaceAll(b, nil)
	b = bytes.TrimRight(b, "\n")
	if len(b) == 0 {
		return ""
	}
	return "\t" + strings.ReplaceAll(string(b), "\n", "\n\t") + "\n"
}

// tailBuffer keeps the last 16 KiB written to it.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > bootTail {
		t.b = append(t.b[:0], t.b[len(t.b)-bootTail:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) Bytes() []byte { return t.b }

// lockedWriter serialises writes to w with writes to other lockedWriters
// sharing mu.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
