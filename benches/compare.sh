#!/usr/bin/env bash
# Runs hora-bench (shared memory, and TCP with HOROVOD_SHM=0) and plain C MPI_Allreduce
# (Open MPI, ../shared/bench/peers/mpi_allreduce.c or $MPI_SRC) side by side in one session,
# f32 sum allreduce, and writes a markdown table to benches/results/compare-<time>.md.
#
#   benches/compare.sh                 # np 2 and 4, one run each
#   NPS="2" REPS=3 benches/compare.sh  # np 2 only, median of 3 runs per cell
#
# Needs: a Rust toolchain; Open MPI (`apt-get install -y openmpi-bin libopenmpi-dev`, done here
# when running as root and mpicc is missing). Without MPI the MPI column says "n/a".
set -euo pipefail
cd "$(dirname "$0")/.."
NPS=${NPS:-"2 4"}
REPS=${REPS:-1}
BIN=${CARGO_TARGET_DIR:-target}/release
MPI_SRC=${MPI_SRC:-../shared/bench/peers/mpi_allreduce.c}
[ -f "$MPI_SRC" ] || MPI_SRC=/work/shared/bench/peers/mpi_allreduce.c
OUT=benches/results/compare-$(date -u +%Y%m%d-%H%M%S).md
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

cargo build --release -q -p hora-bench -p horovodrun

MPI=""
if ! command -v mpicc >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq openmpi-bin libopenmpi-dev >/dev/null 2>&1 || true
fi
if command -v mpicc >/dev/null && [ -f "$MPI_SRC" ]; then
    mpicc -O2 -o "$WORK/mpi_allreduce" "$MPI_SRC" && MPI="$WORK/mpi_allreduce"
fi

for np in $NPS; do
    for rep in $(seq "$REPS"); do
        echo "np=$np run $rep: hora shm" >&2
        "$BIN/horovodrun" -np "$np" "$BIN/hora-bench" allreduce -b 4K -e 256M -f 4 --check \
            --json "$WORK/shm-$np-$rep.jsonl" >&2
        echo "np=$np run $rep: hora tcp" >&2
        HOROVOD_SHM=0 "$BIN/horovodrun" -np "$np" "$BIN/hora-bench" allreduce -b 4K -e 256M -f 4 \
            --check --json "$WORK/tcp-$np-$rep.jsonl" >&2
        if [ -n "$MPI" ]; then
            echo "np=$np run $rep: Open MPI" >&2
            mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$np" "$MPI" \
                >"$WORK/mpi-$np-$rep.txt"
        fi
    done
done

python3 - "$WORK" "$OUT" "$NPS" "$REPS" <<'PY'
import json, statistics, sys, os, platform, datetime
work, out, nps, reps = sys.argv[1], sys.argv[2], sys.argv[3].split(), int(sys.argv[4])
def load_hora(kind, np):
    cells = {}
    for rep in range(1, reps + 1):
        p = f"{work}/{kind}-{np}-{rep}.jsonl"
        if not os.path.exists(p):
            continue
        for line in open(p):
            r = json.loads(line)
            cells.setdefault(r["bytes"], []).append((r["time_us"], r["busbw_gbs"]))
    return cells
def load_mpi(np):
    cells = {}
    for rep in range(1, reps + 1):
        p = f"{work}/mpi-{np}-{rep}.txt"
        if not os.path.exists(p):
            continue
        for line in open(p):
            f = line.split()
            if len(f) == 3:
                cells.setdefault(int(f[0]), []).append((float(f[2]), float(f[1])))
    return cells
def med(v):
    if not v:
        return None
    return (statistics.median(t for t, _ in v), statistics.median(b for _, b in v))
def fmt(c):
    if c is None:
        return "n/a"
    t, b = c
    tt = f"{t:.1f} us" if t < 1000 else f"{t/1000:.2f} ms"
    return f"{tt} ({b:.2f})"
lines = [f"# hora vs Open MPI: f32 sum allreduce, one session",
         "",
         f"{datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores; "
         f"median of {reps} run(s) per cell; time per call (busbw GB/s). hora-bench times whole engine "
         "calls (negotiation included); mpi_allreduce times MPI_Allreduce(MPI_IN_PLACE). "
         "Ratio = hora shm busbw / MPI busbw.", ""]
for np in nps:
    shm, tcp, mpi = load_hora("shm", np), load_hora("tcp", np), load_mpi(np)
    lines += [f"## np={np}", "", "| size | hora shm | hora tcp | Open MPI | shm/MPI |", "|---:|---|---|---|---:|"]
    for size in sorted(set(shm) | set(mpi)):
        s, t, m = med(shm.get(size)), med(tcp.get(size)), med(mpi.get(size))
        ratio = f"{s[1] / m[1]:.2f}x" if s and m and m[1] > 0 else "–"
        label = f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"
        lines.append(f"| {label} | {fmt(s)} | {fmt(t)} | {fmt(m)} | {ratio} |")
    lines.append("")
open(out, "w").write("\n".join(lines))
print("\n".join(lines))
PY
echo "written: $OUT" >&2
