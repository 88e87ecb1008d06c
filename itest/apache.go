package itest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// VHost is one virtual host of a test Apache. Several vhosts on one Addr
// are told apart by name, as Apache does.
type VHost struct {
	Name string // ServerName and the first field of each access log line
	Addr string // address:port it listens on, "127.0.0.2:8080", "[::1]:8080"
	// Aliases are more names it answers to (ServerAlias), e.g. "*.example".
	Aliases []string
}

// Apache is Debian's Apache httpd (prefork MPM) with a configuration made
// for one test: IP-based vhosts, an access log with the serving PID (%P),
// CGIs that report the serving process and its cgroup, a static file.
type Apache struct {
	Dir       string // scratch directory: config, logs, CGIs, documents
	Conf      string // the configuration file (Dir/httpd.conf)
	AccessLog string // every vhost's requests; see Log
	Cmd       *exec.Cmd
	Stderr    *os.File
	exited    chan struct{}
	stopOnce  sync.Once
}

// ApacheConfig says what to start.
//
// The server's documents, the same for every vhost:
//
//	/index.html       a small static file (IndexHTML)
//	/cgi-bin/whoami   reports, one per line: "pid P" (the serving Apache
//	                  child: the CGI's parent), "cgroup L" for each line L of
//	                  /proc/P/cgroup, "cgi-pid"/"cgi-cgroup" the same for the
//	                  CGI itself, "local A:P" and "remote A:P" (the
//	                  connection's ends as Apache saw them); see ParseWhoami
//	/cgi-bin/burn?N   keeps a CPU busy for N seconds (default 1), then
//	                  answers like whoami
//	/cgi-bin/hold?G   holds its connection open until the test opens the
//	                  gate G (OpenGate; G is letters, digits and "-"), then
//	                  answers like whoami; it gives up after 10 minutes.
//	                  Held counts the CGIs waiting at a gate: requests that
//	                  are being served at once, in the server's own view
type ApacheConfig struct {
	VHosts []VHost
	// Prefix is put in front of the apache2 command: nil runs it natively,
	// {vhqos, "run", "--config", FILE, "--"} under vhqos.
	Prefix []string
	// Wrap goes between Prefix and apache2, e.g. {"taskset", "-c", "0"}.
	Wrap []string
	// Servers is StartServers/MinSpareServers (0 means 4).
	Servers int
	// MPM is Apache's multi-processing module: "prefork" (the default
	// here), or "worker" or "event" (Debian's default), whose child
	// processes serve on ThreadsPerChild threads each (Threads, 0 means
	// 8) and whose CGIs are forked by mod_cgid's daemon, not by the
	// serving child (mod_cgi is for prefork).
	MPM     string
	Threads int
	// ListenAll, when set (e.g. "8080"), makes Apache listen once on every
	// address at that port instead of once per vhost address, so the
	// listener's address does not tell the vhosts apart.
	ListenAll string
	// Lua serves /lua/whoami and /lua/burn?G from mod_lua, handlers that
	// run in the serving thread and report its cgroup (apache_lua.go).
	Lua bool
	// Extra is appended to the configuration.
	Extra string
	// TLSAddr, when set, serves every vhost over HTTPS too, on this
	// address:port, with the certificate and key in the PEM files
	// CertFile and KeyFile (mod_ssl; MakeCertificate makes a pair).
	TLSAddr, CertFile, KeyFile string
}

// mpmConfig returns the LoadModule lines of cfg's MPM and its CGI module,
// and the directives that size its processes.
func mpmConfig(cfg ApacheConfig, dir string, servers int) (modules, procs string, err error) {
	const modDir = "/usr/lib/apache2/modules/"
	switch cfg.MPM {
	case "", "prefork":
		return "LoadModule mpm_prefork_module " + modDir + "mod_mpm_prefork.so\n" +
				"LoadModule cgi_module " + modDir + "mod_cgi.so\n",
			fmt.Sprintf("StartServers %d\nMinSpareServers %d\nMaxSpareServers %d\nMaxRequestWorkers 64\n", servers, servers, servers*2), nil
	case "worker", "event":
		threads := cfg.Threads
		if threads == 0 {
			threads = 8
		}
		// Spare threads are counted over all children: fixing both
		// bounds at the total keeps exactly Servers children.
		total := servers * threads
		return fmt.Sprintf("LoadModule mpm_%[1]s_module %[2]smod_mpm_%[1]s.so\nLoadModule cgid_module %[2]smod_cgid.so\nScriptSock %[3]s/cgisock\n", cfg.MPM, modDir, dir),
			fmt.Sprintf("StartServers %d\nServerLimit %d\nThreadsPerChild %d\nMinSpareThreads %d\nMaxSpareThreads %d\nMaxRequestWorkers %d\n",
				servers, servers, threads, total, total, total), nil
	}
	return "", "", fmt.Errorf("unknown Apache MPM %q: use prefork, worker or event", cfg.MPM)
}

// IndexHTML is the content of /index.html.
const IndexHTML = "<h1>vhqos test</h1>\n"

// report is the end of both CGIs: who served, from which cgroups, on which
// connection.
const report = `echo "pid $PPID"
sed 's/^/cgroup /' /proc/$PPID/cgroup
echo "cgi-pid $$"
sed 's/^/cgi-cgroup /' /proc/$$/cgroup
addr() { case "$1" in *:*) echo "[$1]:$2" ;; *) echo "$1:$2" ;; esac; }
echo "local $(addr "$SERVER_ADDR" "$SERVER_PORT")"
echo "remote $(addr "$REMOTE_ADDR" "$REMOTE_PORT")"
`

// The process serving the request is the CGI's parent (mod_cgi forks and
// execs the CGI from the Apache child that accepted the connection).
const whoamiCGI = `#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
` + report

// burnCGI keeps a CPU busy for the number of seconds in its query string.
const burnCGI = `#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
end=$(( $(date +%s) + ${QUERY_STRING:-1} ))
while [ "$(date +%s)" -lt "$end" ]; do i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done; done
` + report

// holdCGI waits for its gate, the file G in the scratch directory's gates/
// (@GATES@ is replaced by that directory), polling: mod_cgi gives a CGI no
// way to be woken. The poll costs one sleep(1) a fifth of a second per
// held request.
const holdCGI = `#!/bin/sh
case "$QUERY_STRING" in
''|*[!A-Za-z0-9-]*)
	printf 'Status: 400 Bad Request\r\nContent-Type: text/plain\r\n\r\nhold: name a gate: /cgi-bin/hold?G, G letters, digits and -\n'
	exit 0 ;;
esac
i=0
while [ ! -e "@GATES@/$QUERY_STRING" ] && [ $i -lt 3000 ]; do sleep 0.2; i=$((i+1)); done
printf 'Content-Type: text/plain\r\n\r\n'
` + report

// StartApache writes the configuration into a fresh directory and starts
// Apache in the foreground, in a process group of its own (prefork signals
// its whole group on shutdown). It returns once Apache is up (its error log
// says so) and every vhost accepts connections. The caller stops it (Stop) and removes the directory
// (Remove); tests use RunApache, which does both.
func StartApache(ctx context.Context, cfg ApacheConfig) (_ *Apache, err error) {
	dir, err := scratchDir()
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	a := &Apache{Dir: dir, Conf: filepath.Join(dir, "httpd.conf"), AccessLog: filepath.Join(dir, "access.log")}
	// The CGIs run as www-data: everything is world-readable, the CGIs
	// world-executable; logs and the pid file are opened by root before
	// Apache drops privileges.
	gates := filepath.Join(dir, "gates")
	if err := os.Mkdir(gates, 0o755); err != nil {
		return nil, err
	}
	for name, body := range map[string]string{"cgi-bin/whoami": whoamiCGI, "cgi-bin/burn": burnCGI, "htdocs/index.html": IndexHTML,
		"cgi-bin/hold": strings.ReplaceAll(holdCGI, "@GATES@", gates)} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			return nil, err
		}
	}
	servers := cfg.Servers
	if servers == 0 {
		servers = 4
	}
	mpm, procs, err := mpmConfig(cfg, dir, servers)
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	// Modules not listed are compiled in (apache2 -l: core, so, watchdog,
	// http, log_config, logio, version, unixd).
	fmt.Fprintf(&b, `ServerRoot /etc/apache2
%[2]sLoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule mime_module /usr/lib/apache2/modules/mod_mime.so
LoadModule alias_module /usr/lib/apache2/modules/mod_alias.so
LoadModule dir_module /usr/lib/apache2/modules/mod_dir.so
TypesConfig /etc/mime.types
ServerName itest.invalid
# SERVER_PORT is the port the connection came to, not the Host header's
# (the default when it names none is 80).
UseCanonicalPhysicalPort On
User www-data
Group www-data
DefaultRuntimeDir %[1]s
PidFile %[1]s/httpd.pid
ErrorLog %[1]s/error.log
%[3]sKeepAliveTimeout 5
MaxKeepAliveRequests 0
LogFormat "%%v %%P %%s %%U %%a %%{remote}p %%A %%{local}p" vhost_pid
ScriptAlias /cgi-bin/ %[1]s/cgi-bin/
DocumentRoot %[1]s/htdocs
DirectoryIndex index.html
<Directory %[1]s>
    Require all granted
</Directory>
`, dir, mpm, procs)
	listening := map[string]bool{}
	listen := func(addr string) {
		if !listening[addr] {
			listening[addr] = true
			fmt.Fprintf(&b, "Listen %s\n", addr)
		}
	}
	if cfg.ListenAll != "" {
		listen(cfg.ListenAll)
	}
	if cfg.TLSAddr != "" {
		b.WriteString("LoadModule ssl_module /usr/lib/apache2/modules/mod_ssl.so\n")
		listen(cfg.TLSAddr)
	}
	for _, v := range cfg.VHosts {
		if cfg.ListenAll == "" {
			listen(v.Addr)
		}
		aliases := ""
		if len(v.Aliases) > 0 {
			aliases = "\n    ServerAlias " + strings.Join(v.Aliases, " ")
		}
		fmt.Fprintf(&b, "<VirtualHost %s>\n    ServerName %s%s\n    CustomLog %s vhost_pid\n</VirtualHost>\n", v.Addr, v.Name, aliases, a.AccessLog)
		if cfg.TLSAddr != "" {
			fmt.Fprintf(&b, "<VirtualHost %s>\n    ServerName %s%s\n    CustomLog %s vhost_pid\n    SSLEngine on\n    SSLCertificateFile %s\n    SSLCertificateKeyFile %s\n</VirtualHost>\n",
				cfg.TLSAddr, v.Name, aliases, a.AccessLog, cfg.CertFile, cfg.KeyFile)
		}
	}
	if cfg.Lua {
		lua, err := luaConfig(dir)
		if err != nil {
			return nil, err
		}
		b.WriteString(lua)
	}
	b.WriteString(cfg.Extra)
	if err := os.WriteFile(a.Conf, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	argv := append(append(append([]string{}, cfg.Prefix...), cfg.Wrap...), "apache2", "-DFOREGROUND", "-f", a.Conf)
	if a.Stderr, err = os.Create(filepath.Join(dir, "stderr.log")); err != nil {
		return nil, err
	}
	a.Cmd = exec.Command(argv[0], argv[1:]...)
	a.Cmd.Stdout, a.Cmd.Stderr = a.Stderr, a.Stderr
	a.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := a.Cmd.Start(); err != nil {
		a.Stderr.Close()
		return nil, fmt.Errorf("starting %v: %w", argv, err)
	}
	exited := make(chan struct{})
	a.exited = exited
	go func() { a.Cmd.Wait(); close(exited) }()
	// Apache listens before it handles signals: a SIGTERM before
	// "resuming normal operations" (prefork's AH00163, worker's AH00292,
	// event's AH00489, logged once its signal handlers are set and its
	// children started) kills it outright.
	if err := waitLogged(ctx, filepath.Join(dir, "error.log"), "resuming normal operations", exited); err != nil {
		a.Stop()
		a.KillLeftovers()
		out := a.Output()
		a.Remove()
		return nil, fmt.Errorf("%w; output:\n%s", err, out)
	}
	addrs := []string{cfg.TLSAddr}
	for _, v := range cfg.VHosts {
		addrs = append(addrs, v.Addr)
	}
	for _, addr := range addrs {
		if addr == "" {
			continue
		}
		if err := waitListening(ctx, addr, exited); err != nil {
			a.Stop()
			a.KillLeftovers()
			out := a.Output()
			a.Remove()
			return nil, fmt.Errorf("%w; output:\n%s", err, out)
		}
	}
	return a, nil
}

// MakeCertificate writes a self-signed certificate for names, and its key,
// into dir with openssl, and returns the two PEM files.
func MakeCertificate(dir string, names ...string) (cert, key string, err error) {
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	san := make([]string, len(names))
	for i, n := range names {
		san[i] = "DNS:" + n
	}
	out, err := exec.Command("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
		"-keyout", key, "-out", cert, "-subj", "/CN="+names[0], "-addext", "subjectAltName="+strings.Join(san, ","), "-addext", "basicConstraints=critical,CA:FALSE").CombinedOutput()
	if err != nil {
		return "", "", fmt.Errorf("making a certificate with openssl: %w: %s", err, out)
	}
	// Apache reads the key as root before dropping privileges; the
	// scratch directory is world-readable, the key need not be.
	return cert, key, os.Chmod(key, 0o600)
}

// RunApache is StartApache for a test: it fails the test if Apache does not
// come up and, when the test ends, stops it (Stop), fails the test if any
// of its processes (or a process started with its configuration) is still
// alive, kills those, logs Apache's output if the test failed and removes
// the directory.
func RunApache(t testing.TB, cfg ApacheConfig) *Apache {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a, err := StartApache(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.Stop()
		if left := a.KillLeftovers(); len(left) > 0 {
			t.Errorf("processes left behind after the server stopped (now killed): %s", strings.Join(left, "; "))
		}
		if t.Failed() {
			t.Logf("%s said:\n%s", a.Cmd.Args[0], a.Output())
		}
		a.Remove()
	})
	return a
}

// scratchDir makes a directory that www-data can reach: in $TMPDIR if
// every directory above it lets others through, otherwise in /tmp.
func scratchDir() (string, error) {
	dir, err := os.MkdirTemp("", "vhqos-apache-")
	if err != nil {
		return "", err
	}
	if !othersCanReach(filepath.Dir(dir)) {
		os.Remove(dir)
		if dir, err = os.MkdirTemp("/tmp", "vhqos-apache-"); err != nil {
			return "", err
		}
	}
	return dir, os.Chmod(dir, 0o755)
}

func othersCanReach(dir string) bool {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		if d == filepath.Dir(d) {
			return true
		}
	}
}

func waitLogged(ctx context.Context, file, what string, exited <-chan struct{}) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if data, _ := os.ReadFile(file); bytes.Contains(data, []byte(what)) {
			return nil
		}
		select {
		case <-exited:
			return errors.New("apache exited before it was up")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not in %s after 60 s", what, file)
}

func waitListening(ctx context.Context, addr string, exited <-chan struct{}) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return errors.New("apache exited before listening on " + addr)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("nothing listens on %s after 60 s", addr)
}

// Output is what Apache (and vhqos, when it is the prefix) printed, then
// Apache's error log.
func (a *Apache) Output() string {
	data, _ := os.ReadFile(filepath.Join(a.Dir, "stderr.log"))
	errLog, _ := os.ReadFile(filepath.Join(a.Dir, "error.log"))
	return string(data) + string(errLog)
}

// Stop sends SIGTERM to the command (vhqos forwards it to Apache) and waits
// for it; after 30 s it kills the command's process group. It returns the
// exit state. Calling it again only returns the state.
func (a *Apache) Stop() *os.ProcessState {
	a.stopOnce.Do(func() {
		a.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.exited:
		case <-time.After(30 * time.Second):
			syscall.Kill(-a.Cmd.Process.Pid, syscall.SIGKILL)
			<-a.exited
		}
	})
	<-a.exited
	return a.Cmd.ProcessState
}

// Exited is closed when the command has exited.
func (a *Apache) Exited() <-chan struct{} { return a.exited }

// Leftovers lists the live processes whose command line names this
// Apache's directory (Apache's own processes, its CGIs, a vhqos running
// it) and their descendants, as "PID command line". After Stop there
// should be none.
func (a *Apache) Leftovers() []string { return processesNaming(a.Dir) }

// KillLeftovers kills what Leftovers lists with SIGKILL, waits (up to 10
// s) until they are gone, so their ports are free, and returns the list.
func (a *Apache) KillLeftovers() []string { return killProcessesNaming(a.Dir) }

// processesNaming lists the live processes whose command line, or an
// ancestor's, contains tag, as "PID command line".
func processesNaming(tag string) []string {
	type proc struct {
		ppid    int
		cmdline string
	}
	procs := map[int]proc{}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, _ := strconv.Atoi(filepath.Base(d))
		cmdline, err := os.ReadFile(d + "/cmdline")
		stat, err2 := os.ReadFile(d + "/stat")
		if err != nil || err2 != nil || len(cmdline) == 0 || pid == os.Getpid() {
			continue // gone, a zombie, a kernel thread, or this test
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		procs[pid] = proc{ppid, strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))}
	}
	var out []string
	for pid, p := range procs {
		for q, seen := p, 0; seen < 64; q, seen = procs[q.ppid], seen+1 {
			if strings.Contains(q.cmdline, tag) {
				out = append(out, strconv.Itoa(pid)+" "+p.cmdline)
				break
			}
			if _, ok := procs[q.ppid]; !ok {
				break
			}
		}
	}
	return out
}

// killProcessesNaming kills what processesNaming(tag) lists with SIGKILL,
// waits (up to 10 s) until they are gone and returns the list.
func killProcessesNaming(tag string) []string {
	left := processesNaming(tag)
	if len(left) == 0 {
		return nil
	}
	for _, l := range left {
		pid, _ := strconv.Atoi(strings.Fields(l)[0])
		syscall.Kill(pid, syscall.SIGKILL)
	}
	for deadline := time.Now().Add(10 * time.Second); len(processesNaming(tag)) > 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	return left
}

// Remove deletes the scratch directory.
func (a *Apache) Remove() {
	if a.Stderr != nil {
		a.Stderr.Close()
	}
	os.RemoveAll(a.Dir)
}

// LogEntry is one line of the access log.
type LogEntry struct {
	VHost  string // the vhost's ServerName
	PID    int    // the process that served the request (%P)
	Status int
	Path   string
	Client netip.AddrPort // the client's end of the connection
	// Local is the server's end: a client port is unique only per
	// server address, the kernel reusing it toward others.
	Local netip.AddrPort
}

// Log reads the access log. Apache writes a request's line after sending
// the answer but before closing the connection: once Get has returned, its
// request is in the log; after a kept-alive request it may lag a little.
func (a *Apache) Log() ([]LogEntry, error) {
	data, err := os.ReadFile(a.AccessLog)
	if err != nil {
		return nil, err
	}
	var out []LogEntry
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 8 {
			return out, fmt.Errorf("access log line %q: want 8 fields", line)
		}
		e := LogEntry{VHost: f[0], Path: f[3]}
		e.PID, _ = strconv.Atoi(f[1])
		e.Status, _ = strconv.Atoi(f[2])
		var err error
		if e.Client, err = logAddrPort(f[4], f[5]); err == nil {
			e.Local, err = logAddrPort(f[6], f[7])
		}
		if e.PID == 0 || err != nil {
			return out, fmt.Errorf("access log line %q: bad PID, address or port", line)
		}
		out = append(out, e)
	}
	return out, nil
}

// logAddrPort parses an access log's address and port fields.
func logAddrPort(addr, port string) (netip.AddrPort, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return netip.AddrPort{}, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	return netip.AddrPortFrom(a.Unmap(), uint16(p)), err
}

// OpenGate lets the hold CGIs waiting at gate g answer (within their poll
// interval, 0.2 s) and any that come later answer at once.
func (a *Apache) OpenGate(g string) error { return openGate(a.Dir, g) }

// Held counts the hold CGIs of this Apache waiting at gate g (or answering,
// if it has just been opened): each is a request being served, its
// connection open in an Apache child.
func (a *Apache) Held(g string) int {
	script := []byte(filepath.Join(a.Dir, "cgi-bin", "hold") + "\x00")
	query := []byte("\x00QUERY_STRING=" + g + "\x00")
	ppids := map[int]int{}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		cmdline, err := os.ReadFile(d + "/cmdline")
		if err != nil || !bytes.Contains(cmdline, script) {
			continue
		}
		environ, err := os.ReadFile(d + "/environ")
		stat, err2 := os.ReadFile(d + "/stat")
		if err != nil || err2 != nil || !bytes.Contains(append([]byte{0}, environ...), query) {
			continue
		}
		// pid (comm) state ppid ...
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) < 2 {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(d))
		ppids[pid], _ = strconv.Atoi(f[1])
	}
	n := 0
	for _, ppid := range ppids {
		// A copy forked to run sleep(1) is not another request.
		if _, forked := ppids[ppid]; !forked {
			n++
		}
	}
	return n
}
