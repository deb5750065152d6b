# maskgate task runner. The two commands a newcomer needs:
#   make demo   - the main job, end to end on built-in defaults
#   make test   - every test on the host, the ARM-specific ones under qemu-aarch64, armv7 build
# Both run scripts/setup.sh first (idempotent: apt packages, rust targets, libtorch venv).

SHELL := /bin/bash
CARGO ?= cargo
# One package set and one feature set per target, used by every command below: cargo compiles a
# dependency once per (target, features) it is asked for, so `make demo`, `make test` and the
# package test must ask the same (a different -p list or `build` instead of `test` changes which
# dependency features are unified, and tract is compiled again).
HOST_PACKAGES := -p maskgate-shared -p edge -p trainer -p maskgate-e2e
CROSS_PACKAGES := -p maskgate-shared -p edge --features edge/device
AARCH64 := aarch64-unknown-linux-gnu
ARMV7 := armv7-unknown-linux-gnueabihf
OUT ?= out/demo

CARGO_TARGET_DIR_OR_TARGET = $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)

.PHONY: setup build-host demo ablation test test-host test-aarch64 build-armv7 package test-package fmt clippy

setup:
	@bash scripts/setup.sh

# The dev profile already builds every dependency at opt-level 3 (Cargo.toml). The demo builds
# its binaries as `make test` does (`cargo test --no-run` over the same packages), so a later
# `make test` compiles no dependency again.
demo: setup build-host
	bash scripts/demo.sh "$(OUT)"

build-host:
	$(CARGO) test --no-run $(HOST_PACKAGES)

# Every ablation row (docs/ABLATION.md) on the demo's data, budget and seeds (~40 min on 2 cores).
ablation: setup build-host
	$(CARGO_TARGET_DIR_OR_TARGET)/debug/maskgate-demo ablation --out out/ablation
	@echo "out/ablation/ablation.md written; docs/ABLATION.md keeps the committed run with its reading"

test: setup test-host test-aarch64 build-armv7 test-package
	@echo "all test stages passed"

test-host:
	$(CARGO) test $(HOST_PACKAGES)

# The edge runs on ARM, so what the ARM build can get wrong runs under qemu-aarch64, with the
# device features (V4L2 camera, GPIO) the deployment package ships:
#   --lib             every unit test of `shared` and `edge` compiled for aarch64 (the gallery's
#                     crypto and formats, templates, alignment, the door policy, config parsing);
#   model_numerics    the real models (YuNet + SFace) through tract's aarch64 kernels on three
#                     kit photos: every box, landmark, score and embedding against the x86-64
#                     reference (what a port gets wrong is arithmetic, not behaviour);
#   test-package      the installed binary: enroll and gallery commands on real models.
# The other integration tests (door daemon, admin API, CLI, locks and crashes, live enrollment,
# the behaviour checks of real_photos) drive arch-independent code through system calls that
# qemu-user hands to the host kernel: under qemu they prove nothing the host stage does not, at
# 20-50x the time. The trainer and the e2e crate need libtorch and stay on the host.
# Dependencies at opt-level 1 on this target: 13 min cold instead of 18 at opt-level 3, and
# what runs under qemu is a few model runs (tract's inner kernels are assembly either way).
AARCH64_TESTS := --lib --test model_numerics
AARCH64_BUILD := --target $(AARCH64) $(CROSS_PACKAGES) $(AARCH64_TESTS) \
  --config 'profile.dev.opt-level=1'
test-aarch64:
	EDGE_TEST_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu" $(CARGO) test $(AARCH64_BUILD)

# Proves that the armv7 edge compiles and links with the device features. Dependencies at
# opt-level 0 here: nothing runs this build, and optimising tract for a third target would be
# CI's longest step. `make package` builds the release binaries.
build-armv7:
	$(CARGO) build --target $(ARMV7) -p edge --features device \
	  --config 'profile.dev.opt-level=0'

# Device tarballs (aarch64, armv7) in out/package; BUNDLE=path adds the signed bundle.
package: setup
	bash scripts/package.sh

# Install the aarch64 package into a scratch root and run it under qemu. It packages the edge
# binary that test-aarch64 built and tested (built here, with the same command, when run alone).
test-package:
	$(CARGO) test --no-run $(AARCH64_BUILD)
	EDGE_BIN=$(CARGO_TARGET_DIR_OR_TARGET)/$(AARCH64)/debug/edge bash scripts/test-package.sh

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
	$(CARGO) test --no-run $(HOST_PACKAGES)
	"$${CARGO_TARGET_DIR:-target}/debug/maskgate-bench" $(BENCH_ARGS)
