package policy

import (
	"fmt"
	"strconv"
	"strings"
)

// Admission is a class's connection caps: how many connections it may
// have open at once, in all and per client address, and what a connection
// over a cap gets instead. It is what CloudLinux LVE calls entry processes
// (answered with 508), Apache mod_qos QS_SrvMaxConn and QS_SrvMaxConnPerIP,
// nginx limit_conn; an alternate class when the first is full is the
// dscp-flows patent's. REFERENCE.md says what counts as a connection.
type Admission struct {
	// MaxConnections is how many connections of the class may be open at
	// once, 1..1000000; 0 means no cap.
	MaxConnections int
	// MaxConnectionsPerIP is the same per client address (an IPv4
	// address, or an IPv6 /64), 1..1000000; 0 means no cap.
	MaxConnectionsPerIP int
	// OverLimit is what a connection over either cap gets: OverLimitRefuse,
	// DefaultsName, or a vhost's Name as written in its name key (whatever
	// case over_limit used). "" when the class has no cap.
	OverLimit string
	// RefuseStatus is the HTTP status of a refusal, 400..599:
	// DefaultRefuseStatus unless written on a class that refuses.
	RefuseStatus int
	// RetryAfter is the Retry-After of a refusal in seconds (RFC 9110
	// section 10.2.3), 0..86400; 0 leaves the header out.
	// DefaultRetryAfter unless written on a class that refuses.
	RetryAfter int
}

// Capped reports whether the class has a cap, and so whether its
// connections are counted at all.
func (a Admission) Capped() bool { return a.MaxConnections > 0 || a.MaxConnectionsPerIP > 0 }

// Refuses reports whether a connection over the class's caps is refused
// rather than sent to another class.
func (a Admission) Refuses() bool { return a.Capped() && a.OverLimit == OverLimitRefuse }

// Values and defaults of the admission keys.
const (
	// OverLimitRefuse is the over_limit that refuses a connection over a
	// cap, and the one a capped class gets when over_limit is absent.
	OverLimitRefuse = "refuse"
	// DefaultRefuseStatus is 503 Service Unavailable (RFC 9110 section
	// 15.6.4), which says the condition is temporary.
	DefaultRefuseStatus = 503
	// DefaultRetryAfter is in seconds.
	DefaultRetryAfter = 1

	maxConnectionCap = 1000000
	minRefuseStatus  = 400
	maxRefuseStatus  = 599
	// maxRetryAfter is a day: a client told to come back later than that
	// has been told no.
	maxRetryAfter = 86400
)

func isAdmissionKey(k string) bool {
	switch k {
	case "max_connections", "max_connections_per_ip", "over_limit", "refuse_status", "retry_after":
		return true
	}
	return false
}

// Class returns the class named name: DefaultsName gives the defaults, a
// vhost's name its vhost, both in any case, as over_limit names them. It
// returns nil when no class has the name. It allocates nothing for a name
// in lower case.
func (t *Table) Class(name string) *Class {
	if strings.EqualFold(name, DefaultsName) {
		return &t.Defaults
	}
	if t.vhostIndex != nil {
		if i, ok := t.vhostIndex[strings.ToLower(name)]; ok {
			return &t.VHosts[i]
		}
		return nil
	}
	// A Table built by hand has no index.
	for i := range t.VHosts {
		if t.VHosts[i].Name != "" && strings.EqualFold(t.VHosts[i].Name, name) {
			return &t.VHosts[i]
		}
	}
	return nil
}

// newClass is a class before its keys are read. The admission fields hold
// "not written" (a RefuseStatus of 0, a RetryAfter of -1) until
// admissions fills in the defaults: written-as-the-default and absent
// differ in whether the key has an effect to warn about.
func newClass() Class {
	return Class{DSCP: -1, Admission: Admission{RetryAfter: -1}}
}

// admissionKey reads one of the admission keys of a class. over_limit is
// kept as written; admissions resolves it once every class is known.
func (p *parser) admissionKey(s scope, key, k string, v any, a *Admission) {
	switch k {
	// A cap with a problem is -1 until admissions: the class meant to
	// have a cap, so what needs one is not reported as lacking it.
	case "max_connections":
		a.MaxConnections = -1
		if n, ok := p.intIn(s, key, v, 1, maxConnectionCap, "connections of this class open at once"); ok {
			a.MaxConnections = int(n)
		}
	case "max_connections_per_ip":
		a.MaxConnectionsPerIP = -1
		if n, ok := p.intIn(s, key, v, 1, maxConnectionCap, "connections of this class open at once from one client address, an IPv6 client's /64"); ok {
			a.MaxConnectionsPerIP = int(n)
		}
	case "over_limit":
		str, ok := v.(string)
		switch {
		case !ok:
			p.valueProblem(s, key, "is %s; write \"refuse\", \"default\" or the name of a vhost, e.g. over_limit = \"default\"", typeName(v))
		case str == "":
			p.valueProblem(s, key, "is empty; write \"refuse\", \"default\" or the name of a vhost")
		default:
			a.OverLimit = str
		}
	case "refuse_status":
		if n, ok := p.intIn(s, key, v, minRefuseStatus, maxRefuseStatus, "the HTTP status of a refusal; 503 by default, CloudLinux LVE answers 508"); ok {
			a.RefuseStatus = int(n)
		}
	case "retry_after":
		if n, ok := p.intIn(s, key, v, 0, maxRetryAfter, "seconds in the Retry-After header of a refusal; 0 leaves the header out"); ok {
			a.RetryAfter = int(n)
		}
	}
}

// classAt returns class node of t, numbered as admissions numbers them:
// 0 the defaults, i+1 vhost i.
func classAt(t *Table, node int) *Class {
	if node == 0 {
		return &t.Defaults
	}
	return &t.VHosts[node-1]
}

// classScope is the scope problems about class node name. Built only for
// a class that has admission keys: a table of thousands of vhosts without
// them should not pay for their names.
func classScope(t *Table, node int) scope {
	if node == 0 {
		return scope{prefix: "defaults", where: "[defaults]", vhost: -1}
	}
	s := scope{prefix: "vhost[" + strconv.Itoa(node-1) + "]", vhost: node - 1}
	s.where = s.prefix
	if n := t.VHosts[node-1].Name; n != "" {
		s.where = fmt.Sprintf("vhost %q (%s)", n, s.prefix)
	}
	return s
}

// admissions resolves every over_limit to the class it names and checks
// the admission keys across classes: an over_limit naming no class or its
// own, an over_limit with no cap to apply to, chains of alternates that
// loop, refusal keys on classes that never refuse. It then fills in the
// defaults of the keys left out, and indexes the vhosts by name for
// Table.Class.
func (p *parser) admissions(t *Table) {
	index := make(map[string]int, len(t.VHosts))
	for i := range t.VHosts {
		// Names are ASCII (validName), so ToLower folds them as EqualFold does.
		if n := strings.ToLower(t.VHosts[i].Name); n != "" {
			if _, dup := index[n]; !dup {
				index[n] = i
			}
		}
	}
	t.vhostIndex = index
	// next[node] is the node of the class node's over_limit sends
	// connections to, or -1; allocated at the first alternate.
	var next []int
	nodes := len(t.VHosts) + 1
	for node := range nodes {
		a := &classAt(t, node).Admission
		if *a == (Admission{RetryAfter: -1}) {
			// No admission key: nothing to check.
			a.RefuseStatus, a.RetryAfter = DefaultRefuseStatus, DefaultRetryAfter
			continue
		}
		s := classScope(t, node)
		badCap := a.MaxConnections < 0 || a.MaxConnectionsPerIP < 0
		a.MaxConnections, a.MaxConnectionsPerIP = max(a.MaxConnections, 0), max(a.MaxConnectionsPerIP, 0)
		raw := a.OverLimit
		a.OverLimit = ""
		resolved := true
		if raw != "" {
			key := s.key("over_limit")
			target, ok := p.overLimitTarget(t, index, s, key, node, raw)
			resolved = ok
			if !a.Capped() && !badCap {
				p.keyProblem(s, key, "has no effect without max_connections or max_connections_per_ip: set a cap, or remove over_limit")
			} else if ok {
				a.OverLimit = target
				if target != OverLimitRefuse {
					if next == nil {
						next = make([]int, nodes)
						for i := range next {
							next[i] = -1
						}
					}
					next[node] = 0
					if target != DefaultsName {
						next[node] = index[strings.ToLower(target)] + 1
					}
				}
			}
		} else if a.Capped() {
			a.OverLimit = OverLimitRefuse
		}
		// Written refusal keys on a class that never refuses are
		// ignored, as a limit on a missing device is: the table read back
		// from Marshal then has no warning left to repeat.
		var why string
		switch {
		case badCap:
		case !a.Capped():
			why = "this class has no max_connections or max_connections_per_ip, so it never refuses a connection; ignored"
		case resolved && a.OverLimit != OverLimitRefuse:
			why = fmt.Sprintf("over_limit sends connections over the caps to %q, so this class never refuses one (a refusal further on has that class's own refuse_status and retry_after); ignored", a.OverLimit)
		}
		if why != "" {
			if a.RefuseStatus != 0 {
				p.keyWarning(s, s.key("refuse_status"), "has no effect: %s", why)
			}
			if a.RetryAfter >= 0 {
				p.keyWarning(s, s.key("retry_after"), "has no effect: %s", why)
			}
			a.RefuseStatus, a.RetryAfter = 0, -1
		}
		if a.RefuseStatus == 0 {
			a.RefuseStatus = DefaultRefuseStatus
		}
		if a.RetryAfter < 0 {
			a.RetryAfter = DefaultRetryAfter
		}
	}
	if next != nil {
		p.alternateLoops(t, next)
	}
}

// overLimitTarget resolves the over_limit raw of class node: "refuse",
// "default" or a vhost name, in any case, to OverLimitRefuse, DefaultsName
// or the vhost's name as written. It reports a name of no class, or of
// the class itself.
func (p *parser) overLimitTarget(t *Table, index map[string]int, s scope, key string, node int, raw string) (string, bool) {
	folded := strings.ToLower(raw)
	switch {
	case folded == OverLimitRefuse:
		if i, ok := index[folded]; ok {
			p.keyWarning(s, key, "%q refuses connections over the caps; it cannot name vhost %q (line %d): rename that vhost to send connections there", raw, t.VHosts[i].Name, p.line("vhost["+strconv.Itoa(i)+"].name"))
		}
		return OverLimitRefuse, true
	case folded == DefaultsName:
		if node == 0 {
			p.valueProblem(s, key, "%q is [defaults] itself; name a vhost to send connections over the caps to, or write \"refuse\"", raw)
			return "", false
		}
		return DefaultsName, true
	}
	i, ok := index[folded]
	if !ok {
		known := make([]string, 0, len(t.VHosts)+2)
		known = append(known, OverLimitRefuse, DefaultsName)
		for j := range t.VHosts {
			if n := t.VHosts[j].Name; n != "" && j != node-1 {
				known = append(known, n)
			}
		}
		p.valueProblem(s, key, "%q names no class%s Write \"refuse\", \"default\" or the name of a vhost", raw, didYouMean(raw, known))
		return "", false
	}
	if i == node-1 {
		p.valueProblem(s, key, "%q is this vhost itself; name another class to send connections over the caps to, or write \"refuse\"", raw)
		return "", false
	}
	return t.VHosts[i].Name, true
}

// alternateLoops reports every loop in the chains of alternates (next:
// the class each class's over_limit sends connections to, -1 for none),
// once, on the over_limit of the loop's first class in file order: a
// connection over every cap of a loop would have no class left to go to.
func (p *parser) alternateLoops(t *Table, next []int) {
	const (
		unseen = iota
		onPath
		done
	)
	state := make([]uint8, len(next))
	var path []int
	for start := range next {
		path = path[:0]
		v := start
		for v >= 0 && state[v] == unseen {
			state[v] = onPath
			path = append(path, v)
			v = next[v]
		}
		if v >= 0 && state[v] == onPath {
			for i, u := range path {
				if u == v {
					p.alternateLoop(t, path[i:])
					break
				}
			}
		}
		for _, u := range path {
			state[u] = done
		}
	}
}

func (p *parser) alternateLoop(t *Table, loop []int) {
	overLimitKey := func(node int) string {
		return classScope(t, node).key("over_limit")
	}
	first, firstLine := 0, 0
	for i, node := range loop {
		if l := p.line(overLimitKey(node)); i == 0 || l < firstLine {
			first, firstLine = i, l
		}
	}
	names := make([]string, 0, len(loop)+1)
	for i := range len(loop) + 1 {
		names = append(names, classAt(t, loop[(first+i)%len(loop)]).Name)
	}
	p.valueProblem(classScope(t, loop[first]), overLimitKey(loop[first]), "the alternates loop: %s; a connection over all their caps would have no class left to go to: end the chain with \"refuse\" or with a class without caps", strings.Join(names, " -> "))
}
