# Shared helpers for image/build.sh phases. Sourced, not run.

log() { printf '== %s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }

# Fixed GPT identifiers: the same on every build, so the boot entries and
# fstab can name partitions by PARTUUID and the image is byte-for-byte
# reproducible.
DISK_GUID=5e1f0a9c-7b1e-4d0a-9d3c-000000000000
UUID_ESP=5e1f0a9c-7b1e-4d0a-9d3c-000000000001
UUID_ROOT_A=5e1f0a9c-7b1e-4d0a-9d3c-00000000000a
UUID_ROOT_B=5e1f0a9c-7b1e-4d0a-9d3c-00000000000b
UUID_CFG=5e1f0a9c-7b1e-4d0a-9d3c-0000000000cf
UUID_DATA=5e1f0a9c-7b1e-4d0a-9d3c-0000000000da

# Partition sizes in MiB.
ESP_MIB=256
ROOT_MIB=640
CFG_MIB=16
DATA_MIB=256

# Kernel command line shared by every boot entry; the slot adds root= and
# edgegw.slot=.
KERNEL_CMDLINE="ro rootfstype=squashfs console=tty0 console=ttyS0,115200n8 panic=10 systemd.gpt_auto=0 net.ifnames=1"

# sde_touch DIR: set every mtime under DIR to SOURCE_DATE_EPOCH.
sde_touch() { find "$1" -exec touch -h -d "@${SOURCE_DATE_EPOCH}" {} +; }
