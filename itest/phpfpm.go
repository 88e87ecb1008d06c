package itest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// PHPFPM is Debian's php-fpm with one static pool made for a test, on a TCP
// address. Its documents, in WWW:
//
//	/whoami.php      reports, one per line: "pid P" (the worker that runs
//	                 the script), "cgroup L" for each line L of
//	                 /proc/self/cgroup (ParseWhoami reads both), "host H"
//	                 and "server-name S" (the HTTP_HOST and SERVER_NAME
//	                 params it got)
//	/burn.php?gate=G keeps a CPU busy until the test opens the gate G
//	                 (OpenGate; G is letters, digits and "-"), then answers
//	                 like whoami.php; it gives up after 10 minutes. At its
//	                 start it leaves a mark that Burners reads.
type PHPFPM struct {
	*Daemon
	// Addr is where the pool listens: a TCP "127.0.0.1:9000", or the path
	// of its unix socket.
	Addr string
	Pool string // the pool's name: its workers are "php-fpm: pool NAME"
	WWW  string // the document root (Dir/www)
}

// PHPFPMConfig says what to start.
type PHPFPMConfig struct {
	Addr string // TCP address:port of the pool; "" is 127.0.0.1:9000
	// Unix puts the pool on a unix socket instead, php-fpm.sock in its
	// directory, owned by www-data as Debian's www.conf has it.
	Unix    bool
	Workers int // pm.max_children of the static pool; 0 means 4
	// Prefix is put in front of the command: nil runs php-fpm natively,
	// {vhqos, "run", "--config", FILE, "--"} under vhqos.
	Prefix []string
	// Wrap goes between Prefix and php-fpm, e.g. {"taskset", "-c", "0"}.
	Wrap []string
}

const whoamiPHP = `<?php
header('Content-Type: text/plain');
echo "pid ", getmypid(), "\n";
foreach (file('/proc/self/cgroup', FILE_IGNORE_NEW_LINES) as $line) {
	echo "cgroup $line\n";
}
echo "host ", $_SERVER['HTTP_HOST'] ?? '', "\n";
echo "server-name ", $_SERVER['SERVER_NAME'] ?? '', "\n";
`

// burnPHP spins until its gate, the file G in @DIR@/gates, exists. Its mark
// @DIR@/started/G.HOST.PID tells the test which worker burns for which
// site (the HTTP_HOST it got) from when it starts.
const burnPHP = `<?php
$gate = $_GET['gate'] ?? '';
if (!preg_match('/^[A-Za-z0-9-]+$/', $gate)) {
	http_response_code(400);
	header('Content-Type: text/plain');
	echo "burn: name a gate: burn.php?gate=G, G letters, digits and -\n";
	exit;
}
$host = preg_replace('/[^a-z0-9.-]/', '_', strtolower($_SERVER['HTTP_HOST'] ?? ''));
touch("@DIR@/started/$gate.$host." . getmypid());
$end = time() + 600;
while (!file_exists("@DIR@/gates/$gate") && time() < $end) {
	for ($i = 0; $i < 100000; $i++) {
	}
	clearstatcache();
}
include __DIR__ . '/whoami.php';
`

// phpFPMBinary is Debian's php-fpm: /usr/sbin/php-fpmX.Y (the php-fpm
// package depends on the current version's).
func phpFPMBinary() (string, error) {
	found, _ := filepath.Glob("/usr/sbin/php-fpm*")
	if len(found) == 0 {
		return "", fmt.Errorf("no /usr/sbin/php-fpm* (make deps installs Debian's php-fpm)")
	}
	sort.Strings(found)
	return found[len(found)-1], nil
}

// StartPHPFPM writes the configuration and the scripts into a fresh
// directory and starts php-fpm in the foreground (--nodaemonize). It
// returns once php-fpm has started its workers and listens. The caller
// stops it and removes the directory; tests use RunPHPFPM.
func StartPHPFPM(ctx context.Context, cfg PHPFPMConfig) (*PHPFPM, error) {
	bin, err := phpFPMBinary()
	if err != nil {
		return nil, err
	}
	dir, err := scratchDir()
	if err != nil {
		return nil, err
	}
	p := &PHPFPM{Addr: cfg.Addr, Pool: filepath.Base(dir), WWW: filepath.Join(dir, "www")}
	listen := ""
	switch {
	case cfg.Unix:
		p.Addr = filepath.Join(dir, "php-fpm.sock")
		// nginx's workers (www-data) connect; php-fpm's default owner is
		// the master's user, root.
		listen = "listen.owner = www-data\nlisten.group = www-data\nlisten.mode = 0660\n"
	case p.Addr == "":
		p.Addr = "127.0.0.1:9000"
	}
	workers := cfg.Workers
	if workers == 0 {
		workers = 4
	}
	// The workers run as www-data: the scripts are world-readable, the
	// marks' directory world-writable.
	for name, mode := range map[string]os.FileMode{"www": 0o755, "gates": 0o755, "started": 0o777} {
		if err := os.Mkdir(filepath.Join(dir, name), mode); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		if err := os.Chmod(filepath.Join(dir, name), mode); err != nil { // past the umask
			os.RemoveAll(dir)
			return nil, err
		}
	}
	// max_execution_time applies to FPM (30 s in Debian's php.ini): a
	// burner runs until its gate opens, however long a busy machine takes.
	conf := fmt.Sprintf(`[global]
pid = %[1]s/php-fpm.pid
error_log = %[1]s/php-fpm.log
daemonize = no

[%[2]s]
user = www-data
group = www-data
listen = %[3]s
listen.backlog = 511
pm = static
pm.max_children = %[4]d
request_terminate_timeout = 0
php_admin_value[max_execution_time] = 0
catch_workers_output = yes
%[5]s`, dir, p.Pool, p.Addr, workers, listen)
	files := map[string]string{
		"php-fpm.conf":   conf,
		"www/whoami.php": whoamiPHP,
		"www/burn.php":   strings.ReplaceAll(burnPHP, "@DIR@", dir),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	argv := append(append([]string{}, cfg.Wrap...), bin, "--nodaemonize", "--fpm-config", filepath.Join(dir, "php-fpm.conf"))
	p.Daemon, err = StartDaemon(ctx, DaemonConfig{
		Name: "php-fpm", Dir: dir, Prefix: cfg.Prefix, Argv: argv,
		// Logged once every worker of a static pool has been forked.
		ReadyLog: "php-fpm.log", ReadyText: "ready to handle connections",
		Listen: tcpOnly(p.Addr), Logs: []string{"php-fpm.log"},
		// The master's title names the configuration file, in Dir; the
		// workers' only the pool, named after Dir.
		Tag: p.Pool,
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// RunPHPFPM is StartPHPFPM for a test, stopped and checked like RunDaemon.
func RunPHPFPM(t testing.TB, cfg PHPFPMConfig) *PHPFPM {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, err := StartPHPFPM(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.stopAtEnd(t)
	return p
}

// Pass is where a front server sends FastCGI to, as nginx's fastcgi_pass
// and Apache's "proxy:fcgi://" take it: "127.0.0.1:9000" or
// "unix:/path/php-fpm.sock".
func (p *PHPFPM) Pass() string {
	if strings.HasPrefix(p.Addr, "/") {
		return "unix:" + p.Addr
	}
	return p.Addr
}

// tcpOnly is addr in a list if it is a TCP address, else nil: the wait for
// a listener (DaemonConfig.Listen) knows TCP only, and php-fpm logs that it
// is ready only after it has bound its sockets anyway.
func tcpOnly(addr string) []string {
	if strings.HasPrefix(addr, "/") {
		return nil
	}
	return []string{addr}
}

// IsWorker reports whether pid is one of this pool's worker processes.
func (p *PHPFPM) IsWorker(pid int) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.TrimRight(string(cmdline), "\x00 ") == "php-fpm: pool "+p.Pool
}

// OpenGate lets the burners at gate g answer (at their next check, many
// times a second) and any that come later answer at once.
func (p *PHPFPM) OpenGate(g string) error {
	if err := os.WriteFile(filepath.Join(p.Dir, "gates", g), nil, 0o644); err != nil {
		return fmt.Errorf("opening gate %s: %w", g, err)
	}
	return nil
}

// Burners lists the workers that started burning at gate g, by the
// HTTP_HOST they were asked for (lower case).
func (p *PHPFPM) Burners(g string) (map[string][]int, error) {
	marks, err := os.ReadDir(filepath.Join(p.Dir, "started"))
	if err != nil {
		return nil, fmt.Errorf("reading the burners' marks: %w", err)
	}
	out := map[string][]int{}
	for _, m := range marks {
		// G.HOST.PID; HOST may hold dots.
		rest, ok := strings.CutPrefix(m.Name(), g+".")
		i := strings.LastIndexByte(rest, '.')
		if !ok || i < 0 {
			continue
		}
		pid, err := strconv.Atoi(rest[i+1:])
		if err != nil {
			continue
		}
		out[rest[:i]] = append(out[rest[:i]], pid)
	}
	return out, nil
}
