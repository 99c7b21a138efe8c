# Weft — the two commands:
#   make run    install what is missing, build release, start `weft up`, run a short demo, stop
#   make test   install what tests need, build, run every test
SHELL := /bin/bash
SWIFT ?= swift
DEB_PACKAGES := pkg-config liblmdb-dev libfabric-dev libibverbs-dev librdmacm-dev libseccomp-dev redis-server etcd-server etcd-client iproute2 curl python3-venv
PROTO_PACKAGES := protobuf-compiler
RELEASE_BIN := .build/release/weft

.PHONY: run test deps build release proto bench bench-quick clean

# Installs missing Debian packages (as root, or through sudo).
deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

build: deps
	$(SWIFT) build

# The CLI, the sandbox launcher, and the example functions the demo deploys.
release: deps
	$(SWIFT) build -c release --product weft
	$(SWIFT) build -c release --product weft-launcher
	$(SWIFT) build -c release --product hello
	$(SWIFT) build -c release --product wordcount
	$(SWIFT) build -c release --product weft-bench-function

# Starts the embedded single node, runs Examples/demo.sh against it, stops it.
run: release
	@bash Examples/demo.sh $(RELEASE_BIN)

# Runs every test from one debug build. Before the run, the two heavy writes a fresh clone
# makes are out of the way, so they do not starve the tests' timing (they did, in CI only):
# the k8s manifest validator's 144 MB pip install (into .build/tools) comes before the build,
# and `sync` flushes the build's dirty pages (the figures are printed). At most six tests run
# at once: the suite takes as long (its cluster tests set the pace: 77 s here, against 80 s with
# every test started at once), and a two-core machine no longer starts 300 tests together, a
# burst in which timing-bound tests (1-2 s etcd leases) missed their deadlines in CI.
test: deps
	bash Cluster/k8s/validate.sh --install
	$(SWIFT) build --build-tests
	@grep -E '^(Dirty|Writeback):' /proc/meminfo | tr -s ' ' | paste -sd ' ' | sed 's/^/before sync: /'; sync
	$(SWIFT) test --skip-build --disable-xctest --experimental-maximum-parallelization-width 6

bench: release
	$(RELEASE_BIN) bench state
	$(RELEASE_BIN) bench invoke

bench-quick: release
	$(RELEASE_BIN) bench state --quick
	$(RELEASE_BIN) bench invoke --quick

# Regenerates Sources/WeftWire/Generated from Proto/ (the output is committed).
proto:
	@dpkg -s $(PROTO_PACKAGES) >/dev/null 2>&1 || { SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $(PROTO_PACKAGES); }
	$(SWIFT) build --product protoc-gen-swift
	protoc --plugin=protoc-gen-swift=.build/debug/protoc-gen-swift \
	  --swift_out=Sources/WeftWire/Generated --swift_opt=Visibility=Public -I Proto Proto/weft.proto

clean:
	rm -rf .build
