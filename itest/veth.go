package itest

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Veth is a veth pair between the caller's network namespace (the
// server's end, Srv, with address SrvIP) and a namespace of its own for
// clients (the other end, with the client address): traffic between the
// two crosses the device and its qdisc, where loopback would not. The
// bandwidth tests and the bench's -rates make one.
type Veth struct {
	Srv, SrvIP string
	origin, ns int // network namespace fds: the caller's, the clients'
}

// NewVeth makes the pair srv/cli, srv with srvIP and cli with cliIP, both
// in a /24 and up. Close removes it.
func NewVeth(srv, cli, srvIP, cliIP string) (*Veth, error) {
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: srv}, PeerName: cli}); err != nil {
		return nil, fmt.Errorf("making the veth pair %s/%s: %w", srv, cli, err)
	}
	v := &Veth{Srv: srv, SrvIP: srvIP, origin: -1, ns: -1}
	err := v.setUp(cli, cliIP)
	if err != nil {
		v.Close()
		return nil, err
	}
	return v, nil
}

func (v *Veth) setUp(cli, cliIP string) error {
	var err error
	if v.origin, v.ns, err = newNetns(); err != nil {
		return err
	}
	cliLink, err := netlink.LinkByName(cli)
	if err == nil {
		err = netlink.LinkSetNsFd(cliLink, v.ns)
	}
	if err != nil {
		return fmt.Errorf("moving %s to the clients' namespace: %w", cli, err)
	}
	if err := upWithAddr(v.Srv, v.SrvIP); err != nil {
		return err
	}
	return v.InClients(func() error { return upWithAddr(cli, cliIP) })
}

// Close removes the pair (and with it the clients' namespace, once
// nothing runs there).
func (v *Veth) Close() error {
	var err error
	if l, lerr := netlink.LinkByName(v.Srv); lerr == nil {
		err = netlink.LinkDel(l)
	}
	for _, fd := range []int{v.origin, v.ns} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	return err
}

// InClients runs f on a thread in the clients' namespace: the sockets and
// netlink requests it makes, and the processes it starts (os/exec forks
// from the calling thread), belong there.
func (v *Veth) InClients(f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Setns(v.ns, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("entering the clients' namespace: %w", err)
	}
	ferr := f()
	if err := unix.Setns(v.origin, unix.CLONE_NEWNET); err != nil {
		// The thread cannot go back: keep it locked, so that it ends with
		// this goroutine instead of returning to the pool.
		runtime.LockOSThread()
		return errors.Join(ferr, fmt.Errorf("leaving the clients' namespace: %w", err))
	}
	return ferr
}

// newNetns returns fds of the calling thread's network namespace and of a
// new one.
func newNetns() (origin, ns int, err error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if origin, err = unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
		return -1, -1, err
	}
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		unix.Close(origin)
		return -1, -1, fmt.Errorf("making the clients' network namespace: %w", err)
	}
	ns, err = unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if serr := unix.Setns(origin, unix.CLONE_NEWNET); serr != nil {
		runtime.LockOSThread()
		return -1, -1, fmt.Errorf("returning from the clients' namespace: %w", serr)
	}
	if err != nil {
		unix.Close(origin)
		return -1, -1, err
	}
	return origin, ns, nil
}

func upWithAddr(dev, ip string) error {
	link, err := netlink.LinkByName(dev)
	if err != nil {
		return err
	}
	addr, err := netlink.ParseAddr(ip + "/24")
	if err == nil {
		err = netlink.AddrAdd(link, addr)
	}
	if err == nil {
		err = netlink.LinkSetUp(link)
	}
	if err != nil {
		return fmt.Errorf("setting up %s with %s: %w", dev, ip, err)
	}
	return nil
}
