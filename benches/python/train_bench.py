"""Training-step time of the example CNN at np=2: hora.torch vs torch DDP (gloo) vs Horovod.

    .venv/bin/python benches/python/train_bench.py                 # every available peer
    .venv/bin/python benches/python/train_bench.py --only hora ddp
    HOROVOD_PYTHON=/path/to/venv/bin/python ... --only horovod     # Horovod 0.28.1 venv

Each mode runs the same model (examples/pytorch_mnist_like.py's Net), batch, data and
optimizer (SGD) with 1 torch thread per rank. Per rank: `--warmup` untimed steps, then
`--steps` timed steps; the step time of a run is the slowest rank's mean. A run is repeated
`--reps` times (fresh processes, modes interleaved) and the median (and best) is reported. Also measures the latency of one
4 KiB allreduce from Python (hora.torch, median of 2000 calls) when hora runs.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def target_bin(name):
    base = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(base, "release", name)


# ------------------------------------------------------------------------------ worker side


def build(batch):
    import torch

    sys.path.insert(0, os.path.join(ROOT, "examples"))
    from pytorch_mnist_like import Net, synthetic_dataset

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Net()
    x, y = synthetic_dataset(batch * 8, seed=1)
    return model, x, y


def timed_loop(step, x, y, batch, warmup, steps):
    for i in range(warmup):
        step(x[(i % 8) * batch : (i % 8 + 1) * batch], y[(i % 8) * batch : (i % 8 + 1) * batch])
    start = time.perf_counter()
    for i in range(steps):
        step(x[(i % 8) * batch : (i % 8 + 1) * batch], y[(i % 8) * batch : (i % 8 + 1) * batch])
    return (time.perf_counter() - start) / steps


def worker_hora(args):
    import torch
    import torch.nn.functional as F

    import hora.torch as hvd

    hvd.init()
    model, x, y = build(args.batch)
    opt = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.01),
                                   named_parameters=model.named_parameters())
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)

    def step(xb, yb):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()

    t = timed_loop(step, x, y, args.batch, args.warmup, args.steps)
    t = hvd.allreduce(torch.tensor(t), op=hvd.Max, name="steptime").item()
    lat = None
    if args.latency:
        buf = torch.zeros(1024, dtype=torch.float32)  # 4 KiB
        for _ in range(200):
            hvd.allreduce_(buf, name="lat", op=hvd.Sum)
        ts = []
        for _ in range(2000):
            a = time.perf_counter()
            hvd.allreduce_(buf, name="lat", op=hvd.Sum)
            ts.append(time.perf_counter() - a)
        lat = hvd.allreduce(torch.tensor(statistics.median(ts)), op=hvd.Max, name="lat_med").item()
    if hvd.rank() == 0:
        print("RESULT " + json.dumps({"step": t, "latency": lat}), flush=True)
    hvd.shutdown()


def worker_horovod(args):
    import types

    import horovod.torch as hvd
    import torch
    import torch.nn.functional as F

    # The example module imports hora.torch at the top; in Horovod's venv (no hora) let that
    # name resolve to horovod.torch so the very same model definition is used.
    if "hora" not in sys.modules:
        try:
            import hora.torch  # noqa: F401
        except ImportError:
            sys.modules["hora"] = types.ModuleType("hora")
            sys.modules["hora.torch"] = hvd
    hvd.init()
    model, x, y = build(args.batch)
    opt = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.01),
                                   named_parameters=model.named_parameters())
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)

    def step(xb, yb):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()

    t = timed_loop(step, x, y, args.batch, args.warmup, args.steps)
    t = hvd.allreduce(torch.tensor(t), op=hvd.Max, name="steptime").item()
    if hvd.rank() == 0:
        print("RESULT " + json.dumps({"step": t, "latency": None}), flush=True)


def worker_ddp(rank, args):
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    dist.init_process_group("gloo", rank=rank, world_size=args.np)
    model, x, y = build(args.batch)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)

    def step(xb, yb):
        opt.zero_grad()
        F.cross_entropy(ddp(xb), yb).backward()
        opt.step()

    t = timed_loop(step, x, y, args.batch, args.warmup, args.steps)
    tt = torch.tensor(t)
    dist.all_reduce(tt, op=dist.ReduceOp.MAX)
    if rank == 0:
        print("RESULT " + json.dumps({"step": tt.item(), "latency": None}), flush=True)
    dist.destroy_process_group()


# ------------------------------------------------------------------------------ driver side


def run(cmd, env=None):
    e = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    out = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=600)
    for line in out.stdout.splitlines():
        if "RESULT " in line:
            return json.loads(line.split("RESULT ", 1)[1])
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", choices=["hora", "horovod", "ddp"])
    p.add_argument("--only", nargs="*", default=["hora", "ddp", "horovod"])
    p.add_argument("--np", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--latency", action="store_true")
    args = p.parse_args()

    if args.worker == "hora":
        return worker_hora(args)
    if args.worker == "horovod":
        return worker_horovod(args)
    if args.worker == "ddp":
        import torch.multiprocessing as mp

        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        mp.spawn(worker_ddp, args=(args,), nprocs=args.np)
        return None

    common = ["--np", str(args.np), "--batch", str(args.batch), "--warmup", str(args.warmup), "--steps",
              str(args.steps)]
    me = os.path.abspath(__file__)
    cmds = {}
    for mode in args.only:
        if mode == "hora":
            cmds[mode] = [target_bin("horovodrun"), "-np", str(args.np), sys.executable, me, "--worker", "hora",
                          "--latency", *common]
        elif mode == "ddp":
            cmds[mode] = [sys.executable, me, "--worker", "ddp", *common]
        else:
            py = os.environ.get("HOROVOD_PYTHON")
            if not py:
                print("horovod: skipped (set HOROVOD_PYTHON to a venv's python with horovod 0.28.1)")
                continue
            hrun = os.path.join(os.path.dirname(py), "horovodrun")
            cmds[mode] = [hrun, "-np", str(args.np), "-H", f"localhost:{args.np}", "--gloo", "--network-interface",
                          "lo", py, me, "--worker", "horovod", *common]
    # Repetitions are interleaved (hora, ddp, horovod, hora, ...) so that load from anything
    # else on the machine hits every mode alike.
    runs = {mode: [] for mode in cmds}
    for _ in range(args.reps):
        for mode, cmd in cmds.items():
            runs[mode].append(run(cmd))
    results = {}
    for mode, rs in runs.items():
        steps = [r["step"] for r in rs]
        med = statistics.median(steps)
        lats = [r["latency"] for r in rs if r["latency"]]
        results[mode] = {
            "step_ms": med * 1e3,
            "min_step_ms": min(steps) * 1e3,
            "spread": (max(steps) - min(steps)) / med,
            "latency_us": statistics.median(lats) * 1e6 if lats else None,
        }
        res = results[mode]
        print(f"{mode:8s} step {res['step_ms']:.2f} ms (min {res['min_step_ms']:.2f}, spread "
              f"{100 * res['spread']:.0f}%)"
              + (f"  4 KiB allreduce median {res['latency_us']:.0f} us" if res["latency_us"] else ""), flush=True)
    if "hora" in results:
        for peer in ("ddp", "horovod"):
            if peer in results:
                print(f"hora / {peer}: {results['hora']['step_ms'] / results[peer]['step_ms']:.2f}x step time "
                      f"(median), {results['hora']['min_step_ms'] / results[peer]['min_step_ms']:.2f}x (best run)")
    print("JSON " + json.dumps(results))


if __name__ == "__main__":
    main()
