#!/usr/bin/env bash
# Hierarchical vs flat allreduce at 2 "hosts" x 2 ranks on this machine, side by side in one
# session: each rank is started by hand with the HOROVOD_LOCAL_*/HOROVOD_CROSS_* a launcher gives
# ranks on two hosts (rank 0 serves the store). Variants, interleaved per repetition:
#   flat    HOROVOD_HIERARCHICAL_ALLREDUCE=0 (ring over TCP through all 4 ranks)
#   split   hierarchical, every local rank runs the cross-host ring on its half (the default
#           settings; pipelining is automatic: off on a host with fewer than 2 cores per rank)
#   split0  split, never pipelined (HORA_HIERARCHICAL_PIPELINE_BYTES=0)    } only if VARIANTS
#   split8  split, pipelined in 8 MiB pieces (=8388608)                   } names them
#   leader  hierarchical, local rank 0 of each host runs the cross-host ring on everything
# Writes a markdown table to benches/results/hierarchical-<time>.md.
#
#   benches/hierarchical.sh                       # both "hosts" on loopback
#   NETNS=1 benches/hierarchical.sh               # each host in its own network namespace,
#                                                 # joined by a veth pair (root, iproute2)
#   NETNS=1 RATE=1gbit benches/hierarchical.sh    # ... with the link limited by tc (tbf)
#   REPS=3 MAXBYTES=64M benches/hierarchical.sh
#   VARIANTS="flat split0 split8" benches/hierarchical.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-2}
MINBYTES=${MINBYTES:-1M}
MAXBYTES=${MAXBYTES:-256M}
NETNS=${NETNS:-0}
VARIANTS=${VARIANTS:-"flat split leader"}
RATE=${RATE:-}
BIN=${CARGO_TARGET_DIR:-target}/release
OUT=benches/results/hierarchical-$(date -u +%Y%m%d-%H%M%S).md
WORK=$(mktemp -d)
NS_A=hora-hb-a-$$
NS_B=hora-hb-b-$$
cleanup() {
    if [ "$NETNS" = 1 ]; then
        ip netns del "$NS_A" 2>/dev/null || true
        ip netns del "$NS_B" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release -q -p hora-bench

if [ "$NETNS" = 1 ]; then
    ip netns add "$NS_A"
    ip netns add "$NS_B"
    ip link add hbva$$ type veth peer name hbvb$$
    ip link set hbva$$ netns "$NS_A"
    ip link set hbvb$$ netns "$NS_B"
    ip -n "$NS_A" addr add 10.231.0.1/24 dev hbva$$
    ip -n "$NS_B" addr add 10.231.0.2/24 dev hbvb$$
    for ns in "$NS_A" "$NS_B"; do ip -n "$ns" link set lo up; done
    ip -n "$NS_A" link set hbva$$ up
    ip -n "$NS_B" link set hbvb$$ up
    if [ -n "$RATE" ]; then
        ip netns exec "$NS_A" tc qdisc add dev hbva$$ root tbf rate "$RATE" burst 1mb latency 50ms
        ip netns exec "$NS_B" tc qdisc add dev hbvb$$ root tbf rate "$RATE" burst 1mb latency 50ms
    fi
    STORE_IP=10.231.0.1
else
    STORE_IP=127.0.0.1
fi

# One job: 4 ranks, ranks 0-1 on "host" 0, 2-3 on "host" 1.
run_job() { # $1 = variant, $2 = json output
    local variant=$1 json=$2 port pids=() env_v
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    case $variant in
        flat) env_v="HOROVOD_HIERARCHICAL_ALLREDUCE=0" ;;
        split) env_v="HORA_HIERARCHICAL_MODE=split" ;;
        split0) env_v="HORA_HIERARCHICAL_PIPELINE_BYTES=0" ;;
        split8) env_v="HORA_HIERARCHICAL_PIPELINE_BYTES=8388608" ;;
        leader) env_v="HORA_HIERARCHICAL_MODE=leader" ;;
    esac
    for r in 0 1 2 3; do
        local host=$((r / 2)) prefix=()
        if [ "$NETNS" = 1 ]; then
            if [ $host = 0 ]; then prefix=(ip netns exec "$NS_A"); else prefix=(ip netns exec "$NS_B"); fi
        fi
        local jsonarg=()
        [ $r = 0 ] && jsonarg=(--json "$json")
        "${prefix[@]}" env HOROVOD_RANK=$r HOROVOD_SIZE=4 HOROVOD_LOCAL_RANK=$((r % 2)) \
            HOROVOD_LOCAL_SIZE=2 HOROVOD_CROSS_RANK=$host HOROVOD_CROSS_SIZE=2 \
            HORA_STORE_ADDR=$STORE_IP:$port HORA_STORE_SERVE=1 \
            HOROVOD_SECRET_KEY=00112233445566778899aabbccddeeff "$env_v" \
            "$BIN/hora-bench" allreduce -b "$MINBYTES" -e "$MAXBYTES" -f 4 --check "${jsonarg[@]}" \
            >"$WORK/$variant.$r.out" 2>&1 &
        pids+=($!)
    done
    local failed=0
    for p in "${pids[@]}"; do wait "$p" || failed=1; done
    if [ $failed = 1 ]; then
        cat "$WORK/$variant".*.out >&2
        echo "the $variant job failed" >&2
        exit 1
    fi
    cat "$WORK/$variant.0.out" >&2
}

for rep in $(seq "$REPS"); do
    for variant in $VARIANTS; do
        echo "run $rep: $variant" >&2
        run_job "$variant" "$WORK/$variant-$rep.jsonl"
    done
done

where="loopback"
[ "$NETNS" = 1 ] && where="two network namespaces joined by a veth pair${RATE:+, tc tbf rate $RATE}"
python3 - "$WORK" "$OUT" "$REPS" "$where" "$VARIANTS" <<'PY'
import json, statistics, sys, os, platform, datetime
work, out, reps, where = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
variants = sys.argv[5].split()
def load(variant):
    cells = {}
    for rep in range(1, reps + 1):
        p = f"{work}/{variant}-{rep}.jsonl"
        for line in open(p):
            r = json.loads(line)
            cells.setdefault(r["bytes"], []).append(r["time_us"])
    return cells
data = {v: load(v) for v in variants}
def fmt(b):
    return f"{b >> 20} MiB" if b >= 1 << 20 else f"{b >> 10} KiB"
others = [v for v in variants if v != "flat"]
lines = [
    f"# hierarchical vs flat allreduce, 2 hosts x 2 ranks ({where})",
    "",
    f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
    f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; f32 sum, hora-bench --check, "
    f"median time of {reps} interleaved run(s) per cell (each run: hora-bench's own iterations).",
    "",
    "| size | " + " | ".join(f"{v} ms" for v in variants) + " | "
    + " | ".join(f"flat/{v}" for v in others) + " |",
    "|---|" + "---|" * (len(variants) + len(others)),
]
base = data[variants[0]]
for b in sorted(base):
    t = {v: statistics.median(data[v][b]) / 1000 for v in variants}
    cells = [f"{t[v]:.2f}" for v in variants]
    if "flat" in t:
        cells += [f"{t['flat'] / t[v]:.2f}x" for v in others]
    lines.append(f"| {fmt(b)} | " + " | ".join(cells) + " |")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
print(f"\nwritten to {out}", file=sys.stderr)
PY
