// Package shaper limits what the connections of each vhost send together
// (egress_rate), and of each tenant's vhosts together, with the kernel's
// traffic control, set up over rtnetlink (github.com/vishvananda/netlink),
// never by running tc(8).
//
// On each device vhqos shapes (settings.shape_devices) it puts one HTB
// qdisc at the root, handle 7668: ("vh"), in place of the kernel's
// default qdisc. Every vhost with an egress_rate has an HTB class there,
// 7668:N, and the connections of that vhost carry N's class id as their
// socket mark (SO_MARK, set by the supervisor beside the DSCP). A tenant
// with an egress_rate has an inner class, and the classes of its vhosts
// (each of them has one, with an egress_rate of its own or not) are
// inside it: they borrow from it up to their own rate, and together never
// send more than the tenant's. Which classes there are, and their rates,
// the caller decides (Sync's Class). One classic BPF filter on the root
// reads each packet's mark and, when its upper 16 bits are 0x7668, returns it
// as the class: no filter per vhost, and nothing else the kernel must
// have but sch_htb and cls_bpf (kernels without cls_fw, as on the project's
// machines, work the same). Packets without such a mark, everything else
// the machine sends, match no class and leave through HTB's direct queue,
// unshaped.
//
// The steps, a file each:
//
//   - claim.go: Claim installs the root qdisc and the filter on a device
//     whose egress qdiscs are still the kernel's own (handle 0:, whatever
//     their kind: noqueue, pfifo_fast, fq_codel, mq and its children), and
//     adopts one that is vhqos's already (left by a supervisor that
//     crashed, or by vhqos killed outright); any other qdisc is the
//     operator's, and Claim refuses the device (ForeignError). Release
//     deletes vhqos's root qdisc, and the kernel puts its default back.
//   - filter.go: the filter's program and the rtnetlink request that
//     attaches it (the library builds eBPF filters only).
//   - classes.go: Sync makes the classes under the root exactly the
//     table's, adding, changing and deleting them in place (a class that
//     moves to another parent is made again there).
//   - minor.go: Minors numbers the rated vhosts by name, so that a vhost
//     keeps its class (and the mark its open connections carry) across
//     reloads and restarts.
//   - stats.go: Stats reads each class's counters: bytes and packets sent,
//     drops and overlimits (the kernel's, as tc -s class shows them).
//
// Every function works on the network namespace of the calling thread:
// vhqos's own. A device is named by its interface name.
package shaper
