"""hora.tensorflow figures: the example's step time at np=2 vs one process without hora, and the
per-call latency of a 4 KiB allreduce from TensorFlow vs from hora.torch.

    .venv/bin/python benches/python/tf_bench.py                # both, 3 interleaved repetitions
    .venv/bin/python benches/python/tf_bench.py --only latency

Step time: examples/tensorflow2_synthetic.py (tf.function, 1 intra-op thread per process, same
per-rank batch) run under ``horovodrun -np 2`` and alone with ``--no-hora``; each reports its
mean step time over the timed iterations (rank 0; the ranks are in lockstep). Repetitions are
fresh processes, modes interleaved; the medians are reported.

Latency: under ``horovodrun -np 2``, blocks of 200 out-of-place Sum allreduces of 1024 float32,
alternating between ``hora.tensorflow.allreduce`` (eager), ``hora.torch.allreduce``,
``hora.torch.allreduce_`` (in place) and the TF call inside a tf.function (py_function);
median per call of each.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY = sys.executable


def horovodrun():
    base = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    for kind in ("release", "debug"):
        path = os.path.join(base, kind, "horovodrun")
        if os.path.exists(path):
            return path
    sys.exit("build horovodrun first (cargo build --release -p horovodrun)")


def latency_worker(blocks, per_block):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:  # load triton (torch's lazy import) before TensorFlow's global LLVM (see tests/conftest.py)
        import triton  # noqa: F401
    except ImportError:
        pass
    import tensorflow as tf
    import torch

    import hora.tensorflow as htf
    import hora.torch as hpt

    tf.config.threading.set_intra_op_parallelism_threads(1)
    torch.set_num_threads(1)
    htf.init()
    xt = tf.ones([1024])
    xp = torch.ones(1024)

    @tf.function
    def graph_allreduce(x):
        return htf.allreduce(x, op=htf.Sum, name="lat_graph")

    calls = {
        "tf_eager": lambda: htf.allreduce(xt, op=htf.Sum, name="lat_tf"),
        "torch": lambda: hpt.allreduce(xp, op=hpt.Sum, name="lat_torch"),
        "torch_inplace": lambda: hpt.allreduce_(xp, op=hpt.Sum, name="lat_torch_"),
        "tf_function": lambda: graph_allreduce(xt),
    }
    for f in calls.values():  # warm up (and trace the tf.function)
        for _ in range(50):
            f()
        xp.fill_(1.0)
    samples = {k: [] for k in calls}
    for _ in range(blocks):
        for name, f in calls.items():
            htf.barrier()
            start = time.perf_counter()
            for _ in range(per_block):
                f()
            samples[name].append((time.perf_counter() - start) / per_block)
            xp.fill_(1.0)
    if htf.rank() == 0:
        print("RESULT " + json.dumps({k: statistics.median(v) * 1e6 for k, v in samples.items()}), flush=True)
    htf.shutdown()


def run(cmd):
    env = dict(os.environ, OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        sys.exit(f"failed ({out.returncode}): {' '.join(cmd)}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return out.stdout


def step_ms(output):
    m = re.search(r"mean step time: ([0-9.]+) ms", output)
    if not m:
        sys.exit(f"no step time in:\n{output[-2000:]}")
    return float(m.group(1))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", default=["step", "latency"], choices=["step", "latency"])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--iters", type=int, default=10, help="timed iterations of the example")
    p.add_argument("--latency-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--blocks", type=int, default=10)
    p.add_argument("--per-block", type=int, default=200)
    args = p.parse_args()
    if args.latency_worker:
        latency_worker(args.blocks, args.per_block)
        return
    example = os.path.join(ROOT, "examples", "tensorflow2_synthetic.py")
    ex_args = ["--num-iters", str(args.iters)]
    if "step" in args.only:
        hora_ms, single_ms = [], []
        for rep in range(args.reps):
            hora_ms.append(step_ms(run([horovodrun(), "-np", "2", PY, example, *ex_args])))
            single_ms.append(step_ms(run([PY, example, "--no-hora", *ex_args])))
            print(f"rep {rep}: hora np=2 {hora_ms[-1]:.2f} ms/step, one process {single_ms[-1]:.2f} ms/step",
                  flush=True)
        h, s = statistics.median(hora_ms), statistics.median(single_ms)
        print(f"step time (median of {args.reps}): hora np=2 {h:.2f} ms, one process without hora {s:.2f} ms, "
              f"ratio {h / s:.2f}x", flush=True)
    if "latency" in args.only:
        out = run([horovodrun(), "-np", "2", PY, os.path.abspath(__file__), "--latency-worker",
                   "--blocks", str(args.blocks), "--per-block", str(args.per_block)])
        line = [ln for ln in out.splitlines() if "RESULT " in ln][0]
        res = json.loads(line.split("RESULT ", 1)[1])
        print("4 KiB Sum allreduce per call at np=2 (median of block means): "
              + ", ".join(f"{k} {v:.1f} us" for k, v in res.items()), flush=True)


if __name__ == "__main__":
    main()
