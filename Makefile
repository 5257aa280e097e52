# hora — the two set-up commands on a fresh machine are `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
# Binaries live where cargo puts them (CARGO_TARGET_DIR, if set, moves them).
BIN := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)/release
export CARGO_TERM_COLOR ?= never
TARGET_DIR := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)
# Python: a project venv with torch (CPU use of PyPI's build) and tensorflow-cpu for hora.torch's and
# hora.tensorflow's tests and demo.
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python

.PHONY: all deps build build-dev demo test test-mpi test-mpich lint fmt bench clean python

all: build

# Installs what a fresh Debian machine lacks. The default build needs only a Rust toolchain
# (with rustfmt and clippy) and a C compiler; nothing here needs MPI, CUDA or RDMA.
deps:
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
	@command -v cc >/dev/null || { apt-get update -qq && apt-get install -y -qq build-essential; }
	@command -v pkill >/dev/null || { apt-get update -qq && apt-get install -y -qq procps; }
	@# Multi-host tests: namespaces (ip, tc, ss), nft (lossy links) and one sshd per namespace "host".
	@{ [ -x /usr/sbin/sshd ] && command -v ssh >/dev/null && command -v ip >/dev/null && command -v ss >/dev/null && command -v nft >/dev/null; } || \
	  { [ "$$(id -u)" != 0 ] && echo "note: multi-host tests need root and openssh-server iproute2 nftables; they will skip" >&2; } || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server openssh-client iproute2 nftables; }
	@# The MPI transport (--features mpi): bindgen needs libclang; Open MPI's mpicc and mpirun, and
	@# MPICH's (mpicc.mpich, mpirun.mpich) for test-mpich. They co-install; Open MPI stays the
	@# default mpicc/mpirun (Debian's alternatives rank it 50, MPICH 40).
	@dpkg -s libclang-dev libopenmpi-dev openmpi-bin libmpich-dev mpich >/dev/null 2>&1 || \
	  { [ "$$(id -u)" != 0 ] && echo "note: the MPI build and tests need libclang-dev libopenmpi-dev openmpi-bin libmpich-dev mpich; they will skip" >&2; } || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev libopenmpi-dev openmpi-bin libmpich-dev mpich; }
	@$(CARGO) fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@$(CARGO) clippy --version >/dev/null 2>&1 || rustup component add clippy
	@$(PY) -c "import torch, numpy, pytest, pytest_timeout" 2>/dev/null || { \
	  { python3 -m venv --help >/dev/null 2>&1 && python3 -c "import ensurepip" 2>/dev/null; } || \
	    { apt-get update -qq && apt-get install -y -qq python3-venv python3-dev; }; \
	  [ -x $(PY) ] || python3 -m venv $(VENV); \
	  $(VENV)/bin/pip install -q torch numpy pytest pytest-timeout maturin; }
	@[ -x $(VENV)/bin/maturin ] || $(VENV)/bin/pip install -q maturin
	@# mypy's stubtest checks the checked-in hora/_core.pyi against the built module (make test).
	@[ -x $(VENV)/bin/stubtest ] || $(VENV)/bin/pip install -q mypy
	@# hora.tensorflow: TensorFlow 2 for CPU (274 MB wheel, brings keras 3) next to torch in one venv.
	@$(PY) -c "import torch, tensorflow" 2>/dev/null || { $(VENV)/bin/pip install -q tensorflow-cpu && \
	  $(PY) -c "import torch, tensorflow" || { echo "deps: torch and tensorflow do not import together in $(VENV)" >&2; exit 1; }; }

# The Python package (hora._core + hora.torch) into the venv, editable; its own target dir so
# maturin's and cargo's builds of pyo3 do not invalidate each other.
python: deps
	cd framework-bindings/python && VIRTUAL_ENV=$(VENV) CARGO_TARGET_DIR=$(abspath $(TARGET_DIR))/maturin \
	  $(VENV)/bin/maturin develop --release --quiet

build: deps
	$(CARGO) build --release --workspace

build-dev: deps
	$(CARGO) build --workspace

# A real multi-process job on localhost: two ranks, every size from 4 KiB to 64 MiB, results checked.
# Then a small data-parallel training loop whose loss goes down, the C example, and a small CNN
# trained with hora.torch (loss per epoch), and a small Keras CNN trained with hora.tensorflow's
# DistributedGradientTape in a tf.function (loss and img/sec).
demo: build
	$(BIN)/horovodrun -np 2 $(BIN)/hora-bench allreduce -b 4K -e 64M -f 4 --check
	$(BIN)/horovodrun -np 2 $(BIN)/allreduce_sgd
	cc -O2 -I framework-bindings/c/include examples/c/allreduce.c -o $(BIN)/c_allreduce \
	   -L $(BIN) -lhora -Wl,-rpath,$(abspath $(BIN))
	$(BIN)/horovodrun -np 2 $(BIN)/c_allreduce
	$(MAKE) --no-print-directory python
	OMP_NUM_THREADS=1 $(BIN)/horovodrun -np 2 $(PY) examples/pytorch_mnist_like.py
	OMP_NUM_THREADS=1 $(BIN)/horovodrun -np 2 $(PY) examples/tensorflow2_synthetic.py
	OMP_NUM_THREADS=1 $(BIN)/horovodrun -np 2 $(PY) examples/keras_synthetic.py

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS=-Dwarnings $(CARGO) doc --workspace --no-deps --quiet
	bash .ci/lint.sh

fmt:
	$(CARGO) fmt --all

test: lint
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --no-fail-fast
	$(MAKE) --no-print-directory test-mpi
	$(MAKE) --no-print-directory python
	$(PY) -m mypy.stubtest hora._core
	cd framework-bindings/python && for np in 2 3; do \
	  OMP_NUM_THREADS=1 HOROVOD_DYNAMIC_PROCESS_SETS=1 $(abspath $(TARGET_DIR))/debug/horovodrun -np $$np $(PY) -m pytest -q -p no:cacheprovider tests || exit 1; done

# The MPI transport, built with --features mpi in its own target dir (so the default binaries
# are never rebuilt with it): clippy, then the conformance table under mpirun at np 2..5 and the
# engine's collectives over MPI; then the same tests against MPICH (test-mpich). Skipped,
# saying so, without mpicc/mpirun.
MPI_FEATURES := hora-mpi/mpi,hora/mpi,hora-tests/mpi,hora-bench/mpi,horovodrun/mpi
MPI_TESTS := -p hora-mpi -p hora-tests --features hora-mpi/mpi,hora-tests/mpi --no-fail-fast --lib --test mpirun
test-mpi:
	@if command -v mpicc >/dev/null && command -v mpirun >/dev/null; then \
	  set -e; export CARGO_TARGET_DIR=$(abspath $(TARGET_DIR))/mpi; \
	  $(CARGO) clippy -p hora-mpi -p hora -p hora-tests -p hora-bench -p horovodrun \
	    --features $(MPI_FEATURES) --all-targets -- -D warnings; \
	  $(CARGO) test $(MPI_TESTS); \
	else echo "note: mpicc or mpirun missing: MPI build and tests skipped (make deps installs them)" >&2; fi
	@$(MAKE) --no-print-directory test-mpich

# The same MPI tests built against MPICH (mpicc.mpich) in their own target dir, the two
# libraries' artifacts never mixing, and run under MPICH's Hydra: HORA_MPIRUN names the mpirun
# for the tests and for horovodrun --mpi, which pick Hydra's options by themselves. No clippy:
# the code is the same as under Open MPI.
test-mpich:
	@if command -v mpicc.mpich >/dev/null && command -v mpirun.mpich >/dev/null; then \
	  set -e; export CARGO_TARGET_DIR=$(abspath $(TARGET_DIR))/mpich MPICC=mpicc.mpich \
	    HORA_MPIRUN=$$(command -v mpirun.mpich); \
	  $(CARGO) test $(MPI_TESTS); \
	else echo "note: mpicc.mpich or mpirun.mpich missing: MPICH build and tests skipped (make deps installs them)" >&2; fi

bench: build
	$(CARGO) bench -p hora --bench reduce -- --warm-up-time 1 --measurement-time 2

clean:
	$(CARGO) clean
