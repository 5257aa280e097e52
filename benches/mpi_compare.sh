#!/usr/bin/env bash
# hora over MPI (hora-bench built with --features mpi, run by mpirun: the engine with
# MpiCollectives, i.e. negotiation + MPI_Allreduce in place) beside plain MPI_Allreduce through
# mpi4py, f32 sum, 4 KiB .. 256 MiB, interleaved run by run in one session. Writes a markdown
# table to benches/results/mpi-vs-mpi4py-<time>.md.
#
#   benches/mpi_compare.sh                  # np 2, 3 runs each, default binding
#   NP=2 REPS=5 BIND=none benches/mpi_compare.sh
#
# Needs Open MPI (make deps) and mpi4py in a venv: ../shared/bench/peers/setup.sh with
# SKIP_TORCH=1 SKIP_HOROVOD=1 makes ../shared/bench/.venv (or set PEERS=/path/to/peers,
# MPI4PY_PY=/path/to/python).
set -euo pipefail
cd "$(dirname "$0")/.."
NP=${NP:-2}
REPS=${REPS:-3}
BIND=${BIND:-}
PEERS=${PEERS:-../shared/bench/peers}
[ -d "$PEERS" ] || PEERS=/work/shared/bench/peers
MPI4PY_PY=${MPI4PY_PY:-$PEERS/../.venv/bin/python}
TARGET=${CARGO_TARGET_DIR:-target}/mpi
OUT=benches/results/mpi-vs-mpi4py-$(date -u +%Y%m%d-%H%M%S).md
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

CARGO_TARGET_DIR=$TARGET cargo build --release -q -p hora-bench --features mpi
MPIRUN=(mpirun -np "$NP")
[ "$(id -u)" = 0 ] && MPIRUN+=(--allow-run-as-root)
[ -n "$BIND" ] && MPIRUN+=(--bind-to "$BIND")

for rep in $(seq "$REPS"); do
    echo "run $rep: mpi4py" >&2
    "${MPIRUN[@]}" "$MPI4PY_PY" "$PEERS/mpi4py_allreduce.py" > "$WORK/mpi4py-$rep.jsonl"
    echo "run $rep: hora over MPI" >&2
    "${MPIRUN[@]}" -x HOROVOD_CONTROLLER=mpi "$TARGET/release/hora-bench" allreduce \
        -b 4K -e 256M -f 4 --json "$WORK/hora-$rep.jsonl" >&2
done

python3 - "$WORK" "$REPS" "$NP" "$OUT" "${BIND:-default}" <<'PY'
import json, os, statistics, sys, datetime, platform
work, reps, np_, out, bind = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
def load(prefix, tkey):
    cells = {}
    for rep in range(1, reps + 1):
        p = f"{work}/{prefix}-{rep}.jsonl"
        if not os.path.exists(p):
            continue
        for line in open(p):
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            cells.setdefault(int(r["bytes"]), []).append(float(r[tkey]))
    return cells
hora = load("hora", "time_us")
m4p = {b: [t * 1e6 for t in v] for b, v in load("mpi4py", "median_s").items()}
def fmt(us):
    return f"{us:.1f} us" if us < 1000 else f"{us / 1000:.2f} ms"
lines = ["# hora over MPI vs MPI_Allreduce through mpi4py: f32 sum, one session", "",
         f"{datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores, "
         f"np={np_}, Open MPI mpirun binding: {bind}; {reps} interleaved run(s) per column, each the "
         "median over iterations of the slowest rank's time (barrier before every call); the cell "
         "is the median of the runs. hora-bench times whole engine calls (negotiation included); "
         "mpi4py times comm.Allreduce (out of place). Ratio = hora time / mpi4py time.", "",
         "| size | hora over MPI | mpi4py | ratio | hora runs | mpi4py runs |", "|---:|---|---|---:|---|---|"]
for size in sorted(set(hora) & set(m4p)):
    h, m = statistics.median(hora[size]), statistics.median(m4p[size])
    label = f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"
    runs = lambda v: ", ".join(fmt(x) for x in v)
    lines.append(f"| {label} | {fmt(h)} | {fmt(m)} | {h / m:.2f} | {runs(hora[size])} | {runs(m4p[size])} |")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
echo "written: $OUT" >&2
