// Package loopdisk makes, for a test, a disk with one partition: a loop
// device over a sparse file in the test's temporary directory, with the
// partition added by BLKPG (util-linux's addpart), which needs no
// partition-table parser in the kernel (the project's hosts have none).
// Tests of what IO limits accept (whole disks, not partitions) use it on
// every machine, with or without disks of its own.
package loopdisk

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Disk is a loop device and its one partition, by path and by number.
type Disk struct {
	// Path is the disk's node, e.g. "/dev/loop3"; Num its "MAJ:MIN",
	// e.g. "7:3"; Name its kernel name, "loop3".
	Path, Num, Name string
	// PartPath, PartNum and PartName are the partition's: "/dev/loop3p1",
	// "259:0", "loop3p1".
	PartPath, PartNum, PartName string
	removed                     bool
}

// New makes a Disk that is removed when the test ends. It skips the test
// when not root or when the kernel has no loop devices (not even as a
// module modprobe can load), and fails it when losetup or addpart
// (util-linux, which make deps installs) is missing.
func New(t testing.TB) *Disk {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("making a loop device needs root")
	}
	for _, tool := range []string{"losetup", "addpart"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (util-linux; make deps installs it): %v", tool, err)
		}
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		// The VM's kernel has loop as a module, and nothing loads it
		// on demand for a node that does not exist yet.
		if out, err := exec.Command("modprobe", "loop").CombinedOutput(); err != nil {
			t.Skipf("no loop devices (/dev/loop-control missing, modprobe loop: %v: %s)", err, strings.TrimSpace(string(out)))
		}
	}
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 8<<20); err != nil {
		t.Fatal(err)
	}
	// --partscan lets the disk have partitions at all (a loop device
	// without it refuses BLKPG).
	out, err := exec.Command("losetup", "--find", "--show", "--partscan", img).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup --find --show --partscan %s: %v: %s", img, err, out)
	}
	d := &Disk{Path: strings.TrimSpace(string(out))}
	d.Name = filepath.Base(d.Path)
	t.Cleanup(func() {
		if d.removed {
			return
		}
		// Detaching removes the partition too.
		if out, err := exec.Command("losetup", "--detach", d.Path).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", d.Path, err, out)
		}
	})
	if d.Num, err = sysNum(d.Name); err != nil {
		t.Fatal(err)
	}
	// Partition 1: 4 MiB from sector 2048 (sectors of 512 bytes).
	if out, err := exec.Command("addpart", d.Path, "1", "2048", "8192").CombinedOutput(); err != nil {
		t.Fatalf("addpart %s 1 2048 8192: %v: %s", d.Path, err, out)
	}
	d.PartName = d.Name + "p1"
	deadline := time.Now().Add(10 * time.Second)
	for {
		if d.PartNum, err = sysNum(d.PartName); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("partition %s did not appear in sysfs: %v", d.PartName, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	d.PartPath = "/dev/" + d.PartName
	if _, err := os.Stat(d.PartPath); errors.Is(err, os.ErrNotExist) {
		// No devtmpfs on /dev: make the node where the test can.
		var major, minor uint32
		fmt.Sscanf(d.PartNum, "%d:%d", &major, &minor)
		d.PartPath = filepath.Join(t.TempDir(), d.PartName)
		if err := unix.Mknod(d.PartPath, unix.S_IFBLK|0o600, int(unix.Mkdev(major, minor))); err != nil {
			t.Fatalf("making a node for %s: %v", d.PartName, err)
		}
	}
	return d
}

// Remove detaches the loop device and deletes it, as unplugging a disk
// would: its number leaves sysfs, and the kernel forgets the limits set on
// it.
func (d *Disk) Remove(t testing.TB) {
	t.Helper()
	if out, err := exec.Command("losetup", "--detach", d.Path).CombinedOutput(); err != nil {
		t.Fatalf("losetup --detach %s: %v: %s", d.Path, err, out)
	}
	var n int
	if _, err := fmt.Sscanf(d.Name, "loop%d", &n); err != nil {
		t.Fatalf("loop device %s: no number in its name", d.Name)
	}
	ctl, err := unix.Open("/dev/loop-control", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("opening /dev/loop-control: %v", err)
	}
	defer unix.Close(ctl)
	// The detach finishes asynchronously: the device is busy until then.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err = unix.IoctlSetInt(ctl, unix.LOOP_CTL_REMOVE, n)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			t.Fatalf("removing %s (LOOP_CTL_REMOVE): %v", d.Path, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	d.removed = true
	// Leave the machine with the loop devices it had.
	t.Cleanup(func() {
		ctl, err := unix.Open("/dev/loop-control", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Errorf("opening /dev/loop-control: %v", err)
			return
		}
		defer unix.Close(ctl)
		if err := unix.IoctlSetInt(ctl, unix.LOOP_CTL_ADD, n); err != nil && !errors.Is(err, unix.EEXIST) {
			t.Errorf("adding %s back (LOOP_CTL_ADD): %v", d.Path, err)
		}
	})
}

// sysNum reads a block device's "MAJ:MIN" from sysfs.
func sysNum(name string) (string, error) {
	data, err := os.ReadFile(filepath.Join("/sys/class/block", name, "dev"))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(data)), nil
}
