package vm

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// guestDir is where, inside the VM, the tool keeps its own files: on the
// VM's tmpfs /run, so nothing it needs lives on the read-only host root.
const guestDir = "/run/vhqos-vm"

// guestBusybox is the static busybox the VM's init copies to its tmpfs;
// the init scripts use nothing else, so they work whatever the host root
// holds.
const guestBusybox = guestDir + "/busybox"

// defaultPath is the command's PATH unless -env PATH overrides it.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// hostnameInVM is the VM's host name.
const hostnameInVM = "vhqos-vm"

// guest is everything the VM's init needs to know.
type guest struct {
	markers markers
	// modules are the kernel modules to load, in order, as paths in the
	// initramfs.
	modules []string
	// dir, env (NAME=VALUE) and argv are the command's.
	dir  string
	env  []string
	argv []string
	// modprobe is the host's kmod modprobe and kernelRoot the unpacked
	// kernel package (modprobe -d), both as seen in the VM; with them the
	// kernel can load modules on demand (veth, bfq, ...). modprobe may be
	// empty.
	modprobe   string
	kernelRoot string
	// systemd boots systemd as init (Config.Systemd), with the kernel
	// modules of release at modulesDir (as seen in the VM) linked into
	// the overlay's /lib/modules.
	systemd    bool
	release    string
	modulesDir string
}

// With Config.Systemd, the command is the service systemdService, wanted
// by systemdTarget, the only target systemd starts; the files the VM's
// init puts in the overlay are in systemdDir.
const (
	systemdTarget  = "vhqos-vm.target"
	systemdService = "vhqos-vm.service"
	systemdDir     = "/etc/vhqos-vm"
)

// initScript is the initramfs's /init. It loads the modules for virtio and
// 9p, mounts the host's root read-only over 9p, puts a tmpfs on its /run
// holding busybox and stage 2, moves /proc, /sys and /dev there and
// switch_roots into it, so the command runs with the host's root as the
// real root (not a chroot: pivot_root and /proc/PID/root behave as usual).
// Any failure prints the fail marker and powers off.
func initScript(g *guest) string {
	var b strings.Builder
	b.WriteString(`#!/bin/busybox sh
export PATH=/bin
/bin/busybox --install -s /bin
fail() {
	echo
	echo "` + g.markers.fail + `$*"
	poweroff -f
	sleep 60
}
mount -t proc -o nosuid,nodev,noexec proc /proc || fail "mounting /proc"
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys || fail "mounting /sys"
mount -t devtmpfs -o nosuid,mode=755 devtmpfs /dev || fail "mounting /dev"
`)
	for _, m := range g.modules {
		fmt.Fprintf(&b, "insmod %s || fail %s\n", shellQuote(m), shellQuote("loading the kernel module "+m))
	}
	if g.systemd {
		b.WriteString(systemdInit(g))
		return b.String()
	}
	b.WriteString(`r=/newroot
mkdir -p $r
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot $r ||
	fail "mounting the host root over 9p (is qemu's -virtfs hostroot there?)"
mount -t tmpfs -o nosuid,nodev,mode=755 tmpfs $r/run || fail "mounting a tmpfs on /run"
mkdir -p $r` + guestDir + ` || fail "creating ` + guestDir + `"
cp /bin/busybox /stage2 $r` + guestDir + `/ || fail "copying busybox to ` + guestDir + `"
[ ! -e /modprobe ] || cp /modprobe $r` + guestDir + `/ || fail "copying the modprobe helper"
for m in dev proc sys; do
	mount -o move /$m $r/$m || fail "moving /$m into the host root"
done
exec switch_root $r ` + guestBusybox + ` sh ` + guestDir + `/stage2
fail "switch_root failed"
`)
	return b.String()
}

// stage2Script runs as PID 1 with the host's root as the root. It gives the
// VM what a booted system has (tmpfs /tmp, devpts, cgroup2 alone at
// /sys/fs/cgroup, lo up), runs the command with a clean environment and
// prints the exit marker with its status.
func stage2Script(g *guest) string {
	var b strings.Builder
	b.WriteString(`B=` + guestBusybox + `
fail() {
	echo
	echo "` + g.markers.fail + `$*"
	$B poweroff -f
	$B sleep 60
}
$B mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /tmp || fail "mounting a tmpfs on /tmp"
$B mkdir -p /dev/pts /dev/shm /run/lock
$B chmod 1777 /run/lock
$B mount -t devpts -o nosuid,noexec,gid=5,mode=620,ptmxmode=666 devpts /dev/pts || fail "mounting /dev/pts"
$B mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /dev/shm || fail "mounting /dev/shm"
$B ln -sf /proc/self/fd /dev/fd
$B ln -sf /proc/self/fd/0 /dev/stdin
$B ln -sf /proc/self/fd/1 /dev/stdout
$B ln -sf /proc/self/fd/2 /dev/stderr
$B mount -t cgroup2 -o nosuid,nodev,noexec,nsdelegate,memory_recursiveprot cgroup2 /sys/fs/cgroup ||
	fail "mounting cgroup2 on /sys/fs/cgroup"
`)
	if g.modprobe != "" {
		b.WriteString(`echo ` + guestDir + `/modprobe >/proc/sys/kernel/modprobe || fail "setting the modprobe helper"
`)
	}
	b.WriteString(`$B hostname ` + hostnameInVM + `
$B ip link set lo up || fail "bringing lo up"
`)
	b.WriteString(runCommand(g))
	return b.String()
}

// runCommand is the end of stage 2 (and, under systemd, the service's
// script): it runs the command between the start and the exit markers and
// powers the VM off. $B is busybox, fail prints the fail marker.
func runCommand(g *guest) string {
	var b strings.Builder
	b.WriteString(`cd ` + shellQuote(g.dir) + ` || fail ` + shellQuote("cannot change to the directory "+g.dir+" in the VM") + `
echo
echo "` + g.markers.start + `"
`)
	// The command gets exactly this environment (later entries win) and
	// is run by the host's /bin/sh with exec: busybox-static prefers its
	// own applets to programs of the same name (sh, ip, ls, ...), and env
	// would take a first argument with "=" for a variable.
	words := []string{"$B", "env", "-i"}
	for _, e := range commandEnv(g) {
		words = append(words, shellQuote(e))
	}
	words = append(words, "/bin/sh", "-c", `'exec "$@"'`, "vhqos-vm")
	for _, a := range g.argv {
		words = append(words, shellQuote(a))
	}
	b.WriteString(strings.Join(words, " ") + ` </dev/null 2>&1
s=$?
echo
echo "` + g.markers.exit + `$s"
$B sync
$B poweroff -f
$B sleep 60
`)
	return b.String()
}

// systemdInit is the end of /init with Config.Systemd: the host's root
// (read-only over 9p) under a tmpfs in an overlay, so that systemd and
// what it starts can write (/etc, /var, /run); the VM's files put there;
// then systemd as PID 1.
func systemdInit(g *guest) string {
	dir := systemdDir
	return `mkdir -p /lower /upper
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower ||
	fail "mounting the host root over 9p (is qemu's -virtfs hostroot there?)"
mount -t tmpfs -o mode=755 tmpfs /upper || fail "mounting a tmpfs for the overlay"
mkdir -p /upper/data /upper/work
r=/newroot
mkdir -p $r
mount -t overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work overlay $r ||
	fail "mounting the overlay root"
# The host's /run and /tmp (seen through 9p) are not the VM's: systemd
# would take the one for its own state, and empty the other at boot, file
# by file over 9p (two minutes in emulation).
mount -t tmpfs -o nosuid,nodev,mode=755 tmpfs $r/run || fail "mounting a tmpfs on /run"
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs $r/tmp || fail "mounting a tmpfs on /tmp"
# A container's marker (a host that is a docker container) would make
# systemd take the VM for a container, and ignore the kernel's command
# line.
rm -f $r/.dockerenv $r/run/.containerenv
mkdir -p $r` + dir + ` $r/etc/systemd/system $r/lib/modules || fail "creating ` + dir + `"
cp /bin/busybox /command $r` + dir + `/ || fail "copying the command's script"
cp /` + systemdService + ` /` + systemdTarget + ` $r/etc/systemd/system/ || fail "installing the VM's units"
rm -rf $r/lib/modules/` + shellQuote(g.release) + `
ln -s ` + shellQuote(g.modulesDir) + ` $r/lib/modules/` + shellQuote(g.release) + ` || fail "linking the kernel's modules"
for m in dev proc sys; do
	mount -o move /$m $r/$m || fail "moving /$m into the new root"
done
[ -x $r/lib/systemd/systemd ] || fail "no /lib/systemd/systemd on the host (apt-get install systemd)"
exec switch_root $r /lib/systemd/systemd --unit=` + systemdTarget + ` --show-status=false
fail "switch_root failed"
`
}

// systemdUnits are the VM's target and service: the command's script, on
// the console, once basic.target is reached.
func systemdUnits() (target, service string) {
	target = `[Unit]
Description=vhqos VM: the command, and nothing else
Requires=basic.target ` + systemdService + `
After=basic.target ` + systemdService + `
AllowIsolate=yes
`
	service = `[Unit]
Description=vhqos VM: the command
After=basic.target

[Service]
Type=oneshot
ExecStart=` + systemdDir + `/busybox sh ` + systemdDir + `/command
StandardInput=null
StandardOutput=tty
StandardError=inherit
TTYPath=/dev/console
TTYReset=no
TTYVHangup=no
TimeoutStartSec=infinity
`
	return target, service
}

// commandScript is the service's script: the command between the
// markers, then power-off.
func commandScript(g *guest) string {
	return `B=` + systemdDir + `/busybox
fail() {
	echo
	echo "` + g.markers.fail + `$*"
	$B poweroff -f
	$B sleep 60
}
` + runCommand(g)
}

// commandEnv is the command's environment: sane defaults, then what the
// caller passes (which may override them).
func commandEnv(g *guest) []string {
	env := []string{
		"PATH=" + defaultPath,
		"HOME=/root",
		"USER=root",
		"LOGNAME=root",
		"TERM=dumb",
		"TMPDIR=/tmp",
	}
	if g.modprobe != "" {
		// kmod's modprobe reads its options from here too, so a plain
		// `modprobe veth` in the VM finds the VM kernel's modules.
		env = append(env, "MODPROBE_OPTIONS=-d "+g.kernelRoot)
	}
	return append(env, g.env...)
}

// modprobeScript is what the kernel runs to load a module on demand
// (/proc/sys/kernel/modprobe): the host's modprobe, pointed at the VM
// kernel's modules in the cache, since the host root has none for it.
func modprobeScript(g *guest) string {
	return "#!" + guestBusybox + " sh\nexec " + shellQuote(g.modprobe) + " -d " + shellQuote(g.kernelRoot) + ` "$@"` + "\n"
}

// shellQuote quotes s as one word for sh: inside single quotes everything
// is literal but the single quote itself.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// writeInitramfs writes the initramfs (newc cpio, uncompressed: the kernel
// unpacks that fastest) with busybox, the modules (read from modulesDir,
// stored as lib/modules/NN-name.ko) and the scripts of g. The module paths
// in g are filled in here.
func writeInitramfs(w io.Writer, busybox, modulesDir string, modules []string, g *guest) error {
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return fmt.Errorf("reading busybox (apt-get install busybox-static): %w", err)
	}
	if err := checkStatic(busybox, bb); err != nil {
		return err
	}
	var buf bytes.Buffer
	c := &cpioWriter{w: &buf}
	for _, d := range []string{"bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"} {
		c.dir(d)
	}
	c.node("dev/console", 0o020600, 5, 1)
	c.node("dev/null", 0o020666, 1, 3)
	c.file("bin/busybox", 0o755, bb)
	g.modules = nil
	for i, m := range modules {
		data, err := os.ReadFile(filepath.Join(modulesDir, m))
		if err != nil {
			return fmt.Errorf("reading the kernel module %s: %w", m, err)
		}
		name := fmt.Sprintf("lib/modules/%02d-%s", i, path.Base(m))
		c.file(name, 0o644, data)
		g.modules = append(g.modules, "/"+name)
	}
	if g.modprobe != "" {
		c.file("modprobe", 0o755, []byte(modprobeScript(g)))
	}
	if g.systemd {
		target, service := systemdUnits()
		c.file(systemdTarget, 0o644, []byte(target))
		c.file(systemdService, 0o644, []byte(service))
		c.file("command", 0o755, []byte(commandScript(g)))
	} else {
		c.file("stage2", 0o755, []byte(stage2Script(g)))
	}
	c.file("init", 0o755, []byte(initScript(g)))
	c.trailer()
	if c.err != nil {
		return fmt.Errorf("writing the initramfs: %w", c.err)
	}
	if _, err := w.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("writing the initramfs: %w", err)
	}
	return nil
}

// checkStatic refuses a dynamically linked busybox (Debian's "busybox"
// package): the initramfs has no libraries.
func checkStatic(name string, data []byte) error {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("%s is not an ELF executable: %w", name, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; the VM's initramfs needs a static one (apt-get install busybox-static)", name)
		}
	}
	return nil
}

// cpioWriter writes the "newc" cpio format the kernel unpacks as initramfs.
// The first error sticks in err and makes later calls no-ops.
type cpioWriter struct {
	w   io.Writer
	ino int
	err error
}

func (c *cpioWriter) header(name string, mode uint32, size int, rdevMajor, rdevMinor int) {
	if c.err != nil {
		return
	}
	c.ino++
	nlink := 1
	if mode&0o170000 == 0o040000 {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	c.write([]byte(hdr + name + "\x00"))
	c.pad(len(hdr) + len(name) + 1)
}

func (c *cpioWriter) write(p []byte) {
	if c.err == nil {
		_, c.err = c.w.Write(p)
	}
}

func (c *cpioWriter) pad(n int) {
	if r := n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

func (c *cpioWriter) dir(name string) { c.header(name, 0o040755, 0, 0, 0) }

func (c *cpioWriter) node(name string, mode uint32, major, minor int) {
	c.header(name, mode, 0, major, minor)
}

func (c *cpioWriter) file(name string, perm uint32, data []byte) {
	c.header(name, 0o100000|perm, len(data), 0, 0)
	c.write(data)
	c.pad(len(data))
}

func (c *cpioWriter) trailer() { c.header("TRAILER!!!", 0, 0, 0, 0) }
