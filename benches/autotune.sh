#!/usr/bin/env bash
# Autotune vs the default settings on a synthetic workload of many small tensors: every step
# allreduces TENSORS tensors of ELEMS f32 at once (hora-rank's `autotune` scenario, which
# checks every sum). Default and HOROVOD_AUTOTUNE=1 runs are interleaved, ROUNDS times, per
# transport, and each run reports the steps per second of its second half (after tuning has
# ended: (3 warm-up + 20) samples of STEPS_PER_SAMPLE steps fit in the first half).
#
#   benches/autotune.sh [ROUNDS] [STEPS] [TENSORS] [ELEMS]   (release build first:
#   cargo build --release -p hora-tests --bin hora-rank -p horovodrun)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}; steps=${2:-1600}; tensors=${3:-128}; elems=${4:-256}
sps=${STEPS_PER_SAMPLE:-30}
bin=target/release
out=benches/results/autotune-$(date -u +%Y%m%d-%H%M%S).md
tmp=$(mktemp -d)
rate() { grep -o 'rank 0: last [0-9]* steps [0-9.]* steps/s' | awk '{print $6}'; }
{
echo "# Autotune vs default: $tensors tensors x $elems f32 per step, np 2, $(nproc) cores"
echo
echo "$(date -u) on $(hostname); $rounds interleaved rounds per transport; steps/s of the"
echo "second half of $steps steps (rank 0); HOROVOD_AUTOTUNE_STEPS_PER_SAMPLE=$sps, other"
echo "autotune settings at their defaults (3 warm-up samples, 20 samples, noise 0.8)."
echo
echo "| transport | round | default steps/s | autotune steps/s | values autotune kept (fusion, segment, cache) |"
echo "|---|---|---|---|---|"
} > "$out"
for shm in 0 1; do
    name=$([ $shm = 1 ] && echo shm || echo tcp)
    for r in $(seq 1 "$rounds"); do
        d=$(HOROVOD_SHM=$shm $bin/horovodrun -np 2 $bin/hora-rank autotune "$steps" "$tensors" "$elems" 2>&1 | rate)
        a=$(HOROVOD_SHM=$shm HOROVOD_AUTOTUNE=1 HOROVOD_AUTOTUNE_STEPS_PER_SAMPLE=$sps \
            HOROVOD_AUTOTUNE_LOG=$tmp/$name-$r.csv \
            $bin/horovodrun -np 2 $bin/hora-rank autotune "$steps" "$tensors" "$elems" 2>&1 | rate)
        kept=$(tail -1 "$tmp/$name-$r.csv" | cut -d, -f1-3)
        echo "| $name | $r | $d | $a | $kept |" >> "$out"
        echo "$name $d $a" >> "$tmp/all"
    done
done
{
echo
echo "Medians:"
echo
for name in tcp shm; do
    d=$(awk -v n=$name '$1==n{print $2}' "$tmp/all" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
    a=$(awk -v n=$name '$1==n{print $3}' "$tmp/all" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
    echo "- $name: default $d steps/s, autotune $a steps/s ($(awk -v a="$a" -v d="$d" 'BEGIN{printf "%+.0f%%", (a/d-1)*100}'))"
done
echo
echo "One autotune log (tcp, round 1):"
echo
echo '```'
cat "$tmp/tcp-1.csv"
echo '```'
} >> "$out"
rm -rf "$tmp"
echo "$out"
