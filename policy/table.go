package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/vhqos/vhqos/cgroup"
	"github.com/vhqos/vhqos/intercept"
	"github.com/vhqos/vhqos/vhost"
)

// Table is a validated QoS table. It is never changed after Parse; a new
// file makes a new Table, so the supervisor can hand out snapshots without
// locks.
type Table struct {
	Settings Settings
	// Defaults applies to connections that match no vhost.
	Defaults Class
	// VHosts are in file order; Matcher rules index into them.
	VHosts []Class
	// Tenants are in file order; a vhost's Tenant and a tenant's Parent
	// name one of them.
	Tenants []Tenant
	Matcher *vhost.Matcher
	// Source is the file the table came from.
	Source string
	// Warnings are problems that did not stop the table, in file order:
	// limits on devices this machine lacks, which are left out of
	// Resources. Whoever reads the table shows them (check prints them,
	// run and reload log them).
	Warnings Problems
	// vhostIndex maps each vhost's name, in lower case, to its index in
	// VHosts, for Class: over_limit names a class per connection over a
	// cap, and a table may have thousands of vhosts. Nil in a Table built
	// by hand, where Class searches instead.
	vhostIndex map[string]int
	// tenantIndex maps each tenant's name, in lower case, to its index in
	// Tenants, for TenantOf: every site's cgroup path and shaping class
	// walks its tenants by name. Nil in a Table built by hand, where
	// TenantOf searches instead.
	tenantIndex map[string]int
	// proxy matches the listeners of Settings.ProxyProtocol (every rule
	// for vhost 0), built once by Parse: ProxyTrusted runs for every
	// accepted connection. Nil in a Table built by hand, where it is
	// built per call instead.
	proxy *vhost.Matcher
}

// Settings are table-wide options.
type Settings struct {
	// CgroupParent is the absolute cgroup path vhqos nests its cgroups
	// under; "" means vhqos's own cgroup.
	CgroupParent string
	// Track is how far connections are followed after accept; the zero
	// value is intercept.TrackAccept.
	Track intercept.Track
	// Placement is what moves into a connection's cgroup: the serving
	// process, or the reading thread of a multi-threaded one; the zero
	// value is intercept.PlaceProcess.
	Placement intercept.Placement
	// SniffTimeout is how long vhqos waits for a client's first bytes
	// (HTTP request head, TLS ClientHello) when a host name may decide its
	// vhost; 0 means DefaultSniffTimeout.
	SniffTimeout time.Duration
	// SniffBytes is how many of those bytes it looks at, at most; 0 means
	// DefaultSniffBytes.
	SniffBytes int
	// ProxyProtocol lists the local addresses (address patterns only: no
	// host names) of listeners behind a trusted proxy, whose connections
	// start with a PROXY protocol header (HAProxy's
	// doc/proxy-protocol.txt, v1 or v2). On connections to them the
	// header's destination address and port stand in for the local
	// address in every address rule; elsewhere a header is only skipped
	// to find the host name. Empty: no listener is trusted.
	ProxyProtocol []vhost.Pattern
	// ShapeDevices are the network devices on which egress_rate is
	// shaped (package shaper), by interface name; empty: none. They are
	// set up when vhqos run starts and cannot change while it runs.
	ShapeDevices []string
}

// Defaults and bounds of the name-sniffing settings.
const (
	DefaultSniffTimeout = 2 * time.Second
	DefaultSniffBytes   = 16384
	minSniffTimeout     = 10 * time.Millisecond
	maxSniffTimeout     = 60 * time.Second
	minSniffBytes       = 512
	maxSniffBytes       = 65536
)

// SniffLimits returns the name-sniffing bounds with defaults filled in.
func (s Settings) SniffLimits() (timeout time.Duration, bytes int) {
	timeout, bytes = s.SniffTimeout, s.SniffBytes
	if timeout == 0 {
		timeout = DefaultSniffTimeout
	}
	if bytes == 0 {
		bytes = DefaultSniffBytes
	}
	return timeout, bytes
}

// Class is one vhost, or the defaults.
type Class struct {
	Name string
	// Match is empty for the defaults.
	Match []vhost.Pattern
	// Listen restricts the host names in Match to connections to these
	// local addresses and Unix-domain listeners; empty means every
	// address.
	Listen    []vhost.Pattern
	Resources cgroup.Resources
	// DSCP is 0..63, or -1 to leave sockets as the server made them.
	DSCP int
	// Admission caps the connections of the class.
	Admission Admission
	// Rates are the class's bandwidth limits (egress_rate,
	// connection_rate).
	Rates Rates
	// Tenant names the tenant the vhost belongs to (Table.Tenants), ""
	// for none (and for the defaults): its cgroup is inside the tenant's.
	Tenant string
}

// DefaultsName is the name of the class of connections matching no vhost:
// the name of its cgroup, so that status shows one word for both, and one
// that cgroup.Reserved keeps from every vhost.
const DefaultsName = cgroup.DefaultGroup

// ClassifyAddr returns the class of a connection by its local address: the
// vhost with the most specific address rule, or the defaults. It allocates
// nothing (it runs for every accepted connection).
func (t *Table) ClassifyAddr(local netip.AddrPort) *Class {
	if i := t.Matcher.MatchAddr(local); i >= 0 {
		return &t.VHosts[i]
	}
	return &t.Defaults
}

// ClassifyName returns the class of a connection whose client asked for
// host (HTTP Host or TLS SNI): the vhost with the most specific name rule,
// else the class by local address. A name the client sent beats an address
// guess, never the reverse.
func (t *Table) ClassifyName(host string, local netip.AddrPort) *Class {
	if i := t.Matcher.MatchName(host, local); i >= 0 {
		return &t.VHosts[i]
	}
	return t.ClassifyAddr(local)
}

// ClassifyPath returns the class of a connection to the Unix-domain
// listener bound to path ("/run/php/shop.sock", or "@name" for an abstract
// socket): the vhost whose unix: pattern names it, or the defaults. It
// allocates nothing.
func (t *Table) ClassifyPath(path string) *Class {
	if i := t.Matcher.MatchPath(path); i >= 0 {
		return &t.VHosts[i]
	}
	return &t.Defaults
}

// ClassifyNameOnPath is ClassifyName for a connection to the Unix-domain
// listener bound to path, whose client (a FastCGI or HTTP proxy in front)
// asked for host: the vhost with the most specific name rule that applies
// on that socket (vhost.Matcher.MatchNameOnPath), else the class by path.
func (t *Table) ClassifyNameOnPath(host, path string) *Class {
	if i := t.Matcher.MatchNameOnPath(host, path); i >= 0 {
		return &t.VHosts[i]
	}
	return t.ClassifyPath(path)
}

// ProxyTrusted reports whether a connection whose local address is local
// came in on a listener of Settings.ProxyProtocol: then the destination of
// its PROXY protocol header, if it has one, takes the place of local for
// the address rules (ClassifyAddr, ClassifyName). Any client can send a
// PROXY header, so one is believed only where the operator said a proxy
// sits. It allocates nothing in a table from Parse (it runs for every
// accepted connection).
func (t *Table) ProxyTrusted(local netip.AddrPort) bool {
	return t.proxyMatcher().MatchAddr(local) >= 0
}

// ProxyMayApply reports whether some connection accepted on a socket bound
// to bound can be trusted (ProxyTrusted), so that its first bytes must be
// read for a PROXY header even when no host name rule applies. For a
// specific bound address it is ProxyTrusted(bound); for 0.0.0.0 or :: it
// is true when some pattern can match an address of that family on bound's
// port (vhost.Matcher.MayMatchListener). It allocates nothing in a table
// from Parse.
func (t *Table) ProxyMayApply(bound netip.AddrPort) bool {
	return t.proxyMatcher().MayMatchListener(bound)
}

func (t *Table) proxyMatcher() *vhost.Matcher {
	if t.proxy == nil && len(t.Settings.ProxyProtocol) > 0 {
		return newProxyMatcher(t.Settings.ProxyProtocol)
	}
	return t.proxy
}

// newProxyMatcher builds the matcher of the trusted listeners; nil for
// none, which matches nothing.
func newProxyMatcher(pats []vhost.Pattern) *vhost.Matcher {
	if len(pats) == 0 {
		return nil
	}
	rules := make([]vhost.Rule, len(pats))
	for i, p := range pats {
		rules[i] = vhost.Rule{Pattern: p}
	}
	return vhost.NewMatcher(rules)
}

// DeviceResolver resolves a device key of the table (a path or
// "MAJOR:MINOR") to the whole disk it names, with cgroup.ResolveDevice's
// errors: one wrapping cgroup.ErrNoDevice makes the limit a warning and
// skips it, any other makes it an error.
type DeviceResolver func(spec string) (cgroup.BlockDevice, error)

// Option changes how a table is read.
type Option func(*config)

type config struct {
	resolveDevice DeviceResolver
	netDevice     NetDeviceCheck
}

// NetDeviceCheck says whether a network device named in shape_devices is
// there and vhqos run could shape it (vhqos check: no qdisc of the
// operator's on it): nil if so, else an error saying what is wrong.
type NetDeviceCheck func(name string) error

// WithNetDeviceCheck makes a device of shape_devices that check refuses
// an error of the table, at its place in the list. vhqos check uses it,
// since vhqos run refuses to start without the devices, or on one with
// someone else's qdisc; run and reloads
// do not: run finds a missing device itself when it starts, and a device
// that goes away while vhqos runs must not make reloads fail (the list
// cannot change while vhqos runs anyway).
func WithNetDeviceCheck(check NetDeviceCheck) Option {
	return func(c *config) { c.netDevice = check }
}

// WithDeviceResolver replaces how device keys are resolved; tests use it
// for devices this machine lacks. The default is cgroup.ResolveDevice,
// which vhqos check, run and reload all use, so that they agree.
func WithDeviceResolver(resolve DeviceResolver) Option {
	return func(c *config) { c.resolveDevice = resolve }
}

// Load reads and parses the QoS table at path.
func Load(path string, opts ...Option) (*Table, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the QoS table: %w", err)
	}
	return Parse(path, data, opts...)
}

// Parse validates a QoS table completely. A table with any problem is
// refused whole; the error is then Problems, listing every problem found
// in file order (only the first one for a TOML syntax error, after which
// the parser cannot go on, or for a file that is not UTF-8). Problems that
// need not stop the table (Problem.Warning) are in Table.Warnings when it
// has no other. data may start with a UTF-8 byte order mark; lines and
// columns count from after it, as editors do.
func Parse(filename string, data []byte, opts ...Option) (*Table, error) {
	cfg := config{resolveDevice: cgroup.ResolveDevice}
	for _, o := range opts {
		o(&cfg)
	}
	data, encProblem := decodeText(filename, data)
	if encProblem != nil {
		return nil, Problems{*encProblem}
	}
	var doc map[string]any
	if err := toml.Unmarshal(data, &doc); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) && len(de.Key()) > 0 && de.Key()[0] == "tenant" {
			if pr := tenantHeaderProblem(filename, data); pr != nil {
				return nil, Problems{*pr}
			}
		}
		return nil, Problems{syntaxProblem(filename, err)}
	}
	p := &parser{file: filename, data: data, cfg: cfg}
	t := p.table(doc)
	if len(p.problems) > 0 {
		p.placeProblems()
		p.problems.sorted()
	}
	if p.errorCount() > 0 {
		return nil, p.problems
	}
	t.Warnings = p.problems
	t.Source = filename
	return t, nil
}

func syntaxProblem(filename string, err error) Problem {
	var de *toml.DecodeError
	if !errors.As(err, &de) {
		return Problem{File: filename, Msg: "TOML syntax: " + strings.TrimPrefix(err.Error(), "toml: ")}
	}
	line, col := de.Position()
	return Problem{
		File: filename, Line: line, Column: col,
		Key: joinPath("", de.Key()...),
		Msg: "TOML syntax: " + strings.TrimPrefix(de.Error(), "toml: "),
	}
}
