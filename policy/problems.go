package policy

import (
	"fmt"
	"sort"
	"strings"
)

// Problem is one thing wrong with a QoS table, located for an editor.
type Problem struct {
	File string
	// Line and Column are 1-based (the column counts bytes); 0 when the
	// problem has no place in the file.
	Line, Column int
	// Key is the TOML path of what is wrong: "vhost[1].dscp",
	// "vhost[0].match[2]", `defaults.io_read_bps."/dev/vda"`, "settings".
	Key string
	// Where names the section in words: `vhost "shop" (vhost[1])`,
	// "[defaults]", "[settings]"; "" for the file as a whole.
	Where string
	// Msg says what is wrong and what is allowed.
	Msg string
	// Warning marks a problem that does not stop the table: a limit on a
	// device this machine lacks, which is skipped here.
	Warning bool
}

// String formats the problem like a compiler message:
//
//	qos.toml:12:8: vhost "shop" (vhost[1]) dscp: unknown DSCP name "AF44"; use ...
//	qos.toml:14:17: warning: [defaults] io_read_bps."/dev/sdb": no block device ...
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", p.Line, p.Column)
	}
	b.WriteString(": ")
	if p.Warning {
		b.WriteString("warning: ")
	}
	field := p.Key
	if p.Where != "" {
		b.WriteString(p.Where)
		// Where already names the section; repeat only the rest of the key.
		_, field = headPath(p.Key)
		if field != "" {
			b.WriteByte(' ')
		}
	}
	b.WriteString(field)
	if p.Where != "" || field != "" {
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Problems is every problem found in one table, in file order. It is the
// error Parse returns; its message has one problem per line. When it is
// an error, its warnings (if any) come with the errors, in file order.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

func (ps Problems) sorted() Problems {
	sort.SliceStable(ps, func(i, j int) bool {
		if ps[i].Line != ps[j].Line {
			return ps[i].Line < ps[j].Line
		}
		return ps[i].Column < ps[j].Column
	})
	return ps
}

// didYouMean suggests the known word closest to a misspelt one, as the end
// of a sentence ("." when nothing is close enough): a common
// other name for it (systemd's, cgroup's), a difference of case or of '-'
// for '_', or at most two typos.
func didYouMean(word string, known []string) string {
	norm := normWord(word)
	if alias := aliasOf(norm); alias != "" {
		for _, k := range known {
			if normWord(k) == alias {
				return fmt.Sprintf("; did you mean %q?", k)
			}
		}
	}
	best, bestDist := "", 3
	for _, k := range known {
		// known may be names as operators wrote them (vhost names), in
		// any case and with '-'.
		if d := editDistance(norm, normWord(k)); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best == "" {
		return "."
	}
	return fmt.Sprintf("; did you mean %q?", best)
}

func normWord(w string) string { return strings.ReplaceAll(strings.ToLower(w), "-", "_") }

// aliasOf maps names people bring from systemd, cgroup files and other
// tools to this table's keys.
func aliasOf(word string) string {
	switch word {
	case "cpuweight", "cpu_shares", "cpu.weight", "cpu.shares", "shares":
		return "cpu_weight"
	case "cpuquota", "cpu_quota", "cpu.max", "quota", "cpu_limit":
		return "cpu_max"
	case "ioweight", "io.weight", "blkio_weight":
		return "io_weight"
	case "ioreadbandwidthmax", "io_read_bandwidth_max", "read_bps":
		return "io_read_bps"
	case "iowritebandwidthmax", "io_write_bandwidth_max", "write_bps":
		return "io_write_bps"
	case "ioreadiopsmax", "io_read_iops_max", "read_iops":
		return "io_read_iops"
	case "iowriteiopsmax", "io_write_iops_max", "write_iops":
		return "io_write_iops"
	case "memorymax", "memory.max", "memory.limit_in_bytes", "memory_limit", "mem_limit", "memory", "pmem", "memorylimit":
		return "memory_max"
	case "memoryhigh", "memory.high", "memory.soft_limit_in_bytes", "memory_soft_limit", "soft_limit":
		return "memory_high"
	case "tasksmax", "pids.max", "pids_max", "max_tasks", "max_pids", "nproc", "max_processes", "processes", "limitnproc":
		return "tasks_max"
	case "tos", "traffic_class", "tclass", "diffserv", "mark":
		return "dscp"
	case "matches", "hosts", "addresses", "address", "names", "server_name", "server_names":
		return "match"
	case "vhosts", "virtualhost", "virtual_host", "host", "server":
		return "vhost"
	case "default", "global":
		return "defaults"
	case "setting", "options":
		return "settings"
	case "cgroup", "parent", "slice":
		return "cgroup_parent"
	case "maxconn", "max_conn", "maxclients", "max_clients", "connections", "connection_limit", "limit_conn",
		"entry_processes", "ep", "qs_srvmaxconn":
		return "max_connections"
	case "max_conn_per_ip", "connections_per_ip", "max_connections_per_client", "per_ip", "qs_srvmaxconnperip":
		return "max_connections_per_ip"
	case "overflow", "over_limit_class", "alternate", "fallback", "on_limit", "when_full":
		return "over_limit"
	case "status", "status_code", "refuse_code", "reject_status", "limit_conn_status":
		return "refuse_status"
	case "retry", "retry_after_seconds":
		return "retry_after"
	case "reject", "deny", "drop", "close":
		return "refuse"
	}
	return ""
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
