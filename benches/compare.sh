#!/usr/bin/env bash
# hora against its peers in one go: f32 sum allreduce, 4 KiB .. 256 MiB, same timing rule for
# everyone (barrier, per-call time, max over ranks per iteration, median over iterations;
# busbw = bytes/t * 2(n-1)/n). Runs hora-bench over shared memory and over TCP, and the peer
# benchmarks of ../shared/bench/peers (run.py) that are installed: Open MPI (default and TCP
# only), MPICH, torch.distributed Gloo, Horovod (Gloo). Writes
#   benches/results/compare-<date>.md   markdown table per np, ratios hora / best peer
#   benches/results/compare-<date>.png  busbw vs size (log x), one line per implementation
#   benches/results/compare-<date>.jsonl  every measurement (hora-bench and peer rows)
#
#   benches/compare.sh                     # np 2, one run of everything
#   NPS="2 4" REPS=3 benches/compare.sh    # np 2 and 4, median of 3 runs per cell
#   QUICK=1 benches/compare.sh             # smoke run: up to 1 MiB, fewer iterations
#   PEERS="ompi-default torch-gloo" ...    # a subset of the peers (names: run.py --list)
#   NETNS=0 ...                            # peers outside the loopback-only namespace
#   HORA_MPI_BENCH=path/to/hora-bench ...  # also hora over MPI: a hora-bench built with
#                                          # --features mpi, run under Open MPI's mpirun
#
# Peers come from `bash ../shared/bench/peers/setup.sh` (OpenMPI, MPICH, mpi4py, torch and
# Horovod in ../shared/bench/.venv; heavy: a 3 GB torch download and a Horovod build). Missing
# ones are skipped and listed. The plot needs matplotlib, installed into that venv on demand.
# Timings are only comparable on a quiet machine: the result file records the load.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
NPS=${NPS:-2}
REPS=${REPS:-1}
QUICK=${QUICK:-0}
NETNS=${NETNS:-1}
BENCH_DIR=${BENCH_DIR:-$ROOT/../shared/bench}
[ -d "$BENCH_DIR/peers" ] || BENCH_DIR=/work/shared/bench
BENCH_DIR=$(cd "$BENCH_DIR" 2>/dev/null && pwd || echo "$BENCH_DIR")
PEERS_DIR=$BENCH_DIR/peers
VPY=$BENCH_DIR/.venv/bin/python
BIN=${CARGO_TARGET_DIR:-target}/release
STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT=benches/results/compare-$STAMP
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

if [ "$QUICK" = 1 ]; then
    HORA_SIZES=(-b 4K -e 1M -f 16)
    export BENCH_MAX_BYTES=$((1 << 20)) BENCH_ITER_SCALE=0.2
else
    HORA_SIZES=(-b 4K -e 256M -f 4)
fi

cargo build --release -q -p hora-bench -p horovodrun

# Which peers can run here: each needs its launcher and its Python modules in the venv.
have_py() { [ -x "$VPY" ] && "$VPY" -c "import $1" >/dev/null 2>&1; }
peer_ready() {
    case $1 in
        ompi-*) command -v mpirun.openmpi >/dev/null && have_py mpi4py ;;
        mpich-*) command -v mpirun.mpich >/dev/null && have_py mpi4py &&
            [ -e "$PEERS_DIR/build/mpich-abi/libmpi.so.12" ] ;;
        torch-*) have_py torch ;;
        horovod-*) have_py horovod.torch && [ -x "$BENCH_DIR/.venv/bin/horovodrun" ] ;;
        *) return 1 ;;
    esac
}
RUN=()
SKIPPED=()
for p in ${PEERS:-ompi-default ompi-tcp mpich-default torch-gloo horovod-gloo}; do
    if [ -f "$PEERS_DIR/run.py" ] && peer_ready "$p"; then RUN+=("$p"); else SKIPPED+=("$p"); fi
done
if [ ${#SKIPPED[@]} -gt 0 ]; then
    echo "compare: skipping peers not installed: ${SKIPPED[*]} (install: bash $PEERS_DIR/setup.sh)" >&2
fi
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

for np in $NPS; do
    for rep in $(seq "$REPS"); do
        for t in shm tcp; do
            echo "compare: np=$np run $rep: hora $t" >&2
            "$BIN/horovodrun" -np "$np" "$BIN/hora-bench" allreduce "${HORA_SIZES[@]}" \
                --transport "$t" --json "$WORK/hora-$t-$np-$rep.jsonl" >&2
        done
        if [ -n "${HORA_MPI_BENCH:-}" ]; then
            echo "compare: np=$np run $rep: hora mpi" >&2
            mpirun.openmpi --allow-run-as-root --oversubscribe --bind-to none -np "$np" \
                "$HORA_MPI_BENCH" allreduce "${HORA_SIZES[@]}" --transport mpi \
                --json "$WORK/hora-mpi-$np-$rep.jsonl" >&2 || echo "compare: hora mpi failed" >&2
        fi
    done
done
if [ ${#RUN[@]} -gt 0 ]; then
    netns=()
    [ "$NETNS" = 1 ] || netns=(--no-netns)
    # shellcheck disable=SC2086
    python3 "$PEERS_DIR/run.py" "${RUN[@]}" --np $NPS --reps "$REPS" --timeout 900 \
        "${netns[@]}" --out "$WORK/peers.jsonl" >&2 || echo "compare: some peer runs failed" >&2
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# The plot needs matplotlib: the bench venv gets it on demand, else plain python3 if it has it.
PLOT_PY=python3
if [ -x "$VPY" ]; then
    "$VPY" -c "import matplotlib" 2>/dev/null || "$VPY" -m pip install -q matplotlib >&2 || true
    "$VPY" -c "import matplotlib" 2>/dev/null && PLOT_PY=$VPY
fi

"$PLOT_PY" benches/python/compare_report.py --work "$WORK" --out "$OUT" --nps "$NPS" --reps "$REPS" \
    --quick "$QUICK" --skipped "${SKIPPED[*]}" --load "$LOAD_BEFORE" "$LOAD_AFTER" \
    --commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "written: $OUT.md $OUT.png $OUT.jsonl" >&2
