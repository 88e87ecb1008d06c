# vhqos build, test and demo. Everything runs as root on Linux.
GO      ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
BIN     := build/vhqos
export PATH := $(PATH):/usr/local/go/bin

.PHONY: all deps build test test-host test-race test-vm soak kill-soak demo bench bench-caps bench-rates bench-fpm bench-threads bench-sparse fuzz fuzz-ci lint clean man deb test-deb test-vm-systemd

all: build

# Installs the Debian packages the build, the tests and the demo need, if
# any is missing (see .ci/deps).
deps:
	@.ci/deps

build: deps
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/vhqos

# Unit and integration tests on this kernel, the Debian package's checks,
# then the integration tests again inside a VM with Debian's kernel and
# unified cgroup v2, and a boot of it with systemd as init.
test: deps lint build test-host test-race fuzz-ci test-deb test-vm test-vm-systemd

# Every go test has an explicit -timeout sized for a slow, busy machine of
# the CI's kind (2 cores, fork and exec several times dearer than on a
# quiet one), so a hang fails with a goroutine dump instead of go test's
# bare 10-minute default. The fork soak is bounded by time
# (VHQOS_SOAK_DURATION, 60s by default), not by a count it must reach.
test-host:
	$(GO) test -count=1 -timeout 20m ./...

# The supervisor's goroutines share tables with its receivers, the event
# loop and the reloader: its tests run again under the race detector.
test-race:
	$(GO) test -race -count=1 -timeout 10m ./supervisor ./vhost ./policy

# One VM boot runs the cgroup package's tests (io.max on the VM's scratch
# disk, controller delegation, the supervisor's own leaf) and the
# integration tests, unchanged, on unified cgroup v2.
test-vm: build
	$(GO) build -o build/vmrun ./itest/vm/cmd/vmrun
	$(GO) test -c -o build/cgroup.test ./cgroup
	$(GO) test -c -o build/itest.test ./itest
	# -test.v and -test.timeout: a test that hangs there names itself and
	# dumps its goroutines instead of waiting for vmrun's -timeout.
	# Under software emulation a fork and exec per connection is some fifty
	# times dearer: the soak test gets at most 1,000 connections or 60 s.
	build/vmrun -C $(CURDIR) -timeout 30m -env VHQOS_BIN=$(CURDIR)/$(BIN) -env VHQOS_SOAK_CONNECTIONS=1000 -env VHQOS_SOAK_DURATION=60s -env VHQOS_EMULATED_CPU=1 -- /bin/sh -c \
		'cd cgroup && ../build/cgroup.test -test.v -test.count=1 -test.timeout 5m && cd ../itest && ../build/itest.test -test.v -test.count=1 -test.timeout 20m'

# A second boot, with Debian's systemd as init on an overlay of the host's
# root: the package installed, Debian's apache2 and php8.2-fpm units put
# under vhqos with vhqos enable, started, reloaded, stopped and killed by
# systemd (itest/systemd).
test-vm-systemd: build deb
	$(GO) build -o build/vmrun ./itest/vm/cmd/vmrun
	$(GO) test -c -o build/systemd.test ./itest/systemd
	build/vmrun -systemd -C $(CURDIR) -timeout 20m -env VHQOS_VM_SYSTEMD=1 -env VHQOS_DEB=$$(ls $(CURDIR)/build/vhqos_*_amd64.deb) -- \
		build/systemd.test -test.v -test.count=1 -test.timeout 15m

# The long fork soak, by hand: 100,000 connections through socat fork, or
# 30 minutes of them, whichever comes first (SOAK_CONNECTIONS,
# SOAK_DURATION).
SOAK_CONNECTIONS ?= 100000
SOAK_DURATION    ?= 30m
soak: build
	VHQOS_SOAK_CONNECTIONS=$(SOAK_CONNECTIONS) VHQOS_SOAK_DURATION=$(SOAK_DURATION) \
		$(GO) test -count=1 -v -timeout 45m -run '^TestForkSoak$$' ./itest


# Supervisors killed at random under load, the long way: 100 kills in 5
# minutes (make test runs 15 in 30 s).
kill-soak: build
	VHQOS_KILL_SOAK_DURATION=5m VHQOS_KILL_SOAK_KILLS=100 \
		$(GO) test -count=1 -v -timeout 20m -run '^TestSupervisorKillSoak$$' ./itest

demo: build
	./demo/run.sh

# Apache prefork (static file), then php-fpm behind nginx (FastCGI), then
# what bandwidth limits that are never reached cost (bench-rates), then
# Apache's event MPM under both placements (bench-threads' static file
# half), then sparse traffic (bench-sparse; some 30 minutes in all).
bench: build
	$(GO) run ./itest/bench -vhqos $(BIN)
	$(GO) run ./itest/bench -vhqos $(BIN) -fpm
	$(GO) run ./itest/bench -vhqos $(BIN) -rates
	$(GO) run ./itest/bench -vhqos $(BIN) -threads
	$(GO) run ./itest/bench -vhqos $(BIN) -sparse -d 10s -pairs 3

# What the supervisor costs a server that is idle or takes 10 or 100
# connections a second, per second, beside the floor's (some 8 minutes).
bench-sparse: build
	$(GO) run ./itest/bench -vhqos $(BIN) -sparse -d 10s -pairs 3

# Threaded servers (issue 16): Apache's event MPM native, under the floor
# and under vhqos with placement = "process" and "thread", a static file
# and a CPU-bound mod_lua handler.
bench-threads: build
	$(GO) run ./itest/bench -vhqos $(BIN) -threads
	$(GO) run ./itest/bench -vhqos $(BIN) -threads -lua

# php-fpm behind nginx alone: native, floor and vhqos with name vhosts.
bench-fpm: build
	$(GO) run ./itest/bench -vhqos $(BIN) -fpm

# What a connection cap that is never reached costs (issue: admission).
bench-caps: build
	$(GO) run ./itest/bench -vhqos $(BIN) -caps
	$(GO) run ./itest/bench -vhqos $(BIN) -caps -names -only "Host header"

# What bandwidth limits that are never reached cost (issue 15): egress_rate
# (HTB on the server's end of a veth to the clients' namespace) and
# connection_rate (pacing).
bench-rates: build
	$(GO) run ./itest/bench -vhqos $(BIN) -rates
	$(GO) run ./itest/bench -vhqos $(BIN) -rates -names -only "Host header"

# Every fuzz target for a bounded time: briefly in `make test`, longer by
# hand (`make fuzz`, 2 minutes each). make test counts executions (200,000
# per target, some 10 s on a quiet machine) instead of seconds: Go 1.26's
# fuzzing coordinator can report a bare "context deadline exceeded" when a
# duration runs out while a worker on a busy machine is mid-call
# (go.dev/issue/75804, fixed in Go 1.27), a failure with no input behind it.
FUZZ_TARGETS = vhost:FuzzSniffHTTP vhost:FuzzSniffTLS vhost:FuzzSniffName vhost:FuzzSniffFastCGI vhost:FuzzParseCGID vhost:FuzzParseProxy vhost:FuzzSniffH2C vhost:FuzzParsePattern policy:FuzzParse
fuzz-ci:
	$(MAKE) fuzz FUZZTIME=200000x

FUZZTIME ?= 2m
fuzz:
	set -e; for t in $(FUZZ_TARGETS); do \
		$(GO) test ./$${t%%:*} -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) -timeout 30m; \
	done

# The man pages vhqos(8) and vhqos-qos.toml(5), from README.md and
# policy/REFERENCE.md (docs/man: their layouts), dated by the commit.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
man:
	$(GO) run ./docs/man/mkman -o build/man -version $(VERSION) -date $(shell date -u -d @$(SOURCE_DATE_EPOCH) +%F)

# build/vhqos_VERSION_amd64.deb (dist/deb), and its checks: contents,
# control fields, lintian's errors, install and removal in a scratch root.
deb: deps man
	GO="$(GO)" VERSION=$(VERSION) SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) dist/deb/build

test-deb: deb
	VHQOS_DEB=$$(ls $(CURDIR)/build/vhqos_*_amd64.deb) $(GO) test -count=1 -timeout 5m ./dist/deb/

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf build
