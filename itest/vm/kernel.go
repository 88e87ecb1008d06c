package vm

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Kernel is an unpacked Debian kernel package.
type Kernel struct {
	Version string // e.g. 6.1.0-56-amd64
	Image   string // vmlinuz
	Modules string // lib/modules/VERSION
}

// modulesNeeded are what the VM needs beyond the built-in drivers: the 9p
// root file system over virtio and the scratch disk. Their dependencies are
// read from modules.dep.
var modulesNeeded = []string{"virtio_pci", "9pnet_virtio", "9p", "virtio_blk"}

// fetchKernel makes sure Debian's current stable kernel (the package the
// linux-image-amd64 metapackage depends on) is unpacked in cache, fetching
// it with apt-get download when it is not.
func fetchKernel(cache string, log io.Writer) (*Kernel, error) {
	out, err := exec.Command("apt-cache", "depends", "linux-image-amd64").Output()
	if err != nil {
		return nil, fmt.Errorf("asking apt which kernel linux-image-amd64 is (run apt-get update?): %w", err)
	}
	pkg := ""
	for _, line := range strings.Split(string(out), "\n") {
		if dep, ok := strings.CutPrefix(strings.TrimSpace(line), "Depends: "); ok && strings.HasPrefix(dep, "linux-image-") {
			pkg = dep
			break
		}
	}
	if pkg == "" {
		return nil, fmt.Errorf("linux-image-amd64 depends on no linux-image package: %q", out)
	}
	version := strings.TrimPrefix(pkg, "linux-image-")
	root := filepath.Join(cache, pkg)
	k := &Kernel{
		Version: version,
		Image:   filepath.Join(root, "boot", "vmlinuz-"+version),
		Modules: filepath.Join(root, "lib", "modules", version),
	}
	if _, err := os.Stat(filepath.Join(k.Modules, "modules.dep")); err == nil {
		return k, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "vm: fetching %s with apt-get download\n", pkg)
	dl := exec.Command("apt-get", "download", pkg)
	dl.Dir = cache
	if out, err := dl.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("apt-get download %s: %v: %s", pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(cache, pkg+"_*.deb"))
	if len(debs) == 0 {
		return nil, fmt.Errorf("apt-get download %s left no .deb in %s", pkg, cache)
	}
	fmt.Fprintf(log, "vm: unpacking %s\n", filepath.Base(debs[0]))
	tmp := root + ".tmp"
	os.RemoveAll(tmp)
	if out, err := exec.Command("dpkg", "-x", debs[0], tmp).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("dpkg -x %s: %v: %s", debs[0], err, out)
	}
	if out, err := exec.Command("depmod", "-b", tmp, version).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("depmod for %s (install kmod): %v: %s", version, err, out)
	}
	os.Remove(debs[0])
	if err := os.Rename(tmp, root); err != nil {
		return nil, err
	}
	return k, nil
}

// moduleLoadOrder returns the .ko files (relative to the modules dir) to
// load, dependencies first, skipping what is built in.
func moduleLoadOrder(modulesDir string, want []string) ([]string, error) {
	deps, err := readModulesDep(filepath.Join(modulesDir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	byName := map[string]string{}
	for path := range deps {
		byName[strings.TrimSuffix(filepath.Base(path), ".ko")] = path
	}
	builtin, _ := os.ReadFile(filepath.Join(modulesDir, "modules.builtin"))
	var order []string
	seen := map[string]bool{}
	var visit func(path string)
	visit = func(path string) {
		if seen[path] {
			return
		}
		seen[path] = true
		list := deps[path]
		// modules.dep lists a module's dependencies nearest first.
		for i := len(list) - 1; i >= 0; i-- {
			visit(list[i])
		}
		order = append(order, path)
	}
	for _, name := range want {
		path, ok := byName[name]
		if !ok {
			if strings.Contains(string(builtin), "/"+name+".ko") {
				continue
			}
			return nil, fmt.Errorf("kernel module %s is neither a module nor built in", name)
		}
		visit(path)
	}
	return order, nil
}

func readModulesDep(path string) (map[string][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	defer f.Close()
	deps := map[string][]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[mod] = strings.Fields(rest)
	}
	if len(deps) == 0 {
		return nil, errors.New("empty modules.dep")
	}
	return deps, sc.Err()
}
