package vm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config describes one VM run.
type Config struct {
	// Cache holds the kernel, the initramfs and the scratch disk; it must
	// not be under /tmp if it is also what the VM runs from.
	Cache string
	// Dir is the working directory inside the VM (the host's root is the
	// VM's root, read-only).
	Dir string
	// Env is passed to the command as NAME=VALUE.
	Env []string
	// Output receives everything the VM prints but the exit marker.
	Output io.Writer
	// Log receives one line per preparation step.
	Log io.Writer
	// MemoryMiB and CPUs size the VM; 0 means 2048 and 2.
	MemoryMiB int
	CPUs      int
}

// Run boots the VM, runs argv in it as root and returns its exit status.
func Run(ctx context.Context, cfg Config, argv []string) (int, error) {
	if len(argv) == 0 {
		return 0, errors.New("no command to run in the VM")
	}
	if cfg.Output == nil {
		cfg.Output = os.Stdout
	}
	// qemu's stderr is copied by another goroutine into the same writer.
	cfg.Output = &lockedWriter{w: cfg.Output}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = 2048
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = 2
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return 0, errors.New("qemu-system-x86_64 not found: apt-get install qemu-system-x86")
	}
	k, err := fetchKernel(cfg.Cache, cfg.Log)
	if err != nil {
		return 0, err
	}
	mods, err := moduleLoadOrder(k.Modules, modulesNeeded)
	if err != nil {
		return 0, err
	}
	run, err := os.MkdirTemp(cfg.Cache, "run-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(run)
	initrd := filepath.Join(run, "initrd.cpio")
	if err := buildInitramfs(initrd, "/bin/busybox", k, mods, commandScript(cfg.Dir, cfg.Env, argv)); err != nil {
		return 0, err
	}
	disk := filepath.Join(run, "scratch.img")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		return 0, err
	}
	if err := os.Truncate(disk, 256<<20); err != nil {
		return 0, err
	}
	fmt.Fprintf(cfg.Log, "vm: booting Linux %s (software emulation) to run %s\n", k.Version, strings.Join(argv, " "))
	cmd := exec.CommandContext(ctx, qemu,
		"-accel", "tcg", "-cpu", "max", "-m", strconv.Itoa(cfg.MemoryMiB), "-smp", strconv.Itoa(cfg.CPUs),
		"-nographic", "-no-reboot", "-nic", "none",
		"-kernel", k.Image, "-initrd", initrd,
		"-append", "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init",
		"-virtfs", "local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap",
		"-drive", "file="+disk+",if=virtio,format=raw",
	)
	cmd.Stdin = nil
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	cmd.Stderr = cfg.Output
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("starting qemu: %w", err)
	}
	status := -1
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if v, ok := strings.CutPrefix(line, exitMarker); ok {
			status, _ = strconv.Atoi(strings.TrimSpace(v))
			continue
		}
		fmt.Fprintln(cfg.Output, line)
	}
	waitErr := cmd.Wait()
	if ctx.Err() != nil {
		return 0, fmt.Errorf("VM did not finish: %w", ctx.Err())
	}
	if status < 0 {
		return 0, fmt.Errorf("VM stopped without reporting the command's exit status (qemu: %v)", waitErr)
	}
	return status, nil
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
