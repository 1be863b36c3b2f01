# Phase 1 of image/build.sh: the Debian root, built once per lockfile and
# cached as a tarball. Sourced, not run.
#
# Inputs: ROOTFS_KEY, CACHE, LOCKFILE, LOCK_MODE (strict|prefer|refresh),
# SOURCE_DATE_EPOCH, IMAGE_DIR. Output: $CACHE/rootfs-$ROOTFS_KEY.tar.

MIRROR=${EDGEGW_IMAGE_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${EDGEGW_IMAGE_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SUITE=bookworm

# What the appliance runs. Everything else comes in as a dependency; the
# lockfile pins the whole closure.
PACKAGES="systemd systemd-sysv systemd-boot systemd-resolved systemd-timesyncd
udev dbus kmod initramfs-tools zstd linux-image-amd64
nftables iproute2 iputils-ping wireguard-tools
charon-systemd libcharon-extra-plugins libstrongswan-standard-plugins strongswan-swanctl
openssh-server curl ca-certificates e2fsprogs dosfstools util-linux procps netbase"

# The files that decide phase 1's output: a change to any of them is a new
# cache key.
rootfs_inputs() {
	printf '%s\n' "$IMAGE_DIR/lib/rootfs.sh" "$LOCKFILE"
	find "$IMAGE_DIR/rootfs/etc/initramfs-tools" -type f | LC_ALL=C sort
}

rootfs_key() {
	local f
	{
		echo "lock-mode $LOCK_MODE"
		for f in $(rootfs_inputs); do
			[ -f "$f" ] && { echo "== ${f#"$IMAGE_DIR"/}"; cat "$f"; }
		done
	} | sha256sum | cut -c1-16
}

chroot_mounts() {
	local r=$1
	mount -t proc proc "$r/proc"
	mount -t sysfs sysfs "$r/sys"
	mount --bind /dev "$r/dev"
	mount --bind /dev/pts "$r/dev/pts"
}

chroot_umounts() {
	local r=$1 m
	for m in dev/pts dev sys proc; do
		mountpoint -q "$r/$m" && umount -l "$r/$m"
	done
	return 0
}

# locked_versions prints "name=version" for every package in the lockfile.
locked_versions() {
	grep -v '^#' "$LOCKFILE" | awk 'NF == 2 { print $1 "=" $2 }'
}

write_lockfile() {
	local r=$1
	{
		echo "# edgegw appliance image: every Debian package in the root, pinned."
		echo "# Written by 'image/build.sh --lock refresh'; read by every other build."
		echo "# suite: $SUITE (+ $SUITE-updates, $SUITE-security)"
		echo "# source-date-epoch: $SOURCE_DATE_EPOCH"
		chroot "$r" dpkg-query -W -f '${binary:Package} ${Version}\n' | sed 's/:amd64 / /' | LC_ALL=C sort
	} > "$LOCKFILE.new"
	mv "$LOCKFILE.new" "$LOCKFILE"
}

# check_lock compares the installed packages with the lockfile; prints the
# differences and returns 1 when there are any.
check_lock() {
	local r=$1
	diff <(locked_versions | tr '=' ' ' | LC_ALL=C sort) \
		<(chroot "$r" dpkg-query -W -f '${binary:Package} ${Version}\n' | sed 's/:amd64 / /' | LC_ALL=C sort)
}

# lock_drift ROOT prints "NAME LOCKED -> INSTALLED" for every package whose
# installed version is not the locked one ("(none)": not locked, or not
# installed). build.sh prints it at every build and write_manifest records
# it: the manifest says what went in.
lock_drift() {
	local r=$1
	LC_ALL=C join -a1 -a2 -e '(none)' -o 0,1.2,2.2 \
		<(locked_versions | tr '=' ' ' | LC_ALL=C sort) \
		<(dpkg-query --admindir="$r/var/lib/dpkg" -W -f '${binary:Package} ${Version}\n' | sed 's/:amd64 / /' | LC_ALL=C sort) |
		awk '$2 != $3 { print $1, $2, "->", $3 }'
}

build_rootfs() {
	local out=$1 r="$WORK/rootfs"
	rm -rf "$r"
	mkdir -p "$r" "$CACHE/debs"
	# build.sh's EXIT trap undoes chroot_mounts if anything here fails.

	log "debootstrap $SUITE (minbase)"
	debootstrap --variant=minbase --arch=amd64 --cache-dir="$CACHE/debs" \
		--include=ca-certificates "$SUITE" "$r" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 \
		|| { tail -30 "$WORK/debootstrap.log"; die "debootstrap failed (log: $WORK/debootstrap.log)"; }

	cat > "$r/etc/apt/sources.list" <<-SRC
	deb $MIRROR $SUITE main
	deb $MIRROR $SUITE-updates main
	deb $SECURITY_MIRROR $SUITE-security main
	SRC
	# No documentation, manual pages or translations on the appliance.
	cat > "$r/etc/dpkg/dpkg.cfg.d/90-edgegw-nodoc" <<-CFG
	path-exclude=/usr/share/doc/*
	path-include=/usr/share/doc/*/copyright
	path-exclude=/usr/share/man/*
	path-exclude=/usr/share/info/*
	path-exclude=/usr/share/locale/*
	path-exclude=/usr/share/lintian/*
	CFG
	printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' > "$r/etc/apt/apt.conf.d/90-edgegw"
	# Nothing starts inside the build chroot.
	printf '#!/bin/sh\nexit 101\n' > "$r/usr/sbin/policy-rc.d"
	chmod +x "$r/usr/sbin/policy-rc.d"
	# The initramfs hooks and modules are inputs of this phase.
	cp -a "$IMAGE_DIR/rootfs/etc/initramfs-tools/." "$r/etc/initramfs-tools/"
	# The appliance's kernel needs no bootloader hook: build.sh puts the
	# kernel on the ESP itself.
	# One initramfs at the end instead of one per kernel and trigger.
	mkdir -p "$r/etc/initramfs-tools"
	echo update_initramfs=no > "$r/etc/initramfs-tools/update-initramfs.conf"
	chroot_mounts "$r"

	export DEBIAN_FRONTEND=noninteractive
	local apt=(apt-get -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
	log "apt-get update"
	chroot "$r" apt-get -q update > "$WORK/apt.log" 2>&1 || { tail -20 "$WORK/apt.log"; die "apt-get update failed"; }

	local pinned=0 gone=0
	if [ "$LOCK_MODE" != refresh ] && [ -s "$LOCKFILE" ]; then
		local pins
		mapfile -t pins < <(locked_versions)
		if [ "$LOCK_MODE" = prefer ]; then
			# A mirror keeps only the newest version of a package (plus
			# the point release's): a locked version that is gone is
			# installed at the mirror's current one, and the drift is
			# printed here and recorded in the manifest.
			local avail i
			avail=$(chroot "$r" apt-cache madison "${pins[@]%%=*}" 2>/dev/null | awk -F'|' '{ gsub(/ /, ""); print $1 "=" $2 }' | LC_ALL=C sort -u)
			for i in "${!pins[@]}"; do
				if ! grep -qxF -- "${pins[$i]}" <<< "$avail"; then
					log "WARNING: ${pins[$i]} (locked) is gone from the mirror: installing its current version"
					pins[i]=${pins[$i]%%=*}
					gone=$((gone + 1))
				fi
			done
		fi
		log "install the ${#pins[@]} locked packages ($gone of them at the mirror's current version)"
		if chroot "$r" "${apt[@]}" install --allow-downgrades "${pins[@]}" >> "$WORK/apt.log" 2>&1; then
			pinned=1
		elif [ "$LOCK_MODE" = strict ]; then
			grep -E '^E:|not found' "$WORK/apt.log" | head -20 >&2
			die "the mirror no longer serves every version in $LOCKFILE (EDGEGW_IMAGE_LOCK=strict); run with --lock refresh (new pins) or without strict"
		else
			log "WARNING: the locked versions do not install together; installing the mirror's current ones (the drift is in the manifest)"
		fi
	fi
	if [ "$pinned" = 0 ]; then
		local pkgs
		read -r -d '' -a pkgs <<< "$PACKAGES" || true
		log "install ${#pkgs[@]} packages and their dependencies"
		# Upgrade first: installing systemd-resolved replaces the chroot's
		# resolv.conf, and nothing is downloaded after that.
		chroot "$r" "${apt[@]}" upgrade >> "$WORK/apt.log" 2>&1 || { tail -30 "$WORK/apt.log"; die "apt-get upgrade failed"; }
		chroot "$r" "${apt[@]}" install "${pkgs[@]}" >> "$WORK/apt.log" 2>&1 || { tail -30 "$WORK/apt.log"; die "apt-get install failed"; }
	fi
	# Debootstrap's base carries packages the appliance does not need
	# (Priority: required stays). Nothing is purged: the lock holds them.

	case "$LOCK_MODE" in
	refresh) write_lockfile "$r"; log "wrote $LOCKFILE" ;;
	strict)
		if ! check_lock "$r" > "$WORK/lock.diff"; then
			cat "$WORK/lock.diff" >&2
			die "installed packages differ from $LOCKFILE (diff above: < locked, > installed); run with --lock refresh"
		fi ;;
	esac

	echo update_initramfs=yes > "$r/etc/initramfs-tools/update-initramfs.conf"
	local kver
	kver=$(ls -1 "$r/lib/modules" | sort -V | tail -1)
	# Hardware an edge gateway does not drive: sound, video, GPUs, Wi-Fi,
	# Bluetooth, InfiniBand, industrial I/O, staging drivers. A third of the
	# modules, and of the slot.
	local k="$r/lib/modules/$kver/kernel"
	rm -rf "$k/sound" "$k/drivers/media" "$k/drivers/gpu" "$k/drivers/infiniband" "$k/drivers/iio" \
		"$k/drivers/staging" "$k/drivers/comedi" "$k/drivers/isdn" "$k/drivers/bluetooth" \
		"$k/drivers/net/wireless" "$k/net/bluetooth" "$k/net/mac80211" "$k/net/wireless"
	chroot "$r" depmod -a "$kver"
	log "initramfs for $kver"
	rm -f "$r"/boot/initrd.img-*
	chroot "$r" env SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" mkinitramfs -o "/boot/initrd.img-$kver" "$kver" > "$WORK/initramfs.log" 2>&1 \
		|| { tail -20 "$WORK/initramfs.log"; die "mkinitramfs failed"; }

	chroot_umounts "$r"

	# What a build run leaves that differs from run to run, or that must not
	# ship (host keys, machine identity, caches, logs).
	rm -f "$r/usr/sbin/policy-rc.d" "$r"/etc/ssh/ssh_host_* "$r/var/lib/dbus/machine-id" \
		"$r/var/cache/ldconfig/aux-cache" "$r"/var/lib/dpkg/*-old "$r/etc/resolv.conf"
	rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/* "$r"/var/cache/debconf/*-old \
		"$r"/var/log/* "$r"/tmp/* "$r"/var/tmp/* "$r"/run/*
	: > "$r/etc/machine-id"
	# Password-change dates are "today" in debootstrap's output.
	local days=$((SOURCE_DATE_EPOCH / 86400))
	sed -i -E "s/^([^:]*:[^:]*:)[0-9]+:/\1${days}:/" "$r/etc/shadow" "$r/etc/shadow-" 2>/dev/null || true

	log "cache the root as $(basename "$out")"
	tar -C "$r" --sort=name --mtime="@$SOURCE_DATE_EPOCH" --clamp-mtime --numeric-owner \
		--xattrs --xattrs-include='security.capability' -cf "$out.tmp" .
	mv "$out.tmp" "$out"
	rm -rf "$r"
}
