#!/usr/bin/env bash
# make image-test: boot the built image in QEMU (TCG) and check it; see
# TestAppliance in image/appliance_test.go. Builds, from the cached root, the
# two update bundles the A/B tests apply: a working one of another version
# and one whose edgegw never becomes ready. Needs image/build.sh's output in
# $EDGEGW_IMAGE_OUT (default image/out) and the Debian packages
# qemu-system-x86 ovmf openssh-client mtools fdisk.
#
#   image/test.sh [--no-update]     --no-update: boot checks only
set -euo pipefail
IMAGE_DIR=$(cd "$(dirname "$0")" && pwd)
OUT=${EDGEGW_IMAGE_OUT:-$IMAGE_DIR/out}
[ -e "$OUT/edgegw.img" ] || { echo "test.sh: no $OUT/edgegw.img: run image/build.sh (make image) first" >&2; exit 1; }

export EDGEGW_IMAGE_DIR=$OUT
if [ "${1:-}" != --no-update ]; then
	start=$(date +%s)
	base=$(sed -n 's/^version: //p' "$OUT/edgegw.manifest")
	"$IMAGE_DIR/build.sh" --out "$OUT" --bundle-only --version "$base-next"
	"$IMAGE_DIR/build.sh" --out "$OUT" --bundle-only --version "$base-next" --variant broken
	export EDGEGW_IMAGE_UPDATE=$OUT/edgegw-$base-next.update.tar
	export EDGEGW_IMAGE_BROKEN=$OUT/edgegw-$base-next-broken.update.tar
	echo "== test bundles built in $(( $(date +%s) - start ))s"
fi
export EDGEGW_IMAGE_CONSOLE=$OUT/test-console.log
cd "$IMAGE_DIR"
go test -count=1 -v -timeout 60m -run '^TestAppliance$' .
