# maskgate task runner. The two commands a newcomer needs:
#   make demo   - the main job, end to end on built-in defaults
#   make test   - every test: host, aarch64 under qemu, armv7 build
# Both run scripts/setup.sh first (idempotent: apt packages, rust targets, libtorch venv).

SHELL := /bin/bash
CARGO ?= cargo
HOST_PACKAGES := -p maskgate-shared -p edge -p trainer -p maskgate-e2e
CROSS_PACKAGES := -p maskgate-shared -p edge
OUT ?= out/demo

CARGO_TARGET_DIR_OR_TARGET = $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)

.PHONY: setup demo ablation test test-host test-aarch64 build-armv7 package test-package fmt clippy

setup:
	@bash scripts/setup.sh

# The dev profile already builds every dependency at opt-level 3 (Cargo.toml), so the demo
# shares the test build instead of compiling tract and libtorch bindings a second time.
demo: setup
	$(CARGO) build -p trainer -p edge -p maskgate-e2e
	bash scripts/demo.sh "$(OUT)"

# Every ablation row (docs/ABLATION.md) on the demo's data, budget and seeds (~40 min on 2 cores).
ablation: setup
	$(CARGO) build -p trainer -p edge -p maskgate-e2e
	$(CARGO_TARGET_DIR_OR_TARGET)/debug/maskgate-demo ablation --out out/ablation
	@echo "out/ablation/ablation.md written; docs/ABLATION.md keeps the committed run with its reading"

test: setup test-host test-aarch64 build-armv7 test-package
	@echo "all test stages passed"

test-host:
	$(CARGO) test $(HOST_PACKAGES)

# The edge runs on ARM: its unit tests (and the shared contracts) run under qemu-aarch64, with
# the device features (V4L2 camera, GPIO) the deployment package ships.
test-aarch64:
	EDGE_TEST_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu" \
	  $(CARGO) test --target aarch64-unknown-linux-gnu $(CROSS_PACKAGES) --features edge/device

# Proves the armv7 build (dev profile, to keep CI short; `make package` builds release).
build-armv7:
	$(CARGO) build --target armv7-unknown-linux-gnueabihf -p edge --features device

# Device tarballs (aarch64, armv7) in out/package; BUNDLE=path adds the signed bundle.
package: setup
	bash scripts/package.sh

# Install the aarch64 package into a scratch root and run it under qemu.
test-package:
	PROFILE=dev bash scripts/test-package.sh

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy $(HOST_PACKAGES) --all-targets

# docs/BENCHMARKS.md: the edge and the trainer next to onnxruntime and PyTorch eager on this
# machine (about 10 minutes on 2 cores). The reference runtimes live in .venv-bench (full
# PyTorch, ~5 GB), created on first use here only, never by setup or CI.
# `make bench BENCH_ARGS=--quick` is a one-minute smoke run into out/bench/BENCHMARKS.quick.md.
BENCH_ARGS ?= --out docs/BENCHMARKS.md
.PHONY: bench
bench: setup
	bash scripts/bench/ensure_venv.sh
	$(CARGO) build -p trainer -p edge -p maskgate-e2e
	"$${CARGO_TARGET_DIR:-target}/debug/maskgate-bench" $(BENCH_ARGS)
