#!/usr/bin/env python3
"""Turns the runs of benches/compare.sh into a markdown table, a JSON-lines file and a PNG.

Inputs (in --work): hora-<shm|tcp>-<np>-<rep>.jsonl written by `hora-bench --json`, and
peers.jsonl written by ../shared/bench/peers/run.py. Every cell is the median over runs of
each run's median time; busbw = bytes/t * 2(n-1)/n in GB/s (1e9 B/s), as the peers compute it.
"""
import argparse
import datetime
import glob
import json
import os
import platform
import re
import statistics

# Peers whose bytes go through TCP sockets only (what hora over TCP competes with).
TCP_PEERS = {"ompi-tcp", "mpich-tcp", "torch-gloo", "horovod-gloo", "horovod-gloo-ct0.1"}


def load(work):
    """-> {np: {impl: {bytes: [(time_s, busbw), ...]}}}, raw rows."""
    cells, raw = {}, []
    for path in sorted(glob.glob(os.path.join(work, "hora-*.jsonl"))):
        kind, np_, _rep = re.match(r".*/hora-(\w+)-(\d+)-(\d+)\.jsonl$", path).groups()
        for line in open(path):
            r = json.loads(line)
            impl = f"hora {kind}"
            raw.append({"impl": impl, **r})
            cells.setdefault(int(np_), {}).setdefault(impl, {}).setdefault(r["bytes"], []).append(
                (r["time_us"] / 1e6, r["busbw_gbs"]))
    peers = os.path.join(work, "peers.jsonl")
    if os.path.exists(peers):
        for line in open(peers):
            r = json.loads(line)
            if "error" in r or "median_s" not in r:
                raw.append({"impl": r.get("config"), **r})
                continue
            raw.append({"impl": r["config"], **r})
            cells.setdefault(int(r["np"]), {}).setdefault(r["config"], {}).setdefault(
                r["bytes"], []).append((r["median_s"], r["busbw_GBs"]))
    return cells, raw


def load_raw(path):
    """Rebuilds the cells from a compare-<date>.jsonl written earlier."""
    cells, raw = {}, []
    for line in open(path):
        r = json.loads(line)
        raw.append(r)
        if "error" in r:
            continue
        if "median_s" in r:
            t, b = r["median_s"], r["busbw_GBs"]
        else:
            t, b = r["time_us"] / 1e6, r["busbw_gbs"]
        cells.setdefault(int(r["np"]), {}).setdefault(r["impl"], {}).setdefault(
            r["bytes"], []).append((t, b))
    return cells, raw


def med(v):
    if not v:
        return None
    return statistics.median(t for t, _ in v), statistics.median(b for _, b in v)


def human(b):
    return f"{b >> 20} MiB" if b >= 1 << 20 else f"{b >> 10} KiB"


def fmt(c):
    if c is None:
        return "–"
    t, b = c
    tt = f"{t * 1e6:.1f} us" if t < 1e-3 else f"{t * 1e3:.2f} ms"
    return f"{tt} ({b:.2f})"


def table(np_, impls):
    hora = [i for i in ("hora shm", "hora tcp", "hora mpi") if i in impls]
    peers = sorted(i for i in impls if not i.startswith("hora"))
    sizes = sorted({b for i in impls.values() for b in i})
    if peers:
        # hora-bench steps by 4; compare at the peers' sizes.
        sizes = [b for b in sizes if any(b in impls[p] for p in peers)]
    head = ["size"] + hora + peers + ["best peer", "hora shm / best", "hora tcp / best TCP peer"]
    if "hora mpi" in impls:
        head.append("hora mpi / best")
    lines = [f"## np={np_}", "", "| " + " | ".join(head) + " |",
             "|---:|" + "---|" * (len(hora) + len(peers) + 1) + "---:|" * (len(head) - len(hora) - len(peers) - 2)]
    for size in sizes:
        row = [human(size)]
        got = {i: med(impls[i].get(size)) for i in impls}
        row += [fmt(got[i]) for i in hora + peers]
        ranked = sorted((got[p][1], p) for p in peers if got[p])
        best = ranked[-1] if ranked else None
        tcp_ranked = sorted((got[p][1], p) for p in peers if got[p] and p in TCP_PEERS)
        best_tcp = tcp_ranked[-1] if tcp_ranked else None
        row.append(f"{best[1]} ({best[0]:.2f})" if best else "–")

        def ratio(h, ref):
            if not (got.get(h) and ref and ref[0] > 0):
                return "–"
            return f"{got[h][1] / ref[0]:.2f}x"
        row.append(ratio("hora shm", best))
        row.append(ratio("hora tcp", best_tcp) + (f" ({best_tcp[1]})" if best_tcp else ""))
        if "hora mpi" in impls:
            row.append(ratio("hora mpi", best))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def plot(cells, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    nps = sorted(cells)
    fig, axes = plt.subplots(1, len(nps), figsize=(7 * len(nps), 5), squeeze=False)
    for ax, np_ in zip(axes[0], nps):
        for impl in sorted(cells[np_], key=lambda i: (not i.startswith("hora"), i)):
            pts = sorted((b, med(v)[1]) for b, v in cells[np_][impl].items() if v)
            if not pts:
                continue
            style = dict(linewidth=2.5, marker="o") if impl.startswith("hora") else \
                dict(linewidth=1.2, marker=".", linestyle="--")
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=impl, **style)
        ax.set_xscale("log", base=2)
        # Log y too: small messages are latency-bound, and differences there are 10-100x.
        ax.set_yscale("log")
        ticks = sorted({b for i in cells[np_].values() for b in i})
        ax.set_xticks(ticks)
        ax.set_xticklabels([human(t) for t in ticks], rotation=45)
        ax.set_xlabel("message size (f32 sum allreduce)")
        ax.set_ylabel("busbw GB/s, log scale (higher is better)")
        ax.set_title(f"np={np_}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    import textwrap
    fig.suptitle("\n".join(textwrap.wrap(title, 80 * len(nps))), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", help="directory of one compare.sh session's raw files")
    ap.add_argument("--from-jsonl", help="rebuild the table and plot from a compare-<date>.jsonl")
    ap.add_argument("--out", required=True, help="path without extension")
    ap.add_argument("--nps", default="2")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--quick", default="0")
    ap.add_argument("--skipped", default="")
    ap.add_argument("--load", nargs=2, default=["?", "?"])
    ap.add_argument("--commit", default="unknown")
    ap.add_argument("--when", help="time of the measurement (default: now), for --from-jsonl")
    a = ap.parse_args()
    cells, raw = load_raw(a.from_jsonl) if a.from_jsonl else load(a.work)
    now = datetime.datetime.now(datetime.timezone.utc)
    when = a.when or f"{now:%Y-%m-%d %H:%M} UTC"
    quick = a.quick == "1"
    try:
        # Only the load before the run says whether others shared the host: the benchmark's own
        # ranks (np busy processes) raise the figure taken after it.
        busy = float(a.load[0].split()[0]) > (os.cpu_count() or 1)
    except ValueError:
        busy = False
    cond = (f"{when}, host {platform.node()}, {os.cpu_count()} cores, "
            f"hora {a.commit}; load average (1/5/15 min) {a.load[0]} before, {a.load[1]} after; "
            f"{a.reps} run(s) per cell (median of run medians)"
            + ("; SMOKE RUN (QUICK=1: up to 1 MiB, peers at 0.2x iterations) — not a measurement"
               if quick else "")
            + ("; BUSY HOST (1-minute load above the core count): other work shared the cores, "
               "so these figures show the script working, not how fast anything is"
               if busy else ""))
    lines = ["# hora vs peers: f32 sum allreduce", "", f"Conditions: {cond}.", "",
             "Each cell: median time per call (busbw GB/s). Timing for every implementation: "
             "barrier, per-call time on each rank, max over ranks per iteration, median over "
             "iterations; busbw = bytes/t * 2(n-1)/n. hora-bench times whole engine calls "
             "(negotiation included); `--transport shm` is shared-memory collectives with "
             "control over TCP, `--transport tcp` the ring over TCP. Peers: "
             "`../shared/bench/peers` (mpi4py for Open MPI/MPICH, torch.distributed Gloo, "
             "Horovod 0.28.1 Gloo), inside a loopback-only network namespace. Ratios are busbw "
             "ratios (>1: hora faster); `best TCP peer` counts only peers whose bytes go "
             "through TCP.", ""]
    if a.skipped.strip():
        lines += [f"Skipped (not installed): {a.skipped} — install with "
                  "`bash /work/shared/bench/peers/setup.sh`.", ""]
    failed = [r for r in raw if "error" in r]
    if failed:
        lines += ["Failed runs: " + ", ".join(f"{r.get('config')} np={r.get('np')} ({r['error']})"
                                               for r in failed), ""]
    for np_ in sorted(cells):
        lines += table(np_, cells[np_]) + [""]
    lines += [f"Plot: `{os.path.basename(a.out)}.png`; raw rows: `{os.path.basename(a.out)}.jsonl`.", ""]
    with open(a.out + ".md", "w") as f:
        f.write("\n".join(lines))
    with open(a.out + ".jsonl", "w") as f:
        for r in raw:
            f.write(json.dumps(r) + "\n")
    print("\n".join(lines))
    try:
        plot(cells, a.out + ".png", "f32 sum allreduce busbw — " + cond)
    except ImportError as e:
        print(f"no plot ({e}); pip install matplotlib")


if __name__ == "__main__":
    main()
