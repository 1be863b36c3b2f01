// Package kerneltest checks the Linux kernel dataplanes that edgegw uses or
// interoperates with: kernel WireGuard (also against edgegw's own
// wireguard-go device), kernel GRE (ip_gre) and ESP through xfrm with an
// xfrm interface, each passing traffic between network namespaces built with
// gateway/netlab.
//
// The build machine's kernel has none of these, so the tests skip there; the
// image test (image/test.sh) compiles them with `go test -c` and runs them
// inside the booted appliance, whose Debian kernel has every module. The
// package has no non-test code.
package kerneltest
