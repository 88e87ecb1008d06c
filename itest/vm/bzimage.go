package vm

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// xenElfnotePhys32Entry is the ELF note (owner "Xen") that marks a vmlinux
// qemu can start at its 32-bit PVH entry point.
const xenElfnotePhys32Entry = 18

// extractVmlinux writes the uncompressed kernel inside the bzImage at
// bzImage to out, after checking it can be booted through PVH. The payload
// is found from the boot protocol header (2.08+: payload_offset,
// payload_length); its last 4 bytes are the uncompressed size.
func extractVmlinux(bzImage, out string) error {
	data, err := os.ReadFile(bzImage)
	if err != nil {
		return fmt.Errorf("reading the kernel: %w", err)
	}
	payload, err := bzPayload(data)
	if err != nil {
		return fmt.Errorf("%s: %w", bzImage, err)
	}
	vmlinux, err := decompress(payload)
	if err != nil {
		return fmt.Errorf("%s: %w", bzImage, err)
	}
	if want := binary.LittleEndian.Uint32(payload[len(payload)-4:]); uint32(len(vmlinux)) != want {
		return fmt.Errorf("%s: decompressed %d bytes, the header says %d", bzImage, len(vmlinux), want)
	}
	if err := checkPVH(vmlinux); err != nil {
		return fmt.Errorf("%s: %w", bzImage, err)
	}
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, vmlinux, 0o644); err != nil {
		return fmt.Errorf("writing the uncompressed kernel: %w", err)
	}
	if err := os.Rename(tmp, out); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("moving the uncompressed kernel into place: %w", err)
	}
	return nil
}

// bzPayload returns the compressed kernel inside a bzImage.
func bzPayload(data []byte) ([]byte, error) {
	if len(data) < 0x250 || string(data[0x202:0x206]) != "HdrS" {
		return nil, errors.New("not a bzImage (no HdrS header)")
	}
	if v := binary.LittleEndian.Uint16(data[0x206:]); v < 0x208 {
		return nil, fmt.Errorf("boot protocol %#x has no payload fields (2.08+)", v)
	}
	setup := int(data[0x1f1])
	if setup == 0 {
		setup = 4
	}
	off := (setup+1)*512 + int(binary.LittleEndian.Uint32(data[0x248:]))
	n := int(binary.LittleEndian.Uint32(data[0x24c:]))
	if n < 8 || off < 0 || off+n > len(data) {
		return nil, fmt.Errorf("payload %d+%d outside the %d-byte file", off, n, len(data))
	}
	return data[off : off+n], nil
}

// decompress undoes the kernel's compression: gzip here, xz and zstd with
// the tools (xz-utils is part of every Debian system).
func decompress(payload []byte) ([]byte, error) {
	switch {
	case bytes.HasPrefix(payload, []byte{0x1f, 0x8b}):
		r, err := gzip.NewReader(bytes.NewReader(payload))
		if err != nil {
			return nil, fmt.Errorf("gzip payload: %w", err)
		}
		r.Multistream(false)
		out, err := io.ReadAll(r)
		if err != nil {
			return nil, fmt.Errorf("gzip payload: %w", err)
		}
		return out, nil
	case bytes.HasPrefix(payload, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return filter(payload, "xz", "-dc", "--single-stream")
	case bytes.HasPrefix(payload, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return filter(payload[:len(payload)-4], "zstd", "-dcq")
	default:
		return nil, fmt.Errorf("payload compressed with a method not handled here (starts % x)", payload[:4])
	}
}

func filter(in []byte, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// checkPVH checks vmlinux is an x86-64 ELF with a PVH entry point.
func checkPVH(vmlinux []byte) error {
	f, err := elf.NewFile(bytes.NewReader(vmlinux))
	if err != nil {
		return fmt.Errorf("uncompressed kernel is not ELF: %w", err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("uncompressed kernel is for %v", f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		notes, err := io.ReadAll(p.Open())
		if err != nil {
			return fmt.Errorf("reading the kernel's ELF notes: %w", err)
		}
		if hasNote(notes, "Xen", xenElfnotePhys32Entry) {
			return nil
		}
	}
	return errors.New("the kernel has no PVH entry point (CONFIG_PVH)")
}

// hasNote looks for a note of owner name and type typ in an ELF note
// segment.
func hasNote(b []byte, name string, typ uint32) bool {
	align := func(n uint32) uint32 { return (n + 3) &^ 3 }
	for len(b) >= 12 {
		namesz := binary.LittleEndian.Uint32(b)
		descsz := binary.LittleEndian.Uint32(b[4:])
		t := binary.LittleEndian.Uint32(b[8:])
		b = b[12:]
		if uint64(align(namesz))+uint64(align(descsz)) > uint64(len(b)) {
			return false
		}
		owner := strings.TrimRight(string(b[:namesz]), "\x00")
		if owner == name && t == typ {
			return true
		}
		b = b[align(namesz)+align(descsz):]
	}
	return false
}

// loopsPerJiffy is the value the VM kernel would calibrate for its delay
// loop: its TSC (qemu's emulated TSC runs at the host's rate) in Hz over
// the kernel's HZ. Passing it as lpj= spares the second CPU a calibration
// that takes about a second in emulation. 0 means unknown.
func loopsPerJiffy(k *Kernel) int {
	hz := kernelHZ(k)
	khz := hostCPUkHz()
	if hz <= 0 || khz <= 0 {
		return 0
	}
	return khz * 1000 / hz
}

// kernelHZ reads CONFIG_HZ from the kernel package's config file.
func kernelHZ(k *Kernel) int {
	f, err := os.Open(k.Root + "/boot/config-" + k.Release)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CONFIG_HZ="); ok {
			hz, _ := strconv.Atoi(v)
			return hz
		}
	}
	return 0
}

// hostCPUkHz reads the first "cpu MHz" of /proc/cpuinfo.
func hostCPUkHz() int {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return parseCPUMHz(string(data))
}

func parseCPUMHz(cpuinfo string) int {
	for _, line := range strings.Split(cpuinfo, "\n") {
		key, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(key) == "cpu MHz" {
			mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil || mhz <= 0 {
				return 0
			}
			return int(mhz * 1000)
		}
	}
	return 0
}
