package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vhqos/vhqos/itest/loopdisk"
	"golang.org/x/sys/unix"
)

// unusedNumber is a device number no machine has: the largest dev_t.
const unusedNumber = "4095:1048575"

// ResolveDevice on this machine's own /sys and /dev, with a loop disk and
// its partition made for the test (the hosts have no partitions, and
// their kernel no partition-table parser).
func TestResolveDevice(t *testing.T) {
	if _, err := os.Stat("/sys/dev/block/" + unusedNumber); err == nil {
		t.Fatalf("this machine has device %s; pick another unused number", unusedNumber)
	}
	d := loopdisk.New(t)
	var major, minor int64
	fmt.Sscanf(d.Num, "%d:%d", &major, &minor)
	disk := BlockDevice{Major: major, Minor: minor, Name: d.Name}
	partition := fmt.Sprintf("is partition %s of disk %s (%s); IO limits apply to whole disks: write %q or %q", d.PartName, d.Name, d.Num, d.Path, d.Num)
	link := filepath.Join(t.TempDir(), "by-id-link")
	if err := os.Symlink(d.Path, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		spec    string
		want    BlockDevice
		missing bool
		err     string // the whole message, or a part of it
	}{
		{spec: d.Path, want: disk},
		{spec: d.Num, want: disk},
		{spec: link, want: disk}, // like /dev/disk/by-id/...
		{spec: d.PartPath, err: fmt.Sprintf("%q (%s) %s", d.PartPath, d.PartNum, partition)},
		{spec: d.PartNum, err: d.PartNum + " " + partition},
		{spec: "/dev/vhqos-no-such-disk", missing: true, err: `no block device "/dev/vhqos-no-such-disk" on this machine (lsblk -d lists the disks it has)`},
		{spec: unusedNumber, missing: true, err: "no block device " + unusedNumber + " on this machine (lsblk -d lists the disks it has)"},
		{spec: "0:0", missing: true, err: "no block device 0:0 on this machine"},
		{spec: "/dev/null", err: `"/dev/null" is a character device, not a block device (lsblk -d lists block devices)`},
		{spec: "/", err: `"/" is a directory, not a block device`},
		{spec: "/etc/hostname/x", err: `looking up block device "/etc/hostname/x": stat /etc/hostname/x: not a directory`},
		{spec: "vda", err: `"vda" is not a device; write the block device's path, e.g. "/dev/vda", or MAJOR:MINOR such as "254:0"`},
		{spec: "8:x", err: `"8:x" is not MAJOR:MINOR; write decimal numbers, major 0..4095 and minor 0..1048575`},
		{spec: "4096:0", err: "is not MAJOR:MINOR"},
		{spec: "0:1048576", err: "is not MAJOR:MINOR"},
		{spec: "+8:16", err: "is not MAJOR:MINOR"},
		{spec: " 8:16", err: "is not MAJOR:MINOR"},
	} {
		got, err := ResolveDevice(tc.spec)
		if tc.err == "" {
			if err != nil || got != tc.want {
				t.Errorf("ResolveDevice(%q) = %+v, %v; want %+v", tc.spec, got, err, tc.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("ResolveDevice(%q) = %+v, %v; want an error with %q", tc.spec, got, err, tc.err)
			continue
		}
		if errors.Is(err, ErrNoDevice) != tc.missing {
			t.Errorf("ResolveDevice(%q): errors.Is(%v, ErrNoDevice) = %v, want %v", tc.spec, err, !tc.missing, tc.missing)
		}
	}
	// Every whole disk the machine has resolves to what sysfs says. Loop
	// devices may belong to tests running beside this one, and go.
	entries, _ := os.ReadDir("/sys/block")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "loop") {
			continue
		}
		num, err := os.ReadFile(filepath.Join("/sys/block", e.Name(), "dev"))
		if err != nil {
			continue
		}
		got, err := ResolveDevice(strings.TrimSpace(string(num)))
		if err != nil || got.Name != e.Name() || fmt.Sprintf("%d:%d\n", got.Major, got.Minor) != string(num) {
			t.Errorf("disk %s (%s): ResolveDevice = %+v, %v", e.Name(), strings.TrimSpace(string(num)), got, err)
		}
	}
}

// On a fake sysfs: kernel names with '!' (a '/' in the device's path), a
// device node whose number the kernel does not know, and no sysfs at all.
func TestResolveDeviceFakeSysfs(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	sysfs := filepath.Join(dir, "sys")
	diskDir := filepath.Join(sysfs, "devices", "pci0000:00", "block", "cciss!c0d0")
	partDir := filepath.Join(diskDir, "cciss!c0d0p1")
	for _, d := range []string{partDir, filepath.Join(sysfs, "dev", "block")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(diskDir, "dev"), []byte("104:0\n"), 0o644)
	os.WriteFile(filepath.Join(partDir, "dev"), []byte("104:1\n"), 0o644)
	os.WriteFile(filepath.Join(partDir, "partition"), []byte("1\n"), 0o644)
	os.Symlink(diskDir, filepath.Join(sysfs, "dev", "block", "104:0"))
	os.Symlink(partDir, filepath.Join(sysfs, "dev", "block", "104:1"))
	stale := filepath.Join(dir, "stale")
	if err := unix.Mknod(stale, unix.S_IFBLK|0o600, int(unix.Mkdev(4095, 1048575))); err != nil {
		t.Skipf("cannot make a block device node: %v", err)
	}
	for _, tc := range []struct {
		spec, sysfs string
		want        BlockDevice
		missing     bool
		err         string
	}{
		{spec: "104:0", sysfs: sysfs, want: BlockDevice{Major: 104, Minor: 0, Name: "cciss!c0d0"}},
		{spec: "104:1", sysfs: sysfs, err: `104:1 is partition cciss!c0d0p1 of disk cciss!c0d0 (104:0); IO limits apply to whole disks: write "/dev/cciss/c0d0" or "104:0"`},
		{spec: stale, sysfs: sysfs, missing: true, err: fmt.Sprintf("no block device %q (4095:1048575) on this machine", stale)},
		{spec: "104:0", sysfs: filepath.Join(dir, "nosys"), err: "cannot check block device 104:0: stat " + filepath.Join(dir, "nosys", "dev", "block") + ": no such file or directory (is sysfs mounted on " + filepath.Join(dir, "nosys") + "?)"},
	} {
		got, err := resolveDevice(tc.spec, tc.sysfs)
		if tc.err == "" {
			if err != nil || got != tc.want {
				t.Errorf("resolveDevice(%q) = %+v, %v; want %+v", tc.spec, got, err, tc.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) || errors.Is(err, ErrNoDevice) != tc.missing {
			t.Errorf("resolveDevice(%q) = %+v, %v; want an error with %q (missing: %v)", tc.spec, got, err, tc.err, tc.missing)
		}
	}
}

// Limits on a disk that goes away: the kernel forgot them with the disk,
// so removing them from the group succeeds (a reload after an unplug must
// not fail on it). Limits the kernel refuses say why, as the table's check
// would.
func TestIOLimitsOnDiskThatGoes(t *testing.T) {
	m := newTestManager(t, Options{})
	d := loopdisk.New(t)
	var major, minor int64
	fmt.Sscanf(d.Num, "%d:%d", &major, &minor)
	lim := withLimits(DeviceLimit{Path: d.Path, Major: major, Minor: minor}, 1<<20, 0, 0, 0)
	err := m.Set("vhost-io", Resources{Devices: []DeviceLimit{lim}})
	if m.Version() == 2 && err != nil && strings.Contains(err.Error(), "controller is not available") {
		t.Skipf("no io controller: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	var file string
	if m.Version() == 1 {
		file = fileOf(t, m, "vhost-io", "blkio", "blkio.throttle.read_bps_device")
	} else {
		file = fileOf(t, m, "vhost-io", "io", "io.max")
	}
	if got := read(t, file); !strings.Contains(got, d.Num+" ") {
		t.Fatalf("%s = %q, want a line for %s", file, got, d.Num)
	}
	// The kernel refuses a partition; the error says which disk to use.
	var pmajor, pminor int64
	fmt.Sscanf(d.PartNum, "%d:%d", &pmajor, &pminor)
	part := withLimits(DeviceLimit{Path: d.PartPath, Major: pmajor, Minor: pminor}, 1<<20, 0, 0, 0)
	err = m.Set("vhost-part", Resources{Devices: []DeviceLimit{part}})
	if want := fmt.Sprintf("(%s is partition %s of disk %s (%s); IO limits apply to whole disks", d.PartNum, d.PartName, d.Name, d.Num); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("limits on a partition: err = %v, want %q", err, want)
	}

	d.Remove(t)
	if got := read(t, file); strings.Contains(got, d.Num+" ") {
		t.Fatalf("%s = %q after the disk was removed; the test proves nothing", file, got)
	}
	if err := m.Set("vhost-io", Resources{}); err != nil {
		t.Errorf("dropping the limits of a removed disk: %v", err)
	}
	// Nothing is left to retry.
	m.mu.Lock()
	applied := len(m.groups["vhost-io"].applied)
	m.mu.Unlock()
	if applied != 0 {
		t.Errorf("%d settings still recorded after dropping them", applied)
	}
	// Limits on a device the machine lacks say so. (Not on the removed
	// loop disk: kernels with CONFIG_BLOCK_LEGACY_AUTOLOAD, such as the
	// VM's, bring a loop device back when its number is opened.)
	none := withLimits(DeviceLimit{Path: "/dev/none", Major: 4095, Minor: 1048575}, 1<<20, 0, 0, 0)
	err = m.Set("vhost-io", Resources{Devices: []DeviceLimit{none}})
	if want := "(no block device " + unusedNumber + " on this machine"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("limits on a missing disk: err = %v, want %q", err, want)
	}
}
