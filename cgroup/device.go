package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrNoDevice is what ResolveDevice's error wraps when this machine has no
// block device by that name or number: a QoS table may be written for a
// fleet, so its caller may skip the limit rather than refuse the table.
var ErrNoDevice = errors.New("no such block device on this machine")

// Linux's dev_t has 12 bits of major and 20 of minor number
// (include/linux/kdev_t.h: MINORBITS 20; majors stop at 4095, see
// Documentation/admin-guide/devices.txt).
const (
	maxMajor = 1<<12 - 1
	maxMinor = 1<<20 - 1
)

// BlockDevice is a whole disk IO limits can be set on.
type BlockDevice struct {
	Major, Minor int64
	// Name is the kernel's name for it ("vda", "nvme0n1"), as in
	// /sys/class/block.
	Name string
}

// deviceError carries a message written for the operator and whether it
// means the device is missing (errors.Is(err, ErrNoDevice)).
type deviceError struct {
	msg     string
	missing bool
}

func (e *deviceError) Error() string { return e.msg }

func (e *deviceError) Is(target error) bool { return e.missing && target == ErrNoDevice }

// ResolveDevice resolves a block device as a QoS table names it: the path
// of a device node (symlinks such as /dev/disk/by-id/... followed) or
// "MAJOR:MINOR" in decimal, as lsblk shows them. Either way the number is
// looked up in /sys/dev/block, which is what the kernel's io.max and
// blkio.throttle.* files go by, so that whatever this accepts the kernel
// accepts too. It returns the device when it is a whole disk. Otherwise the
// error says why, in words for the operator:
//
//   - the device is not on this machine (a path that does not exist, a
//     device node or a number sysfs does not know): the error wraps
//     ErrNoDevice;
//   - it is a partition: the kernel takes IO limits for whole disks only
//     (blkcg_conf_open_bdev refuses partitions with ENODEV), so the error
//     names the disk, by path and by number;
//   - the path is not a block device, or the spec is neither an absolute
//     path nor MAJOR:MINOR;
//   - sysfs cannot be read, so nothing can be checked.
func ResolveDevice(spec string) (BlockDevice, error) {
	return resolveDevice(spec, "/sys")
}

// resolveDevice takes sysfs's mount point so that tests can show it a
// partition on machines whose kernel has none.
func resolveDevice(spec, sysfs string) (BlockDevice, error) {
	if a, b, ok := strings.Cut(spec, ":"); ok {
		major, err1 := strconv.ParseInt(a, 10, 64)
		minor, err2 := strconv.ParseInt(b, 10, 64)
		if !allDigits(a) || !allDigits(b) || err1 != nil || err2 != nil || major > maxMajor || minor > maxMinor {
			return BlockDevice{}, fmt.Errorf("%q is not MAJOR:MINOR; write decimal numbers, major 0..%d and minor 0..%d, as lsblk -d -o NAME,MAJ:MIN shows them", spec, maxMajor, maxMinor)
		}
		return lookupNumber(sysfs, spec, major, minor)
	}
	if !strings.HasPrefix(spec, "/") {
		return BlockDevice{}, fmt.Errorf("%q is not a device; write the block device's path, e.g. \"/dev/vda\", or MAJOR:MINOR such as \"254:0\"", spec)
	}
	fi, err := os.Stat(spec)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return BlockDevice{}, &deviceError{missing: true, msg: fmt.Sprintf("no block device %q on this machine (lsblk -d lists the disks it has)", spec)}
	case err != nil:
		return BlockDevice{}, fmt.Errorf("looking up block device %q: %w", spec, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if fi.Mode()&fs.ModeDevice == 0 || fi.Mode()&fs.ModeCharDevice != 0 || !ok {
		return BlockDevice{}, fmt.Errorf("%q is %s, not a block device (lsblk -d lists block devices)", spec, fileKind(fi.Mode()))
	}
	return lookupNumber(sysfs, strconv.Quote(spec), int64(unix.Major(uint64(st.Rdev))), int64(unix.Minor(uint64(st.Rdev))))
}

// lookupNumber tells a disk from a partition and from a number no device
// has, by /sys/dev/block/MAJ:MIN: a link to the device's directory, which
// holds a "partition" file for partitions and sits in its disk's directory.
// what names the device in messages: a quoted path or the number.
func lookupNumber(sysfs, what string, major, minor int64) (BlockDevice, error) {
	num := fmt.Sprintf("%d:%d", major, minor)
	if what != num {
		what += " (" + num + ")"
	}
	index := filepath.Join(sysfs, "dev", "block")
	dir, err := filepath.EvalSymlinks(filepath.Join(index, num))
	if errors.Is(err, fs.ErrNotExist) {
		if _, ierr := os.Stat(index); ierr != nil {
			// Without sysfs every device would look missing and every
			// limit would be skipped without a word of truth.
			return BlockDevice{}, fmt.Errorf("cannot check block device %s: %w (is sysfs mounted on %s?)", what, ierr, sysfs)
		}
		return BlockDevice{}, &deviceError{missing: true, msg: fmt.Sprintf("no block device %s on this machine (lsblk -d lists the disks it has)", what)}
	}
	if err != nil {
		return BlockDevice{}, fmt.Errorf("looking up block device %s in sysfs: %w", what, err)
	}
	name := filepath.Base(dir)
	if _, err := os.Stat(filepath.Join(dir, "partition")); err != nil {
		return BlockDevice{Major: major, Minor: minor, Name: name}, nil
	}
	diskDir := filepath.Dir(dir)
	disk := filepath.Base(diskDir)
	diskNum := "?"
	if data, err := os.ReadFile(filepath.Join(diskDir, "dev")); err == nil {
		diskNum = strings.TrimSpace(string(data))
	}
	return BlockDevice{}, fmt.Errorf("%s is partition %s of disk %s (%s); IO limits apply to whole disks: write %q or %q",
		what, name, disk, diskNum, devPath(disk), diskNum)
}

// devPath is where udev and devtmpfs put a device's node: the kernel
// writes '/' in names as '!' in sysfs (cciss!c0d0 is /dev/cciss/c0d0).
func devPath(name string) string {
	return "/dev/" + strings.ReplaceAll(name, "!", "/")
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m.IsDir():
		return "a directory"
	case m.IsRegular():
		return "a regular file"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	}
	return "not a device"
}
