# edgegw: everything a developer or CI runs. Targets that touch the kernel
# (run, test, demo, bench) need root: network namespaces, TUN, nftables.

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS  := -s -w -X main.version=$(VERSION)
BIN      := bin/edgegw
CONFIG   ?=

.PHONY: all deps build run check test test-short fuzz bench demo demo-check lint clean image image-test image-test-quick

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/edgegw

## run: the gateway on its built-in default config (or CONFIG=file)
run: build
	./$(BIN) run $(if $(CONFIG),--config $(CONFIG))

## check: validate the example configuration (gateway/config/edgegw.example.yaml)
check: build
	./$(BIN) check --skip-files --config gateway/config/edgegw.example.yaml

## deps: install what the tests need (Debian packages, Go modules); quick when all are there
deps:
	./.ci/deps

## test: every test, end-to-end ones included (as root); installs what is missing first
test: deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 25m ./...

## test-short: unit tests only, no root needed
test-short:
	$(GO) test -short ./...

## fuzz: each fuzz target for a short while
FUZZTIME ?= 100000x  # a count: time-limited fuzzing stalls on busy 2-core machines (golang/go#75804)
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

## bench: benchmarks side by side with their peers; see BENCHMARKS.md
# Rounds, not -count: -count runs each case back to back; separate runs
# interleave them, which matters on a machine whose load drifts.
ROUNDS ?= 3
# The flow benchmarks compare within one run (edgegw's ingest and nfcapd on
# the same datagrams), so they run once, after the rounds.
bench:
	@{ for i in $$(seq $(ROUNDS)); do \
	  $(GO) test -run '^$$' -bench . -benchtime 1x -timeout 20m ./gateway/ || exit 1; \
	done; \
	$(GO) test -run '^$$' -bench 'IngestVsNfcapd|AlertLatency|Memory7Days' -benchtime 1x -timeout 20m \
	  ./netflow/ingest/ ./netflow/alert/ ./netflow/store/ || exit 1; \
	$(GO) test -run '^$$' -bench 'Query7Days' -benchtime 10x -timeout 20m ./netflow/store/ || exit 1; \
	} | tee bench.out

## demo: the whole office in namespaces with the real binary (enrollment, GRE and IPsec branches, firewall, DNS, Logpush), until Ctrl-C
demo: build
	$(GO) run ./gateway/netlab/demo --binary ./$(BIN)

## demo-check: the same office unattended, each step asserted; exits non-zero naming the failed step
demo-check: build
	$(GO) run ./gateway/netlab/demo --binary ./$(BIN) --check

## image: the appliance disk image, as root (image/README.md): image/out/edgegw.{img,qcow2,manifest,update.tar}; bundles signed with EDGEGW_SIGNING_KEY (none: a throwaway test key in image/out/test-signing-key); EDGEGW_IMAGE_LOCK=strict for release builds
image:
	VERSION=$(VERSION) image/build.sh

## image-test: build the image and its two test bundles, boot it in QEMU (TCG): readiness, modules, bad config, edgegw with a kernel WireGuard peer, the dataplane tests in the VM (kernel WireGuard, GRE, ESP), SSH keys provisioned once, unsigned and tampered bundles refused, A/B update and rollback (CI runs this beside make test; times in image/README.md)
image-test:
	VERSION=$(VERSION) image/build.sh --test-bundles
	image/test.sh

## image-test-quick: the same without update and rollback (one boot)
image-test-quick: image
	image/test.sh --no-update

clean:
	rm -rf bin bench.out image/out
