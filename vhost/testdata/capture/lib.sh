# lib.sh is sourced by the capture scripts, each run as "SCRIPT OUTDIR" by
# root: it checks the usage, runs the script again in a network namespace
# of its own with lo up, and sets here (this directory), out (OUTDIR,
# absolute, created) and dir (a scratch directory, removed on exit unless
# the script sets a trap of its own, which must remove it too).
set -eu
if [ "${1:-}" = "" ]; then echo "usage: $0 OUTDIR" >&2; exit 2; fi
here=$(cd "$(dirname "$0")" && pwd)
out=$(realpath -m "$1")
if [ "${VHQOS_CAPTURE_NS:-}" = "" ]; then
	exec env VHQOS_CAPTURE_NS=1 unshare -n "$0" "$out"
fi
ip link set lo up
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$out"

# build NAME builds the stand-in NAME.go of this directory as $dir/NAME
# (inside the module, for golang.org/x/sys).
build() {
	(cd "$here" && go build -o "$dir/$1" "./$1.go")
}

# waitport PORT waits until a TCP socket listens on PORT (20 s at most).
waitport() {
	for _ in $(seq 1 400); do
		ss -ltnH "sport = :$1" | grep -q . && return 0
		sleep 0.05
	done
	echo "nothing listens on port $1" >&2
	exit 1
}
