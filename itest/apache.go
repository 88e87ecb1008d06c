package itest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// VHost is one IP-based virtual host of a test Apache.
type VHost struct {
	Name string // ServerName and the first field of each access log line
	Addr string // address:port it listens on
}

// Apache is Debian's Apache httpd (prefork MPM) with a configuration made
// for one test: IP-based vhosts, an access log with the serving PID (%P),
// CGIs that report the serving process and its cgroup, a static file.
type Apache struct {
	Dir       string // scratch directory: config, logs, CGIs, documents
	Conf      string
	AccessLog string
	Cmd       *exec.Cmd
	Stderr    *os.File
	exited    chan struct{}
}

// ApacheConfig says what to start.
type ApacheConfig struct {
	VHosts []VHost
	// Prefix is put in front of the apache2 command: nil runs it natively,
	// {vhqos, "run", "--config", FILE, "--"} under vhqos.
	Prefix []string
	// Wrap goes between Prefix and apache2, e.g. {"taskset", "-c", "0"}.
	Wrap []string
	// Servers is StartServers/MinSpareServers (0 means 4).
	Servers int
	// ListenAll, when set (e.g. "8080"), makes Apache listen once on every
	// address at that port instead of once per vhost address, so the
	// listener's address does not tell the vhosts apart.
	ListenAll string
	// Extra is appended to the configuration.
	Extra string
}

const whoamiCGI = `#!/bin/sh
# The process serving this request is the CGI's parent; report it and the
# cgroups it is in while it serves.
printf 'Content-Type: text/plain\r\n\r\n'
echo "pid $PPID"
sed 's/^/cgroup /' /proc/$PPID/cgroup
`

// burnCGI keeps a CPU busy for the number of seconds in its query string.
const burnCGI = `#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
end=$(( $(date +%s) + ${QUERY_STRING:-1} ))
while [ "$(date +%s)" -lt "$end" ]; do i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done; done
echo "pid $PPID"
sed 's/^/cgroup /' /proc/$PPID/cgroup
`

// StartApache writes the configuration into a fresh directory and starts
// Apache in the foreground, in a process group of its own (prefork signals
// its whole group on shutdown). It returns once every vhost accepts
// connections. Stop, or the end of the test run, shuts it down.
func StartApache(ctx context.Context, cfg ApacheConfig) (*Apache, error) {
	dir, err := os.MkdirTemp("", "vhqos-apache-")
	if err != nil {
		return nil, err
	}
	// The CGIs run as www-data.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	a := &Apache{Dir: dir, Conf: filepath.Join(dir, "httpd.conf"), AccessLog: filepath.Join(dir, "access.log")}
	for name, body := range map[string]string{"cgi-bin/whoami": whoamiCGI, "cgi-bin/burn": burnCGI, "htdocs/index.html": "<h1>vhqos test</h1>\n"} {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			return nil, err
		}
	}
	servers := cfg.Servers
	if servers == 0 {
		servers = 4
	}
	var b strings.Builder
	fmt.Fprintf(&b, `ServerRoot /etc/apache2
LoadModule mpm_prefork_module /usr/lib/apache2/modules/mod_mpm_prefork.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule mime_module /usr/lib/apache2/modules/mod_mime.so
LoadModule cgi_module /usr/lib/apache2/modules/mod_cgi.so
LoadModule alias_module /usr/lib/apache2/modules/mod_alias.so
TypesConfig /etc/mime.types
ServerName itest.invalid
User www-data
Group www-data
PidFile %[1]s/httpd.pid
ErrorLog %[1]s/error.log
StartServers %[2]d
MinSpareServers %[2]d
MaxSpareServers %[3]d
MaxRequestWorkers 64
KeepAliveTimeout 5
MaxKeepAliveRequests 0
LogFormat "%%v %%P %%s %%U" vhost_pid
ScriptAlias /cgi-bin/ %[1]s/cgi-bin/
DocumentRoot %[1]s/htdocs
<Directory %[1]s>
    Require all granted
</Directory>
`, dir, servers, servers*2)
	if cfg.ListenAll != "" {
		fmt.Fprintf(&b, "Listen %s\n", cfg.ListenAll)
	}
	for _, v := range cfg.VHosts {
		if cfg.ListenAll == "" {
			fmt.Fprintf(&b, "Listen %s\n", v.Addr)
		}
		fmt.Fprintf(&b, "<VirtualHost %s>\n    ServerName %s\n    CustomLog %s vhost_pid\n</VirtualHost>\n", v.Addr, v.Name, a.AccessLog)
	}
	b.WriteString(cfg.Extra)
	if err := os.WriteFile(a.Conf, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	argv := append(append(append([]string{}, cfg.Prefix...), cfg.Wrap...), "apache2", "-DFOREGROUND", "-f", a.Conf)
	a.Stderr, _ = os.Create(filepath.Join(dir, "stderr.log"))
	a.Cmd = exec.Command(argv[0], argv[1:]...)
	a.Cmd.Stdout, a.Cmd.Stderr = a.Stderr, a.Stderr
	a.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := a.Cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %v: %w", argv, err)
	}
	exited := make(chan struct{})
	a.exited = exited
	go func() { a.Cmd.Wait(); close(exited) }()
	for _, v := range cfg.VHosts {
		if err := waitListening(ctx, v.Addr, exited); err != nil {
			a.Stop()
			return nil, fmt.Errorf("%w; output:\n%s", err, a.Output())
		}
	}
	return a, nil
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

// Output is what Apache (and vhqos, when it is the prefix) printed.
func (a *Apache) Output() string {
	data, _ := os.ReadFile(filepath.Join(a.Dir, "stderr.log"))
	errLog, _ := os.ReadFile(filepath.Join(a.Dir, "error.log"))
	return string(data) + string(errLog)
}

// Stop sends SIGTERM to the command (vhqos forwards it to Apache) and waits
// for it; after 30 s it kills the process group. It returns the exit state.
func (a *Apache) Stop() *os.ProcessState {
	a.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(30 * time.Second):
		syscall.Kill(-a.Cmd.Process.Pid, syscall.SIGKILL)
		<-a.exited
	}
	return a.Cmd.ProcessState
}

// Exited is closed when the command has exited.
func (a *Apache) Exited() <-chan struct{} { return a.exited }

// Remove deletes the scratch directory.
func (a *Apache) Remove() { os.RemoveAll(a.Dir) }
