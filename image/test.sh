#!/usr/bin/env bash
# make image-test: boot the built image in QEMU (TCG) and check it; see
# TestAppliance in image/appliance_test.go. Needs image/build.sh's output in
# $EDGEGW_IMAGE_OUT (default image/out), Go, and the Debian packages
# qemu-system-x86 ovmf openssh-client mtools fdisk squashfs-tools.
#
#   image/test.sh [--no-update]
#
# Before the VM starts it makes:
#  - the test pack (testpack.sh): the project's dataplane test binaries,
#    run inside the VM where the kernel has WireGuard, GRE and ESP;
#  - unless --no-update: the two update bundles the A/B tests apply, a
#    working one of another version (VERSION-next) and one whose edgegw
#    never becomes ready. `build.sh --test-bundles` makes them with the
#    image, from the same root; otherwise they are built here (signed with
#    the same key as the image: OUT/test-signing-key, or
#    EDGEGW_SIGNING_KEY);
#  - unless --no-update: an unsigned and a tampered copy of the working
#    bundle, which the VM must refuse.
set -euo pipefail
IMAGE_DIR=$(cd "$(dirname "$0")" && pwd)
OUT=${EDGEGW_IMAGE_OUT:-$IMAGE_DIR/out}
[ -e "$OUT/edgegw.img" ] || { echo "test.sh: no $OUT/edgegw.img: run image/build.sh (make image) first" >&2; exit 1; }
log() { printf '== %s test.sh: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

export EDGEGW_IMAGE_DIR=$OUT
start=$(date +%s)
"$IMAGE_DIR/testpack.sh" "$OUT/testpack.squashfs"
export EDGEGW_IMAGE_TESTPACK=$OUT/testpack.squashfs
if [ "${1:-}" != --no-update ]; then
	base=$(sed -n 's/^version: //p' "$OUT/edgegw.manifest")
	good=$OUT/edgegw-$base-next.update.tar
	broken=$OUT/edgegw-$base-next-broken.update.tar
	# Bundles made with this image (build.sh --test-bundles) are newer than it.
	if [ "$good" -nt "$OUT/edgegw.img" ] && [ "$broken" -nt "$OUT/edgegw.img" ]; then
		log "test bundles of $base: made with the image"
	else
		"$IMAGE_DIR/build.sh" --out "$OUT" --bundle-only --version "$base-next"
		"$IMAGE_DIR/build.sh" --out "$OUT" --bundle-only --version "$base-next" --variant broken
	fi
	# The refusal tests' bundles, made from the good one as an attacker
	# without the signing key would: unsigned (no SHA256SUMS.minisig), and
	# tampered (cmdline with init=/bin/sh, SHA256SUMS recomputed, the old
	# signature kept). `edgegw update` must refuse both before it writes.
	unsigned=$OUT/edgegw-$base-next-unsigned.update.tar
	tampered=$OUT/edgegw-$base-next-tampered.update.tar
	if ! [ "$unsigned" -nt "$good" ] || ! [ "$tampered" -nt "$good" ]; then
		log "unsigned and tampered bundles from $(basename "$good")"
		d=$(mktemp -d "$OUT/tamper.XXXXXX")
		tar -C "$d" -xf "$good"
		tar -C "$d" --format=gnu -cf "$unsigned" SHA256SUMS version cmdline root.size vmlinuz initrd.img root.squashfs
		echo "$(cat "$d/cmdline") init=/bin/sh" > "$d/cmdline"
		(cd "$d" && sha256sum version cmdline root.size vmlinuz initrd.img root.squashfs > SHA256SUMS)
		tar -C "$d" --format=gnu -cf "$tampered" SHA256SUMS SHA256SUMS.minisig version cmdline root.size vmlinuz initrd.img root.squashfs
		rm -rf "$d"
	fi
	export EDGEGW_IMAGE_UPDATE=$good EDGEGW_IMAGE_BROKEN=$broken EDGEGW_IMAGE_UNSIGNED=$unsigned EDGEGW_IMAGE_TAMPERED=$tampered
fi
log "ready to boot after $(( $(date +%s) - start ))s"
export EDGEGW_IMAGE_CONSOLE=$OUT/test-console.log
cd "$IMAGE_DIR"
go test -count=1 -v -timeout 60m -run '^TestAppliance$' .
