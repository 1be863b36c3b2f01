// Package image holds edgegw's appliance image: build.sh builds a bootable
// x86-64 UEFI disk (systemd-boot, A/B read-only squashfs roots, a config and
// a data partition) from this tree, and the tests in this directory boot it
// in QEMU, where they also run the kernel dataplane tests of a test pack
// (testpack.sh: image/kerneltest and the tunnel packages' own tests,
// compiled here). They are skipped unless EDGEGW_IMAGE_DIR names a built
// image directory (image/test.sh sets it), so `go test ./...` stays fast.
package image
