package shaper

import (
	"encoding/binary"
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// filterPrio is the priority (tc's "pref") of vhqos's one filter.
const filterPrio = 1

// markProgram is the filter's classic BPF program: a packet whose mark
// (SO_MARK of its socket) has 0x7668 in its upper 16 bits goes to the
// class of that id; any other packet matches nothing and HTB sends it
// unshaped. cls_bpf takes a classic program's return value as the class
// id (0: no match), so no per-vhost filter and no bpf(2) are needed, and
// `tc filter show` prints it as bytecode.
func markProgram() ([]bpf.RawInstruction, error) {
	return bpf.Assemble([]bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtMark},
		bpf.TAX{},
		bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 16},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: Major, SkipFalse: 2},
		bpf.TXA{},
		bpf.RetA{},
		bpf.RetConstant{Val: 0},
	})
}

// addFilter attaches the mark filter to vhqos's root qdisc on link.
// netlink.BpfFilter carries an eBPF program's fd only, so the request is
// built here with the library's message types: a cls_bpf filter with
// TCA_BPF_OPS, as `tc filter add ... bpf bytecode` sends it.
func addFilter(link netlink.Link) error {
	prog, err := markProgram()
	if err != nil {
		return fmt.Errorf("assembling the mark filter: %w", err)
	}
	ops := make([]byte, 0, 8*len(prog))
	for _, ins := range prog {
		// struct sock_filter, in the kernel's (native) byte order.
		ops = binary.NativeEndian.AppendUint16(ops, ins.Op)
		ops = append(ops, ins.Jt, ins.Jf)
		ops = binary.NativeEndian.AppendUint32(ops, ins.K)
	}
	req := nl.NewNetlinkRequest(unix.RTM_NEWTFILTER, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	req.AddData(&nl.TcMsg{
		Family:  nl.FAMILY_ALL,
		Ifindex: int32(link.Attrs().Index),
		Parent:  netlink.MakeHandle(Major, 0),
		Info:    netlink.MakeHandle(filterPrio, nl.Swap16(unix.ETH_P_ALL)),
	})
	req.AddData(nl.NewRtAttr(nl.TCA_KIND, nl.ZeroTerminated("bpf")))
	opts := nl.NewRtAttr(nl.TCA_OPTIONS, nil)
	opts.AddRtAttr(nl.TCA_BPF_OPS_LEN, nl.Uint16Attr(uint16(len(prog))))
	opts.AddRtAttr(nl.TCA_BPF_OPS, ops)
	req.AddData(opts)
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("attaching the mark filter (cls_bpf) to %s: %w", link.Attrs().Name, err)
	}
	return nil
}

// hasFilter reports whether vhqos's filter is on its root qdisc on link.
func hasFilter(link netlink.Link) (bool, error) {
	filters, err := netlink.FilterList(link, netlink.MakeHandle(Major, 0))
	if err != nil {
		return false, fmt.Errorf("listing the filters on %s: %w", link.Attrs().Name, err)
	}
	for _, f := range filters {
		if f.Type() == "bpf" && f.Attrs().Priority == filterPrio {
			return true, nil
		}
	}
	return false, nil
}
