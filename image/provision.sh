#!/usr/bin/env bash
# Write first-boot provisioning files into the EDGEGW-CFG partition of a raw
# edgegw disk image (or of a FAT image file), with mtools: no mounts, no
# root needed.
#
#   image/provision.sh IMAGE [--config edgegw.yaml] [--ssh-key id.pub]
#                            [--env appliance.env] [--file PATH]...
#
# The appliance imports them at its next boot (see image/README.md).
set -euo pipefail

[ $# -ge 1 ] || { sed -n '2,9p' "$0" >&2; exit 2; }
img=$1; shift
[ -f "$img" ] || { echo "provision.sh: $img: no such file" >&2; exit 1; }

# Where the partition starts: the GPT entry named edgegw-config, or the
# start of the file for a bare FAT image.
target=$img
if start=$(sfdisk -d "$img" 2>/dev/null | sed -n 's/.*start= *\([0-9]*\),.*name="edgegw-config".*/\1/p') && [ -n "$start" ]; then
	target="$img@@$((start * 512))"
fi

put() { mcopy -o -i "$target" "$1" "::/$2"; echo "provision.sh: $2"; }
while [ $# -gt 0 ]; do
	case "$1" in
	--config) put "$2" edgegw.yaml; shift 2 ;;
	--ssh-key) put "$2" authorized_keys; shift 2 ;;
	--env) put "$2" appliance.env; shift 2 ;;
	--file) put "$2" "$(basename "$2")"; shift 2 ;;
	*) echo "provision.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
mdir -i "$target" ::/
