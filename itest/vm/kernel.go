package vm

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// metaPackage is Debian's "current stable kernel" package; it depends on
// exactly one versioned linux-image-VERSION package, which is what is
// fetched.
const metaPackage = "linux-image-amd64"

// Kernel is a Debian kernel package unpacked in the cache.
type Kernel struct {
	Package string // e.g. linux-image-6.1.0-56-amd64
	Release string // uname -r in the VM, e.g. 6.1.0-56-amd64
	Root    string // where the package is unpacked (modprobe -d takes this)
	Image   string // Root/boot/vmlinuz-Release, the compressed bzImage
	// Boot is what qemu boots: Root/boot/vmlinux-Release, the image
	// uncompressed, which qemu starts through the PVH entry point,
	// skipping decompression in emulation (about 2.5 s), or Image when
	// that could not be made.
	Boot    string
	Modules string // Root/lib/modules/Release, with modules.dep
}

func kernelAt(cache, pkg string) *Kernel {
	release := strings.TrimPrefix(pkg, "linux-image-")
	root := filepath.Join(cache, pkg)
	return &Kernel{
		Package: pkg,
		Release: release,
		Root:    root,
		Image:   filepath.Join(root, "boot", "vmlinuz-"+release),
		Boot:    filepath.Join(root, "boot", "vmlinuz-"+release),
		Modules: filepath.Join(root, "lib", "modules", release),
	}
}

func (k *Kernel) vmlinux() string { return filepath.Join(k.Root, "boot", "vmlinux-"+k.Release) }

// prepareBoot sets k.Boot to the uncompressed image, extracting it first if
// it is not there yet.
func (k *Kernel) prepareBoot(log io.Writer) {
	if _, err := os.Stat(k.vmlinux()); err == nil {
		k.Boot = k.vmlinux()
		return
	}
	fmt.Fprintf(log, "vm: extracting the uncompressed kernel %s for PVH boot\n", k.vmlinux())
	if err := extractVmlinux(k.Image, k.vmlinux()); err != nil {
		fmt.Fprintf(log, "vm: booting the compressed kernel instead (about 2.5 s slower): %v\n", err)
		return
	}
	k.Boot = k.vmlinux()
}

// complete reports whether the unpacking finished (it is renamed into
// place only then, but a cache can be tampered with).
func (k *Kernel) complete() bool {
	for _, p := range []string{k.Image, filepath.Join(k.Modules, "modules.dep")} {
		if _, err := os.Stat(p); err != nil {
			return false
		}
	}
	return true
}

// FetchKernel returns Debian's current stable kernel (the package
// linux-image-amd64 depends on, as apt sees it now) unpacked in cache,
// fetching it with apt-get download and unpacking it with dpkg -x when it
// is not there yet. It writes one line per step to log. When apt does not
// know linux-image-amd64 (no apt-get update yet) the newest kernel already
// in cache is used. Concurrent callers are serialised by a lock file.
func FetchKernel(ctx context.Context, cache string, log io.Writer) (*Kernel, error) {
	if log == nil {
		log = io.Discard
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, fmt.Errorf("creating the VM cache: %w", err)
	}
	unlock, err := lockFile(filepath.Join(cache, "kernel.lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()

	pkg, aptErr := kernelPackage(ctx, cache)
	if aptErr != nil {
		cached := cachedKernels(cache)
		if len(cached) == 0 {
			return nil, aptErr
		}
		k := cached[len(cached)-1]
		fmt.Fprintf(log, "vm: apt does not answer (%v); using the cached kernel %s\n", aptErr, k.Release)
		k.prepareBoot(log)
		return k, nil
	}
	k := kernelAt(cache, pkg)
	if k.complete() {
		fmt.Fprintf(log, "vm: kernel %s (cached in %s)\n", k.Release, k.Root)
		k.prepareBoot(log)
		return k, nil
	}
	if err := unpackKernel(ctx, cache, k, log); err != nil {
		return nil, err
	}
	k.prepareBoot(log)
	// Older kernels are 400 MB each and nothing uses them any more.
	for _, old := range cachedKernels(cache) {
		if old.Package != k.Package {
			fmt.Fprintf(log, "vm: removing the superseded kernel %s\n", old.Root)
			if err := os.RemoveAll(old.Root); err != nil {
				return nil, fmt.Errorf("removing %s: %w", old.Root, err)
			}
		}
	}
	return k, nil
}

// kernelPackage asks apt which versioned kernel package the metapackage's
// candidate version depends on. apt-cache takes about a second here (no
// package cache file), so the answer is kept in cache with a fingerprint
// of apt's package lists, and asked again only when they change.
func kernelPackage(ctx context.Context, cache string) (string, error) {
	answer := filepath.Join(cache, "apt-answer")
	key := aptListsKey()
	if data, err := os.ReadFile(answer); err == nil && key != "" {
		if k, pkg, ok := strings.Cut(strings.TrimSpace(string(data)), "\n"); ok && k == key {
			return pkg, nil
		}
	}
	cmd := exec.CommandContext(ctx, "apt-cache", "depends", metaPackage)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
		}
		return "", fmt.Errorf("asking apt which kernel %s is (apt-get update first?): %w", metaPackage, err)
	}
	pkg, err := parseDepends(string(out))
	if err != nil {
		return "", err
	}
	if key != "" {
		// Only an optimisation: a cache that cannot be written is asked
		// again next time.
		_ = os.WriteFile(answer, []byte(key+"\n"+pkg+"\n"), 0o644)
	}
	return pkg, nil
}

// aptListsKey fingerprints apt's package lists (names, sizes, times), or
// is empty if they cannot be read.
func aptListsKey() string {
	const lists = "/var/lib/apt/lists"
	entries, err := os.ReadDir(lists)
	if err != nil {
		return ""
	}
	h := sha256.New()
	n := 0
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		fmt.Fprintf(h, "%s %d %d\n", e.Name(), fi.Size(), fi.ModTime().UnixNano())
		n++
	}
	if n == 0 {
		return ""
	}
	return hex.EncodeToString(h.Sum(nil))
}

// parseDepends picks the linux-image-VERSION dependency out of
// `apt-cache depends linux-image-amd64`.
func parseDepends(out string) (string, error) {
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimPrefix(strings.TrimSpace(line), "|")
		dep, ok := strings.CutPrefix(line, "Depends: ")
		if !ok {
			continue
		}
		dep = strings.TrimSpace(dep)
		if strings.HasPrefix(dep, "linux-image-") && !strings.ContainsAny(dep, " <>/") {
			return dep, nil
		}
	}
	return "", fmt.Errorf("%s depends on no linux-image package: %q", metaPackage, out)
}

// cachedKernels lists the complete kernels in cache, oldest version first.
func cachedKernels(cache string) []*Kernel {
	dirs, _ := filepath.Glob(filepath.Join(cache, "linux-image-*"))
	var ks []*Kernel
	for _, d := range dirs {
		k := kernelAt(cache, filepath.Base(d))
		if k.complete() {
			ks = append(ks, k)
		}
	}
	sort.Slice(ks, func(i, j int) bool { return versionLess(ks[i].Release, ks[j].Release) })
	return ks
}

// versionLess compares kernel releases like 6.1.0-9-amd64 < 6.1.0-56-amd64
// (numbers numerically, the rest as text).
func versionLess(a, b string) bool {
	split := func(s string) []string {
		return strings.FieldsFunc(s, func(r rune) bool { return r == '.' || r == '-' })
	}
	x, y := split(a), split(b)
	for i := 0; i < len(x) && i < len(y); i++ {
		if x[i] == y[i] {
			continue
		}
		var m, n int
		_, e1 := fmt.Sscanf(x[i], "%d", &m)
		_, e2 := fmt.Sscanf(y[i], "%d", &n)
		if e1 == nil && e2 == nil && m != n {
			return m < n
		}
		return x[i] < y[i]
	}
	return len(x) < len(y)
}

// unpackKernel downloads k's package, unpacks the kernel image and the
// modules, runs depmod (the package's postinst would) and renames the result
// into place, so an interrupted run leaves no half-unpacked kernel.
func unpackKernel(ctx context.Context, cache string, k *Kernel, log io.Writer) error {
	// The lock is held: download directories left are from killed runs.
	if old, _ := filepath.Glob(filepath.Join(cache, "fetch-*")); len(old) > 0 {
		for _, d := range old {
			os.RemoveAll(d)
		}
	}
	work, err := os.MkdirTemp(cache, "fetch-")
	if err != nil {
		return fmt.Errorf("creating a download directory: %w", err)
	}
	defer os.RemoveAll(work)

	fmt.Fprintf(log, "vm: apt-get download %s (into %s)\n", k.Package, cache)
	// As root apt drops to the _apt user to download, which cannot write
	// here; downloading as root is what the warning it prints would say.
	dl := exec.CommandContext(ctx, "apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", k.Package)
	dl.Dir = work
	if out, err := dl.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download %s: %w: %s", k.Package, err, strings.TrimSpace(string(out)))
	}
	debs, _ := filepath.Glob(filepath.Join(work, k.Package+"_*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("apt-get download %s left %d .deb files in %s, want 1", k.Package, len(debs), work)
	}

	tree := filepath.Join(work, "tree")
	fmt.Fprintf(log, "vm: dpkg -x %s\n", filepath.Base(debs[0]))
	if out, err := exec.CommandContext(ctx, "dpkg", "-x", debs[0], tree).CombinedOutput(); err != nil {
		return fmt.Errorf("dpkg -x %s: %w: %s", debs[0], err, strings.TrimSpace(string(out)))
	}
	// Only the kernel and its modules are needed.
	if err := os.RemoveAll(filepath.Join(tree, "usr", "share")); err != nil {
		return fmt.Errorf("trimming the unpacked kernel: %w", err)
	}
	os.Remove(filepath.Join(tree, "usr")) // if nothing else is there
	// Packages after bookworm put the modules in usr/lib/modules; depmod
	// -b and modprobe -d look in lib/modules.
	if _, err := os.Stat(filepath.Join(tree, "lib")); os.IsNotExist(err) {
		if err := os.Symlink("usr/lib", filepath.Join(tree, "lib")); err != nil {
			return fmt.Errorf("linking lib to usr/lib in the unpacked kernel: %w", err)
		}
	}
	if _, err := os.Stat(filepath.Join(tree, "boot", "vmlinuz-"+k.Release)); err != nil {
		return fmt.Errorf("%s has no kernel image: %w", k.Package, err)
	}

	depmod, err := lookPathSbin("depmod")
	if err != nil {
		return fmt.Errorf("depmod is needed to index the kernel's modules (apt-get install kmod): %w", err)
	}
	fmt.Fprintf(log, "vm: depmod -b %s %s\n", k.Root, k.Release)
	if out, err := exec.CommandContext(ctx, depmod, "-b", tree, k.Release).CombinedOutput(); err != nil {
		return fmt.Errorf("depmod for %s: %w: %s", k.Release, err, strings.TrimSpace(string(out)))
	}
	if err := os.RemoveAll(k.Root); err != nil { // an incomplete earlier copy
		return fmt.Errorf("removing the incomplete %s: %w", k.Root, err)
	}
	if err := os.Rename(tree, k.Root); err != nil {
		return fmt.Errorf("moving the unpacked kernel into place: %w", err)
	}
	return nil
}

// lookPathSbin finds a tool in PATH or in the sbin directories a non-login
// root shell may lack.
func lookPathSbin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH or the sbin directories", name)
}

// lockFile takes an exclusive flock on path, waiting for it.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening the lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// moduleLoadOrder returns the module files (relative to the modules
// directory) that provide want, each after its dependencies, as modules.dep
// orders them. Modules built into the kernel are left out; a name that is
// neither a module nor built in is an error.
func moduleLoadOrder(modulesDir string, want []string) ([]string, error) {
	deps, order, err := readModulesDep(filepath.Join(modulesDir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	builtin, err := readModuleNames(filepath.Join(modulesDir, "modules.builtin"))
	if err != nil {
		return nil, err
	}
	return loadOrder(deps, order, builtin, want)
}

// loadOrder is moduleLoadOrder on parsed modules.dep and modules.builtin.
func loadOrder(deps map[string][]string, order []string, builtin map[string]bool, want []string) ([]string, error) {
	byName := map[string]string{}
	for _, path := range order {
		byName[moduleName(path)] = path
	}
	var out []string
	seen := map[string]bool{}
	var visit func(path string, stack []string) error
	visit = func(path string, stack []string) error {
		if seen[path] {
			return nil
		}
		for _, s := range stack {
			if s == path {
				return fmt.Errorf("modules.dep has a dependency cycle: %s", strings.Join(append(stack, path), " -> "))
			}
		}
		// modules.dep lists every (transitive) dependency, the ones to
		// load last first; visiting them in reverse keeps that order.
		list := deps[path]
		for i := len(list) - 1; i >= 0; i-- {
			if err := visit(list[i], append(stack, path)); err != nil {
				return err
			}
		}
		seen[path] = true
		out = append(out, path)
		return nil
	}
	for _, name := range want {
		name = strings.ReplaceAll(name, "-", "_")
		path, ok := byName[name]
		if !ok {
			if builtin[name] {
				continue
			}
			return nil, fmt.Errorf("kernel module %s is neither a module nor built in", name)
		}
		if err := visit(path, nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// moduleName turns kernel/net/9p/9pnet_virtio.ko into 9pnet_virtio (module
// names use _ where file names may use -).
func moduleName(path string) string {
	base := filepath.Base(path)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

func readModulesDep(path string) (deps map[string][]string, order []string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the module index: %w", err)
	}
	defer f.Close()
	deps = map[string][]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[mod] = strings.Fields(rest)
		order = append(order, mod)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(deps) == 0 {
		return nil, nil, fmt.Errorf("%s lists no modules", path)
	}
	return deps, order, nil
}

func readModuleNames(path string) (map[string]bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the list of built-in modules: %w", err)
	}
	names := map[string]bool{}
	for _, line := range strings.Fields(string(data)) {
		names[moduleName(line)] = true
	}
	return names, nil
}
