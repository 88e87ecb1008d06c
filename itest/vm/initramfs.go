package vm

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// exitMarker is printed by the VM's init with the command's exit status;
// nothing else a test prints is likely to start with it.
const exitMarker = "VHQOS-VM-EXIT="

// cpioWriter writes the "newc" cpio format the kernel unpacks as initramfs.
type cpioWriter struct {
	w   io.Writer
	ino int
}

func (c *cpioWriter) header(name string, mode uint32, size int) error {
	c.ino++
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, len(name)+1, 0)
	if _, err := io.WriteString(c.w, hdr+name+"\x00"); err != nil {
		return err
	}
	return c.pad(len(hdr) + len(name) + 1)
}

func (c *cpioWriter) pad(n int) error {
	if r := n % 4; r != 0 {
		_, err := c.w.Write(make([]byte, 4-r))
		return err
	}
	return nil
}

func (c *cpioWriter) dir(name string) error { return c.header(name, 0o040755, 0) }

func (c *cpioWriter) file(name string, mode uint32, data []byte) error {
	if err := c.header(name, 0o100000|mode, len(data)); err != nil {
		return err
	}
	if _, err := c.w.Write(data); err != nil {
		return err
	}
	return c.pad(len(data))
}

func (c *cpioWriter) trailer() error { return c.header("TRAILER!!!", 0, 0) }

// buildInitramfs writes an initramfs holding a static busybox, the modules
// in order and an init that mounts the host's root read-only over 9p, gives
// it fresh /tmp, /run, /dev, /proc, /sys and cgroup2, runs script inside
// it with chroot, prints the exit marker and powers off.
func buildInitramfs(path, busybox string, k *Kernel, modules []string, script string) error {
	var buf bytes.Buffer
	c := &cpioWriter{w: &buf}
	for _, d := range []string{"bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"} {
		if err := c.dir(d); err != nil {
			return err
		}
	}
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return fmt.Errorf("reading busybox (install busybox-static): %w", err)
	}
	if err := c.file("bin/busybox", 0o755, bb); err != nil {
		return err
	}
	var load strings.Builder
	for i, m := range modules {
		data, err := os.ReadFile(filepath.Join(k.Modules, m))
		if err != nil {
			return fmt.Errorf("reading module %s: %w", m, err)
		}
		name := fmt.Sprintf("lib/modules/%02d-%s", i, filepath.Base(m))
		if err := c.file(name, 0o644, data); err != nil {
			return err
		}
		fmt.Fprintf(&load, "insmod /%s\n", name)
	}
	if err := c.file("cmd.sh", 0o755, []byte(script)); err != nil {
		return err
	}
	if err := c.file("init", 0o755, []byte(initScript(load.String()))); err != nil {
		return err
	}
	if err := c.trailer(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

func initScript(loadModules string) string {
	return `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
` + loadModules + `
r=/newroot
if ! mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288,cache=loose hostroot $r; then
	echo "vm init: cannot mount the host root over 9p"
	echo "` + exitMarker + `125"
	poweroff -f
fi
mount -t tmpfs -o mode=1777 tmpfs $r/tmp
mount -t tmpfs -o mode=755 tmpfs $r/run
mount -t proc proc $r/proc
mount -t sysfs sys $r/sys
mount -t devtmpfs dev $r/dev
mkdir -p $r/dev/pts $r/dev/shm
mount -t devpts devpts $r/dev/pts
mount -t tmpfs tmpfs $r/dev/shm
mount -t cgroup2 cgroup2 $r/sys/fs/cgroup
ip link set lo up
cp /cmd.sh $r/run/vhqos-vm-cmd.sh
chroot $r /bin/sh /run/vhqos-vm-cmd.sh
echo "` + exitMarker + `$?"
sync
poweroff -f
`
}

// commandScript runs argv in dir with env, as /bin/sh inside the VM.
func commandScript(dir string, env []string, argv []string) string {
	var b strings.Builder
	b.WriteString("export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp\n")
	for _, e := range env {
		name, value, _ := strings.Cut(e, "=")
		fmt.Fprintf(&b, "export %s=%s\n", name, shellQuote(value))
	}
	fmt.Fprintf(&b, "cd %s || exit 126\n", shellQuote(dir))
	quoted := make([]string, len(argv))
	for i, a := range argv {
		quoted[i] = shellQuote(a)
	}
	b.WriteString("exec " + strings.Join(quoted, " ") + " </dev/null 2>&1\n")
	return b.String()
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
