#!/usr/bin/env bash
# Build the edgegw appliance: a bootable x86-64 UEFI disk image (raw and
# qcow2), an A/B update bundle, and a manifest, from this tree and the Debian
# package versions pinned in image/packages.lock. See image/README.md.
#
#   image/build.sh [--out DIR] [--cache DIR] [--version V] [--lock MODE]
#                  [--bundle-only] [--variant broken] [--test-bundles]
#
# --lock prefer   (default) the locked versions the mirror still has; for
#                 the others the mirror's current version, with the drift
#                 printed and recorded in the manifest
# --lock strict   (release builds) install exactly the locked versions, fail
#                 if the mirror no longer has them
# --lock refresh  resolve anew and rewrite image/packages.lock
# --bundle-only   only the update bundle (tests build their second image so)
# --variant broken  an image whose edgegw never becomes ready (rollback test)
# --test-bundles  also the two bundles image/test.sh applies, from this
#                 build's root: VERSION-next, and VERSION-next-broken
#
# The update signing key: EDGEGW_SIGNING_KEY (lib/sign.sh); with none, a
# throwaway test key in OUT/test-signing-key.
#
# Phases: rootfs (cached per lockfile) → customize → squashfs → esp → disk →
# bundle → manifest. Needs root (debootstrap, chroot) and the Debian packages
# debootstrap squashfs-tools dosfstools mtools fdisk qemu-utils.
set -euo pipefail

IMAGE_DIR=$(cd "$(dirname "$0")" && pwd)
REPO_DIR=$(dirname "$IMAGE_DIR")
OUT=${EDGEGW_IMAGE_OUT:-$IMAGE_DIR/out}
CACHE=${EDGEGW_IMAGE_CACHE:-/var/cache/edgegw-image}
VERSION=${VERSION:-}
LOCK_MODE=${EDGEGW_IMAGE_LOCK:-prefer}
LOCKFILE=$IMAGE_DIR/packages.lock
BUNDLE_ONLY=0
VARIANT=normal
TEST_BUNDLES=0

while [ $# -gt 0 ]; do
	case "$1" in
	--out) OUT=$2; shift 2 ;;
	--cache) CACHE=$2; shift 2 ;;
	--version) VERSION=$2; shift 2 ;;
	--lock) LOCK_MODE=$2; shift 2 ;;
	--bundle-only) BUNDLE_ONLY=1; shift ;;
	--variant) VARIANT=$2; shift 2 ;;
	--test-bundles) TEST_BUNDLES=1; shift ;;
	-h|--help) sed -n '2,25p' "$0"; exit 0 ;;
	*) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
case "$LOCK_MODE" in strict|prefer|refresh) ;; *) echo "build.sh: --lock strict|prefer|refresh" >&2; exit 2 ;; esac
case "$VARIANT" in normal|broken) ;; *) echo "build.sh: --variant normal|broken" >&2; exit 2 ;; esac

. "$IMAGE_DIR/lib/common.sh"
. "$IMAGE_DIR/lib/rootfs.sh"
. "$IMAGE_DIR/lib/customize.sh"
. "$IMAGE_DIR/lib/disk.sh"
. "$IMAGE_DIR/lib/sign.sh"

[ "$(id -u)" = 0 ] || die "run as root (debootstrap and chroot)"
for t in debootstrap mksquashfs mkfs.fat mcopy sfdisk qemu-img; do
	command -v "$t" > /dev/null || die "$t missing: apt-get install debootstrap squashfs-tools dosfstools mtools fdisk qemu-utils"
done
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(sed -n 's/^# source-date-epoch: //p' "$LOCKFILE" 2>/dev/null || true)
	SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1767225600} # 2026-01-01
fi
export SOURCE_DATE_EPOCH
[ -n "$VERSION" ] || VERSION=$(git -C "$REPO_DIR" describe --tags --always --dirty 2>/dev/null || echo devel)
export LC_ALL=C TZ=UTC

mkdir -p "$OUT" "$CACHE"
WORK=$(mktemp -d "$CACHE/work.XXXXXX")
cleanup() { chroot_umounts "$WORK/rootfs" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
start=$(date +%s)

# build_edgegw VERSION OUT: the edgegw binary from this tree.
build_edgegw() {
	log "go build edgegw $1"
	(cd "$REPO_DIR" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath \
		-ldflags "-s -w -buildid= -X main.version=$1" -o "$2" ./cmd/edgegw)
}

# 1. the edgegw binary, and the update signing key (lib/sign.sh)
build_edgegw "$VERSION" "$WORK/edgegw"
signing_key

# 2. the Debian root, cached per lockfile
ROOTFS_KEY=$(rootfs_key)
ROOTFS_TAR=$CACHE/rootfs-$ROOTFS_KEY.tar
if [ -f "$ROOTFS_TAR" ] && [ "$LOCK_MODE" != refresh ]; then
	log "rootfs: cached $(basename "$ROOTFS_TAR")"
else
	build_rootfs "$ROOTFS_TAR"
	# A refreshed lockfile is a new key: store the tarball under it too.
	# (under the key a strict build computes: the root is what it would
	# install from the new lockfile)
	new_key=$(LOCK_MODE=strict; rootfs_key)
	if [ "$new_key" != "$ROOTFS_KEY" ]; then mv "$ROOTFS_TAR" "$CACHE/rootfs-$new_key.tar"; ROOTFS_TAR=$CACHE/rootfs-$new_key.tar; fi
	# Keep the newest three roots.
	ls -1t "$CACHE"/rootfs-*.tar | tail -n +4 | xargs -r rm -f
fi

# 3. the appliance's own files, the binary, the units
customize "$WORK/root"
LOCK_DRIFT=$WORK/lock-drift
lock_drift "$WORK/root" > "$LOCK_DRIFT"
if [ -s "$LOCK_DRIFT" ]; then
	log "WARNING: $(grep -c . "$LOCK_DRIFT") packages are not at their locked version (locked -> installed; in the manifest too):"
	sed 's/^/    /' "$LOCK_DRIFT" >&2
fi

# 4. read-only root filesystem, kernel and initrd
make_squashfs "$WORK/root" "$WORK/root.squashfs"

# 5. update bundle, manifest
NAME=edgegw-$VERSION
[ "$VARIANT" = normal ] || NAME=$NAME-$VARIANT
make_bundle "$WORK" "$OUT/$NAME.update.tar"
write_manifest "$WORK/root" "$OUT/$NAME.manifest"
if [ "$BUNDLE_ONLY" = 0 ]; then
	# 6. the disk: ESP, root A (this build), root B (empty), config, data
	make_disk "$WORK" "$OUT/$NAME.img"
	log "qcow2"
	qemu-img convert -f raw -O qcow2 "$OUT/$NAME.img" "$OUT/$NAME.qcow2"
	ln -sfn "$NAME.img" "$OUT/edgegw.img"
	ln -sfn "$NAME.qcow2" "$OUT/edgegw.qcow2"
	ln -sfn "$NAME.manifest" "$OUT/edgegw.manifest"
fi
if [ "$VARIANT" = normal ]; then ln -sfn "$NAME.update.tar" "$OUT/edgegw.update.tar"; fi
(cd "$OUT" && sha256sum "$NAME".* > "$NAME.sha256")
if [ "$TEST_BUNDLES" = 1 ]; then
	# 7. image/test.sh's update bundles, from the root already unpacked: the
	# same bytes as `--bundle-only --version VERSION-next [--variant broken]`
	# without a second unpack and customize.
	build_edgegw "$VERSION-next" "$WORK/edgegw-next"
	for v in normal broken; do
		name=edgegw-$VERSION-next
		[ "$v" = normal ] || name=$name-$v
		stamp_version "$WORK/root" "$WORK/edgegw-next" "$VERSION-next" "$v"
		make_squashfs "$WORK/root" "$WORK/root.squashfs"
		make_bundle "$WORK" "$OUT/$name.update.tar"
	done
fi
log "done in $(( $(date +%s) - start ))s:"
ls -l "$OUT/$NAME".* >&2
