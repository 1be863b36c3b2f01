#!/usr/bin/env bash
# Build the test pack that image/test.sh attaches to the test VM: the
# project's own Go test binaries (`go test -c`), compiled here and run inside
# the booted appliance, where the kernel has the WireGuard, GRE and ESP
# modules this build machine lacks. The pack is a squashfs image the VM
# mounts read-only from a virtio disk; see "Tests" in image/README.md.
#
#   image/testpack.sh OUT.squashfs [PACKAGE...]
#
# PACKAGE: go package patterns (default $EDGEGW_IMAGE_TEST_PACKAGES, else
# the kernel dataplane packages: image/kerneltest tunnel/gre
# tunnel/wireguard tunnel/ipsec). Of these, every package whose tests build
# network namespaces (they import gateway/netlab or have *netns_test.go
# files) goes into the pack; others are left out. A wider run:
# EDGEGW_IMAGE_TEST_PACKAGES=./... (in the VM: about 7 min more).
#
# Layout of the pack:
#   run                  the runner (image/vmtest-run), run inside the VM
#   bin/                 test-only tools the appliance does not ship
#                        (wireguard-go, the stock peer of tunnel/wireguard's
#                        tests; copied from this Debian 12 host)
#   NAME/NAME.test       one test binary per package, NAME its path with
#   NAME/testdata/       '/' as '-' (tunnel-gre), next to its testdata
set -euo pipefail
IMAGE_DIR=$(cd "$(dirname "$0")" && pwd)
REPO_DIR=$(dirname "$IMAGE_DIR")
[ $# -ge 1 ] || { sed -n '2,24p' "$0" >&2; exit 2; }
out=$1; shift
# The kernel dataplanes: what the build machine cannot run. Tests that only
# need namespaces (tunnel/site, gateway/netlab…) run on the build machine;
# under emulation their timing assertions would only be slower.
# tunnel/ipsec runs its tests here with the kernel backend (xfrm interfaces,
# ESP in the kernel), which the build machine's kernel lacks; the build
# machine runs them with kernel-libipsec.
default="./image/kerneltest ./tunnel/gre ./tunnel/wireguard ./tunnel/ipsec"
if [ $# -eq 0 ]; then
	# shellcheck disable=SC2086
	set -- ${EDGEGW_IMAGE_TEST_PACKAGES:-$default}
fi
log() { printf '== %s testpack: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

stage=$(mktemp -d)
chmod 0755 "$stage"
trap 'rm -rf "$stage"' EXIT
start=$(date +%s)
cd "$REPO_DIR"
module=$(go list -m)
n=0
while read -r pkg dir ntests; do
	[ "$ntests" -gt 0 ] || continue
	name=${pkg#"$module"/}
	name=${name//\//-}
	mkdir -p "$stage/$name"
	# The same flags as the image's edgegw: static, no cgo, reproducible.
	CGO_ENABLED=0 GOFLAGS=-buildvcs=false go test -c -trimpath -ldflags '-s -w -buildid=' \
		-o "$stage/$name/$name.test" "$pkg"
	if [ -d "$dir/testdata" ]; then cp -a "$dir/testdata" "$stage/$name/"; fi
	n=$((n + 1))
done < <(go list -f '{{.ImportPath}} {{.Dir}} {{len .TestGoFiles}} {{len .XTestGoFiles}} {{join .TestImports ","}},{{join .XTestImports ","}} {{join .TestGoFiles ","}},{{join .XTestGoFiles ","}}' "$@" |
	awk -v netlab="$module/gateway/netlab" '
		# Only packages whose tests build network namespaces (netlab, or
		# *netns_test.go files): the VM is for kernel dataplanes; logic
		# tests already ran on the host.
		$3 + $4 == 0 { next }
		$1 == netlab || index("," $5 ",", "," netlab ",") || $6 ~ /netns/ { print $1, $2, 1 }')
[ "$n" -gt 0 ] || { echo "testpack.sh: no package with tests in: $*" >&2; exit 1; }

mkdir -p "$stage/bin"
if p=$(command -v wireguard-go); then cp "$p" "$stage/bin/"; else log "no wireguard-go here: tests that need it skip in the VM"; fi
install -m 0755 "$IMAGE_DIR/vmtest-run" "$stage/run"

mksquashfs "$stage" "$out.tmp" -noappend -quiet -no-progress -comp zstd -Xcompression-level 1 \
	-all-root -processors "$(nproc)" > /dev/null
mv "$out.tmp" "$out"
log "$n test binaries, $(( $(stat -c %s "$out") / 1024 / 1024 )) MiB, in $(( $(date +%s) - start ))s: $out"
