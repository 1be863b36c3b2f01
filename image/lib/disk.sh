# Phase 6 of image/build.sh: the GPT disk, assembled from file system images
# with sfdisk and dd; mkfs.fat and mtools write the FAT partitions. No loop
# devices, no mounts. Sourced.
#
#   1  ESP        FAT32 "ESP": systemd-boot, loader.conf, per-slot kernel+initrd
#   2  root A     squashfs of this build (slot a, entry edgegw-0001-a.conf)
#   3  root B     empty until the first update
#   4  config     FAT "EDGEGW-CFG": first-boot provisioning (README.txt)
#   5  data       ext4, made at first boot (x-systemd.makefs): /data

TYPE_ESP=C12A7328-F81F-11D2-BA4B-00A0C93EC93B
TYPE_LINUX=0FC63DAF-8483-4772-8E79-3D69D8477DE4
TYPE_BASIC_DATA=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7

# mfat IMG: mtools on a FAT image file, times from SOURCE_DATE_EPOCH.
mcopy_sde() { local img=$1; shift; mcopy -m -o -i "$img" "$@"; }

make_esp() {
	local w=$1 img=$2
	local s=$w/esp
	rm -rf "$s"; mkdir -p "$s/EFI/BOOT" "$s/EFI/systemd" "$s/loader/entries" "$s/edgegw/a"
	cp "$w/root/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "$s/EFI/BOOT/BOOTX64.EFI"
	cp "$w/root/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "$s/EFI/systemd/systemd-bootx64.efi"
	cat > "$s/loader/loader.conf" <<-CONF
	# edgegw appliance: boot the newest slot (highest generation) that has
	# tries left; see edgegw-update.
	default edgegw-*
	timeout 0
	editor no
	auto-entries no
	auto-firmware no
	console-mode keep
	CONF
	cat > "$s/loader/entries/edgegw-0001-a.conf" <<-ENTRY
	title      edgegw $VERSION (slot a)
	version    $VERSION
	linux      /edgegw/a/vmlinuz
	initrd     /edgegw/a/initrd.img
	options    root=PARTUUID=$UUID_ROOT_A edgegw.slot=a $KERNEL_CMDLINE
	ENTRY
	cp "$w/vmlinuz" "$w/initrd.img" "$s/edgegw/a/"
	sde_touch "$s"

	rm -f "$img"
	mkfs.fat -C -F 32 -n ESP -i 5e1f0001 --invariant "$img" $((ESP_MIB * 1024)) > /dev/null
	local d f
	(cd "$s" && find . -mindepth 1 -type d | LC_ALL=C sort) | while read -r d; do
		mmd -i "$img" "::/${d#./}"
	done
	(cd "$s" && find . -type f | LC_ALL=C sort) | while read -r f; do
		mcopy_sde "$img" "$s/${f#./}" "::/${f#./}"
	done
}

make_cfg() {
	local w=$1 img=$2
	cat > "$w/README.txt" <<-'TXT'
	edgegw appliance configuration partition (label EDGEGW-CFG).

	Files put here are imported at every boot when their content changed:
	  edgegw.yaml      -> /etc/edgegw/edgegw.yaml (the gateway's configuration)
	  authorized_keys  -> root's SSH authorized keys (no key: no SSH login);
	                      imported at the first boot only, unless
	                      appliance.env says EDGEGW_AUTHORIZED_KEYS=replace
	  appliance.env    -> appliance settings (EDGEGW_HEALTH_DEADLINE=180,
	                      EDGEGW_AUTHORIZED_KEYS=first-boot|replace)
	  any other file   -> /etc/edgegw/NAME (keys and certificates the
	                      configuration names)
	From a Linux host without mounting: image/provision.sh (mtools).
	TXT
	sed -i 's/$/\r/' "$w/README.txt"
	touch -d "@$SOURCE_DATE_EPOCH" "$w/README.txt"
	rm -f "$img"
	mkfs.fat -C -n EDGEGW-CFG -i 5e1f00cf --invariant "$img" $((CFG_MIB * 1024)) > /dev/null
	mcopy_sde "$img" "$w/README.txt" ::/README.txt
}

make_disk() {
	local w=$1 out=$2
	log "disk: ESP, config partition"
	make_esp "$w" "$w/esp.img"
	make_cfg "$w" "$w/cfg.img"

	# Sector layout (512-byte sectors, 1 MiB = 2048).
	local esp_start=2048
	local a_start=$((esp_start + ESP_MIB * 2048))
	local b_start=$((a_start + ROOT_MIB * 2048))
	local cfg_start=$((b_start + ROOT_MIB * 2048))
	local data_start=$((cfg_start + CFG_MIB * 2048))
	local end=$((data_start + DATA_MIB * 2048))
	log "disk: GPT, $(( (end + 2048) / 2048 )) MiB"
	rm -f "$out"
	truncate -s $(( (end + 2048) * 512 )) "$out"
	sfdisk --quiet --no-reread --no-tell-kernel "$out" <<-GPT
	label: gpt
	label-id: $DISK_GUID
	unit: sectors
	first-lba: 2048
	start=$esp_start, size=$((ESP_MIB * 2048)), type=$TYPE_ESP, uuid=$UUID_ESP, name="ESP"
	start=$a_start, size=$((ROOT_MIB * 2048)), type=$TYPE_LINUX, uuid=$UUID_ROOT_A, name="edgegw-root-a"
	start=$b_start, size=$((ROOT_MIB * 2048)), type=$TYPE_LINUX, uuid=$UUID_ROOT_B, name="edgegw-root-b"
	start=$cfg_start, size=$((CFG_MIB * 2048)), type=$TYPE_BASIC_DATA, uuid=$UUID_CFG, name="edgegw-config"
	start=$data_start, size=$((DATA_MIB * 2048)), type=$TYPE_LINUX, uuid=$UUID_DATA, name="edgegw-data"
	GPT
	dd if="$w/esp.img" of="$out" bs=1M seek=$((esp_start / 2048)) conv=notrunc,sparse status=none
	dd if="$w/root.squashfs" of="$out" bs=1M seek=$((a_start / 2048)) conv=notrunc,sparse status=none
	dd if="$w/cfg.img" of="$out" bs=1M seek=$((cfg_start / 2048)) conv=notrunc,sparse status=none
	echo "$cfg_start" > "$w/cfg-offset"
}
