# Phases 3-5 of image/build.sh: the appliance's own files on the cached
# Debian root, the squashfs, the update bundle and the manifest. Sourced.

customize() {
	local r=$1
	log "customize: unpack the root, add edgegw $VERSION and the appliance's files"
	rm -rf "$r"; mkdir -p "$r"
	tar -C "$r" --numeric-owner --xattrs --xattrs-include='security.capability' -xpf "$ROOTFS_TAR"
	# The overlay, owned by root whoever checked the tree out.
	tar -C "$IMAGE_DIR/rootfs" --owner=0 --group=0 --numeric-owner -cf - . | tar -C "$r" --numeric-owner -xf -
	chmod 0755 "$r/usr/libexec/edgegw/start" "$r/usr/libexec/edgegw/health" "$r/usr/libexec/edgegw/provision" \
		"$r/usr/sbin/edgegw-update"
	# The public key every update must be signed with (lib/sign.sh).
	install -D -m 0644 "$SIGN_PUB" "$r/usr/share/edgegw/update.pub"
	install -d "$r/usr/share/doc/edgegw"
	install -m 0644 "$IMAGE_DIR/README.md" "$r/usr/share/doc/edgegw/README.md" 2>/dev/null || true

	# Persistent paths point into the data partition; the rest is read-only.
	rm -rf "$r/etc/edgegw" "$r/var/lib/edgegw"
	ln -s /data/etc/edgegw "$r/etc/edgegw"
	ln -s /data/edgegw "$r/var/lib/edgegw"
	mkdir -p "$r/data" "$r/efi"
	ln -sfn ../run/systemd/resolve/stub-resolv.conf "$r/etc/resolv.conf"
	: > "$r/etc/machine-id"

	# The pristine os-release: stamp_version appends this build's version.
	cp "$r/usr/lib/os-release" "$WORK/os-release"
	stamp_version "$r" "$WORK/edgegw" "$VERSION" "$VARIANT"

	systemctl --root="$r" --quiet enable edgegw.service edgegw-provision.service edgegw-health.service \
		systemd-networkd.service systemd-resolved.service systemd-timesyncd.service ssh.service
	# Only edgegw-update writes the ESP; only edgegw touches nftables; only
	# edgegw's own charon (tunnel/ipsec, private config and VICI socket)
	# speaks IKE, so Debian's strongswan.service must not hold UDP 500 and
	# 4500; a read-only root has no packages to upgrade or databases to
	# back up.
	systemctl --root="$r" --quiet mask systemd-boot-update.service nftables.service strongswan.service \
		apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer e2scrub_reap.service
	# systemctl --root leaves what it links with the build's times.
	rm -f "$r/etc/systemd/system/multi-user.target.wants/nftables.service"

	# Kernel and initrd go to the ESP, not into the root.
	local kver
	kver=$(ls -1 "$r/boot" | sed -n 's/^vmlinuz-//p' | sort -V | tail -1)
	[ -n "$kver" ] || die "no kernel in the root"
	cp "$r/boot/vmlinuz-$kver" "$WORK/vmlinuz"
	cp "$r/boot/initrd.img-$kver" "$WORK/initrd.img"
	echo "$kver" > "$WORK/kernel-version"
	rm -f "$r"/boot/* "$r"/vmlinuz* "$r"/initrd.img*
	echo "$KERNEL_CMDLINE" > "$WORK/cmdline"
}

# stamp_version ROOT BINARY VERSION VARIANT: what differs between images of
# one tree: the edgegw binary, the version in os-release and the bundle,
# and the broken variant's drop-in. customize calls it; build.sh
# --test-bundles calls it again on the same root for each test bundle.
stamp_version() {
	local r=$1 bin=$2 version=$3 variant=$4
	install -m 0755 "$bin" "$r/usr/bin/edgegw"
	cp "$WORK/os-release" "$r/usr/lib/os-release"
	cat >> "$r/usr/lib/os-release" <<-REL
	IMAGE_ID=edgegw
	IMAGE_VERSION=$version
	REL
	rm -f "$r/etc/systemd/system/edgegw.service.d/broken.conf"
	rmdir "$r/etc/systemd/system/edgegw.service.d" 2> /dev/null || true
	if [ "$variant" = broken ]; then
		# Test only: an edgegw that never becomes ready.
		mkdir -p "$r/etc/systemd/system/edgegw.service.d"
		printf '[Service]\nExecStart=\nExecStart=/bin/sleep infinity\n' > "$r/etc/systemd/system/edgegw.service.d/broken.conf"
	fi
	echo "$version" > "$WORK/version"
}

make_squashfs() {
	local r=$1 out=$2
	log "squashfs"
	env -u SOURCE_DATE_EPOCH mksquashfs "$r" "$out" -noappend -quiet -no-progress -comp zstd -Xcompression-level 3 \
		-mkfs-time "$SOURCE_DATE_EPOCH" -all-time "$SOURCE_DATE_EPOCH" -processors "$(nproc)" > "$WORK/mksquashfs.log" 2>&1 \
		|| { tail "$WORK/mksquashfs.log"; die "mksquashfs failed"; }
	local size max=$((ROOT_MIB * 1024 * 1024))
	size=$(stat -c %s "$out")
	[ "$size" -le "$max" ] || die "root.squashfs is $size bytes; a slot holds $max (ROOT_MIB in lib/common.sh)"
	log "root.squashfs: $((size / 1024 / 1024)) MiB of a $ROOT_MIB MiB slot"
}

# make_bundle DIR OUT: the A/B update bundle that edgegw-update applies,
# signed (lib/sign.sh), then verified with the image's public key the way
# the appliance will: a bundle that would be refused is never published.
make_bundle() {
	local w=$1 out=$2
	log "update bundle $(basename "$out")"
	stat -c %s "$w/root.squashfs" > "$w/root.size"
	(cd "$w" && sha256sum version cmdline root.size vmlinuz initrd.img root.squashfs > SHA256SUMS)
	sign_bundle_sums "$w" "$(cat "$w/version")"
	touch -d "@$SOURCE_DATE_EPOCH" "$w"/{SHA256SUMS,SHA256SUMS.minisig,version,cmdline,root.size,vmlinuz,initrd.img,root.squashfs}
	# This order, small members first: the signature is checked on the
	# first two, then each member against its signed sum as it streams
	# (cmd/edgegw/update.go, verifyBundle); edgegw-update then streams
	# root.squashfs onto the slot.
	tar -C "$w" --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner --format=gnu \
		-cf "$out.tmp" SHA256SUMS SHA256SUMS.minisig version cmdline root.size vmlinuz initrd.img root.squashfs
	"$WORK/edgegw" update --verify "$out.tmp" --pubkey "$SIGN_PUB" > /dev/null \
		|| die "$(basename "$out") does not verify with $SIGN_PUB: EDGEGW_SIGNING_PUB is not the public half of EDGEGW_SIGNING_KEY?"
	mv "$out.tmp" "$out"
}

write_manifest() {
	local r=$1 out=$2
	{
		echo "# edgegw appliance image"
		echo "version: $VERSION"
		echo "variant: $VARIANT"
		echo "kernel: $(cat "$WORK/kernel-version")"
		echo "source-date-epoch: $SOURCE_DATE_EPOCH"
		echo "lockfile: image/packages.lock ($LOCK_MODE), sha256 $(sha256sum < "$LOCKFILE" | cut -c1-64)"
		if [ -s "$LOCK_DRIFT" ]; then
			echo "lock-drift: $(grep -c . "$LOCK_DRIFT") packages differ from the lockfile (name locked -> installed):"
			sed 's/^/  /' "$LOCK_DRIFT"
		else
			echo "lock-drift: none (every package as locked)"
		fi
		echo "update-key: $SIGN_ID, $SIGN_KIND"
		echo "edgegw: sha256 $(sha256sum < "$WORK/edgegw" | cut -c1-64)"
		sed 's/^/root.squashfs+kernel: /' "$WORK/SHA256SUMS"
		echo "# Debian packages (name version)"
		dpkg-query --admindir="$r/var/lib/dpkg" -W -f '${binary:Package} ${Version}\n' | sed 's/:amd64 / /' | LC_ALL=C sort
	} > "$out"
}
