// floor: the least a seccomp user-notification supervisor can do for an
// accepting server, the reference vhqos is measured against (make bench).
//
//   floor continue -- SERVER ARGS...   answer every accept with "continue"
//   floor emulate  -- SERVER ARGS...   perform every accept for the server
//   floor reads    -- SERVER ARGS...   intercept accept, accept4 and the
//                                      read family (read, readv, recvfrom,
//                                      recvmsg) and answer each "continue":
//                                      the least a supervisor that watches
//                                      reads costs (vhqos placement = "thread")
//   floor emulate-reads -- SERVER...   the same filter; perform every accept
//                                      as emulate does, answer reads "continue"
//                                      (what vhqos does under placement =
//                                      "thread" but the placing)
//
// SIGPWR (which the floor does not forward) makes the floor write the
// number of notifications it has answered so far to its stderr ("floor: N
// notifications"), for the bench to count notifications per request.
//
// One thread blocked in SECCOMP_IOCTL_NOTIF_RECV. "emulate" does per
// accept only what the kernel needs: a pidfd and a copy of the listening
// socket cached per (process, fd), accept4 on the copy with the caller's
// flags, the peer address and its length written with one
// process_vm_writev, the new socket installed with SECCOMP_ADDFD_FLAG_SEND.
// It trusts its caches (no check that a process or an fd number was
// reused) and blocks in accept4 for a blocking listener (but lets the
// kernel accept on a unix socket): it serves a benchmark, not a customer.
// Built by the bench with cc; not part of vhqos.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t pending_signal, child_exited, count_asked;

static void on_signal(int sig) {
	if (sig == SIGCHLD)
		child_exited = 1;
	else if (sig == SIGPWR)
		count_asked = 1;
	else
		pending_signal = sig;
}

// install_filter sends accept and accept4 to the supervisor, and with reads
// the read family too (as vhqos's filter does under placement = "thread"),
// the most frequent first.
static int install_filter(int reads) {
	static const int watched[] = {__NR_read, __NR_recvfrom, __NR_readv, __NR_recvmsg, __NR_accept4, __NR_accept};
	int n = sizeof watched / sizeof watched[0], first = reads ? 0 : n - 2, k = 0;
	struct sock_filter prog[4 + sizeof watched / sizeof watched[0] + 2];
	prog[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
	prog[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
	prog[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	prog[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
	for (int i = first; i < n; i++) // a match jumps to the last instruction
		prog[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, watched[i], n - i, 0);
	prog[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	prog[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF);
	struct sock_fprog fprog = {.len = k, .filter = prog};
	return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &fprog);
}

// A listening socket of one process, copied into this one.
struct copy {
	pid_t pid;
	int fd, pidfd, local;
	int domain; // AF_INET, AF_INET6, AF_UNIX
};
#define COPIES 4096
static struct copy copies[COPIES];

static int tgid_of(pid_t tid) {
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/%d/status", tid);
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	int tgid = -1;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "Tgid: %d", &tgid) == 1)
			break;
	fclose(f);
	return tgid;
}

static struct copy *listener(pid_t tid, int fd) {
	struct copy *c = &copies[((unsigned)tid * 31u + (unsigned)fd) % COPIES];
	if (c->pid == tid && c->fd == fd && c->local >= 0)
		return c;
	if (c->pid) {
		close(c->local);
		close(c->pidfd);
	}
	c->pid = 0;
	int pidfd = syscall(SYS_pidfd_open, tid, 0);
	if (pidfd < 0) // a thread that does not lead its process
		pidfd = syscall(SYS_pidfd_open, tgid_of(tid), 0);
	if (pidfd < 0)
		return NULL;
	int local = syscall(SYS_pidfd_getfd, pidfd, fd, 0);
	if (local < 0) {
		close(pidfd);
		return NULL;
	}
	int domain = 0;
	socklen_t len = sizeof domain;
	getsockopt(local, SOL_SOCKET, SO_DOMAIN, &domain, &len);
	*c = (struct copy){.pid = tid, .fd = fd, .pidfd = pidfd, .local = local, .domain = domain};
	return c;
}

static void answer(int notify, struct seccomp_notif_resp *resp, __u64 id, int error) {
	memset(resp, 0, sizeof *resp);
	resp->id = id;
	if (error)
		resp->error = -error;
	else
		resp->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
	ioctl(notify, SECCOMP_IOCTL_NOTIF_SEND, resp);
}

static void emulate(int notify, struct seccomp_notif *req, struct seccomp_notif_resp *resp) {
	int fd = (int)req->data.args[0];
	__u64 addr = req->data.args[1], lenp = req->data.args[2];
	int flags = req->data.nr == __NR_accept4 ? (int)req->data.args[3] : 0;
	struct copy *c = listener(req->pid, fd);
	if (!c || c->domain == AF_UNIX) {
		// Let the kernel say what is wrong; and accept on a unix
		// socket itself (mod_cgid's daemon blocks in accept there,
		// which would block this one thread).
		answer(notify, resp, req->id, 0);
		return;
	}
	struct sockaddr_storage peer;
	socklen_t peerlen = sizeof peer;
	int conn = accept4(c->local, (struct sockaddr *)&peer, &peerlen, (flags & SOCK_NONBLOCK) | SOCK_CLOEXEC);
	if (conn < 0) {
		answer(notify, resp, req->id, errno);
		return;
	}
	int tos = 0xb8; // EF, as vhqos marks the bench's vhost
	setsockopt(conn, peer.ss_family == AF_INET6 ? IPPROTO_IPV6 : IPPROTO_IP,
		   peer.ss_family == AF_INET6 ? IPV6_TCLASS : IP_TOS, &tos, sizeof tos);
	if (addr && lenp) {
		socklen_t room;
		struct iovec here = {&room, sizeof room}, there = {(void *)lenp, sizeof room};
		if (process_vm_readv(req->pid, &here, 1, &there, 1, 0) == sizeof room) {
			struct iovec local[2] = {{&peer, room < peerlen ? room : peerlen}, {&peerlen, sizeof peerlen}};
			struct iovec remote[2] = {{(void *)addr, local[0].iov_len}, {(void *)lenp, sizeof peerlen}};
			process_vm_writev(req->pid, local, 2, remote, 2, 0);
		}
	}
	struct seccomp_notif_addfd add = {
		.id = req->id,
		.flags = SECCOMP_ADDFD_FLAG_SEND,
		.srcfd = conn,
		.newfd_flags = (flags & SOCK_CLOEXEC) ? O_CLOEXEC : 0,
	};
	if (ioctl(notify, SECCOMP_IOCTL_NOTIF_ADDFD, &add) < 0 && errno != ENOENT)
		answer(notify, resp, req->id, errno);
	close(conn);
}

int main(int argc, char **argv) {
	if (argc < 4 || strcmp(argv[2], "--") ||
	    (strcmp(argv[1], "continue") && strcmp(argv[1], "emulate") && strcmp(argv[1], "reads") && strcmp(argv[1], "emulate-reads"))) {
		fprintf(stderr, "usage: floor continue|emulate|reads|emulate-reads -- SERVER ARGS...\n");
		return 2;
	}
	int emulating = !strncmp(argv[1], "emulate", 7), reads = !!strstr(argv[1], "reads");
	int report[2], go[2];
	if (pipe2(report, O_CLOEXEC) || pipe2(go, O_CLOEXEC)) {
		perror("floor: pipe");
		return 1;
	}
	pid_t child = fork();
	if (child == 0) {
		// Apache prefork signals its whole process group on shutdown.
		setpgid(0, 0);
		int notify = install_filter(reads);
		if (notify < 0) {
			perror("floor: seccomp");
			_exit(127);
		}
		char ok;
		if (write(report[1], &notify, sizeof notify) != sizeof notify || read(go[0], &ok, 1) != 1)
			_exit(127);
		close(notify);
		execvp(argv[3], argv + 3);
		perror("floor: exec");
		_exit(127);
	}
	int remote;
	if (read(report[0], &remote, sizeof remote) != sizeof remote) {
		fprintf(stderr, "floor: the child did not install its filter\n");
		return 1;
	}
	int pidfd = syscall(SYS_pidfd_open, child, 0);
	int notify = pidfd < 0 ? -1 : syscall(SYS_pidfd_getfd, pidfd, remote, 0);
	if (notify < 0) {
		perror("floor: taking the notification fd");
		kill(child, SIGKILL);
		return 1;
	}
	struct sigaction sa = {.sa_handler = on_signal}; // no SA_RESTART: wake the loop
	int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCHLD};
	for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++)
		sigaction(forwarded[i], &sa, NULL);
	sigaction(SIGPWR, &sa, NULL);
	if (write(go[1], "g", 1) != 1)
		return 1;

	struct seccomp_notif_sizes sizes;
	syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes);
	struct seccomp_notif *req = calloc(1, sizes.seccomp_notif);
	struct seccomp_notif_resp *resp = calloc(1, sizes.seccomp_notif_resp);
	unsigned long long answered = 0;
	for (;;) {
		if (count_asked) {
			count_asked = 0;
			fprintf(stderr, "floor: %llu notifications\n", answered);
		}
		if (pending_signal) {
			kill(child, pending_signal);
			pending_signal = 0;
		}
		if (child_exited) {
			int status;
			if (waitpid(child, &status, WNOHANG) == child)
				return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
			child_exited = 0;
		}
		memset(req, 0, sizes.seccomp_notif);
		if (ioctl(notify, SECCOMP_IOCTL_NOTIF_RECV, req) < 0)
			continue; // EINTR (a signal above) or ENOENT (the caller went away)
		answered++;
		if (emulating && (req->data.nr == __NR_accept || req->data.nr == __NR_accept4))
			emulate(notify, req, resp);
		else
			answer(notify, resp, req->id, 0);
	}
}
