"""chainrule against PyTorch eager on the same CPU: one training step and one inference pass.

Run ``python -m benchmarks.compare`` (``--help`` for the options). For each network the
same architecture is built in chainrule and in ``torch.nn``, each engine in its own
worker process (so neither inherits the other's thread pools), torch with
``torch.set_num_threads(os.cpu_count())``. The parent drives the two workers in turn,
round after round (chainrule, torch, chainrule, torch, ...), so slow drifts of the
machine hit both alike; only one worker computes at any moment.

Timed:
- training step: forward, cross-entropy, backward, SGD (momentum 0.9) update, float32;
- inference: one forward pass in eval mode (torch under ``inference_mode``).

Printed: the median time of each engine, the ratio chainrule/torch of every round and
its median, the peak RSS of each worker (``ru_maxrss``, read in the worker), and the
achieved GFLOP/s (convolution and linear multiply-adds only) against the peak of a
2048x2048 float32 matmul measured in NumPy in the parent process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

# ---------------------------------------------------------------------------- networks
# A network is a list of layer specs shared by both engines:
#   ("conv", c_in, c_out, kernel, padding, bias) ("bn2d", c) ("relu",) ("maxpool", k)
#   ("flatten",) ("linear", in, out)

def _conv_bn_relu(c_in: int, c_out: int) -> list[tuple]:
    return [("conv", c_in, c_out, 3, 1, False), ("bn2d", c_out), ("relu",)]


NETS: dict[str, dict[str, Any]] = {
    "lenet": {
        "title": "LeNet-5", "input": (1, 28, 28), "batch": 64,
        "layers": [("conv", 1, 6, 5, 2, True), ("relu",), ("maxpool", 2),
                   ("conv", 6, 16, 5, 0, True), ("relu",), ("maxpool", 2), ("flatten",),
                   ("linear", 400, 120), ("relu",), ("linear", 120, 84), ("relu",),
                   ("linear", 84, 10)],
    },
    "cifar": {
        "title": "CIFAR-style CNN", "input": (3, 32, 32), "batch": 128,
        "layers": [("conv", 3, 32, 3, 1, True), ("relu",), ("conv", 32, 32, 3, 1, True), ("relu",),
                   ("maxpool", 2),
                   ("conv", 32, 64, 3, 1, True), ("relu",), ("conv", 64, 64, 3, 1, True), ("relu",),
                   ("maxpool", 2), ("flatten",),
                   ("linear", 4096, 256), ("relu",), ("linear", 256, 10)],
    },
    "vgg": {
        "title": "VGG-style CNN with BatchNorm", "input": (3, 32, 32), "batch": 64,
        "layers": [*_conv_bn_relu(3, 32), *_conv_bn_relu(32, 32), ("maxpool", 2),
                   *_conv_bn_relu(32, 64), *_conv_bn_relu(64, 64), ("maxpool", 2),
                   *_conv_bn_relu(64, 128), *_conv_bn_relu(128, 128), ("maxpool", 2),
                   ("flatten",), ("linear", 2048, 256), ("relu",), ("linear", 256, 10)],
    },
}
SCALING_NET = "cifar"
SCALING_BATCHES = (1, 16, 64, 256)
NUM_CLASSES = 10


def count_flops(layers: list[tuple], input_chw: tuple[int, int, int], batch: int) -> tuple[float, float]:
    """(inference, training) floating-point operations of the convolutions and linear
    layers: 2 per multiply-add. Training = forward + weight gradient + input gradient,
    without the input gradient of the first layer (nothing needs it)."""
    c, h, w = input_chw
    forward = 0.0
    first = None
    for spec in layers:
        kind = spec[0]
        if kind == "conv":
            _, c_in, c_out, k, pad, _ = spec
            h, w = h + 2 * pad - k + 1, w + 2 * pad - k + 1
            flops = 2.0 * batch * c_out * h * w * c_in * k * k
            c = c_out
        elif kind == "maxpool":
            h, w, flops = h // spec[1], w // spec[1], 0.0
        elif kind == "linear":
            flops = 2.0 * batch * spec[1] * spec[2]
        else:
            flops = 0.0
        if flops and first is None:
            first = flops
        forward += flops
    return forward, 3 * forward - (first or 0.0)


# ---------------------------------------------------------------------------- engines
def build_layers(layers: list[tuple], make: dict[str, Any]) -> list[Any]:
    """One engine's layers, in order: ``make[kind](*args)`` for each spec ``(kind, *args)``."""
    return [make[kind](*args) for kind, *args in layers]


class ChainruleEngine:
    name = "chainrule"

    def __init__(self, layers: list[tuple], seed: int = 0) -> None:
        import chainrule as cr

        self.cr = cr
        rng = __import__("numpy").random.default_rng(seed)
        self.model = cr.Sequential(*build_layers(layers, {
            "conv": lambda c_in, c_out, k, pad, bias: cr.Conv2d(c_in, c_out, k, padding=pad,
                                                                bias=bias, rng=rng),
            "bn2d": cr.BatchNorm2d, "relu": cr.ReLU, "maxpool": cr.MaxPool2d,
            "flatten": cr.Flatten, "linear": lambda c_in, c_out: cr.Linear(c_in, c_out, rng=rng)}))
        self.loss = cr.CrossEntropyLoss()
        self.optimizer = cr.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)

    def set_data(self, x, y) -> None:
        self.x, self.y = x, y

    def train_step(self) -> None:
        self.model.train()
        self.model.zero_grad()
        logits = self.model.forward(self.x)
        self.loss(logits, self.y)
        # as torch, whose input does not require grad: no gradient for the data itself
        self.model.backward(self.loss.backward(), needs_input_grad=False)
        self.optimizer.step()

    def infer(self) -> None:
        self.model.eval()
        self.model.forward(self.x)

    def profile(self, reps: int) -> list[dict[str, Any]]:
        """Median forward and backward time of each layer of the (flat) Sequential over
        ``reps`` training steps."""
        layers = list(self.model)
        fwd = [[] for _ in layers]
        bwd = [[] for _ in layers]
        self.model.train()
        for _ in range(reps):
            self.model.zero_grad()
            x = self.x
            for i, layer in enumerate(layers):
                start = time.perf_counter()
                x = layer.forward(x)
                fwd[i].append(time.perf_counter() - start)
            self.loss(x, self.y)
            grad = self.loss.backward()
            for i in reversed(range(len(layers))):
                start = time.perf_counter()
                if i:
                    grad = layers[i].backward(grad)
                else:                                   # as in train_step
                    layers[i].backward(grad, needs_input_grad=False)
                bwd[i].append(time.perf_counter() - start)
            self.optimizer.step()
        return [{"layer": repr(layer), "forward": statistics.median(f), "backward": statistics.median(b)}
                for layer, f, b in zip(layers, fwd, bwd)]


class TorchEngine:
    name = "torch"

    def __init__(self, layers: list[tuple], seed: int = 0) -> None:
        import torch
        from torch import nn

        # all cores, unless benchmarks.numba_ab asks for fewer (its 1-thread column)
        torch.set_num_threads(int(os.environ.get("COMPARE_TORCH_THREADS") or os.cpu_count() or 1))
        torch.manual_seed(seed)
        self.torch = torch
        self.model = nn.Sequential(*build_layers(layers, {
            "conv": lambda c_in, c_out, k, pad, bias: nn.Conv2d(c_in, c_out, k, padding=pad,
                                                                bias=bias),
            "bn2d": nn.BatchNorm2d, "relu": nn.ReLU, "maxpool": nn.MaxPool2d,
            "flatten": nn.Flatten, "linear": nn.Linear}))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)

    def set_data(self, x, y) -> None:
        self.x, self.y = self.torch.from_numpy(x), self.torch.from_numpy(y)

    def train_step(self) -> None:
        self.model.train()
        self.optimizer.zero_grad()
        loss = self.torch.nn.functional.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.optimizer.step()

    def infer(self) -> None:
        self.model.eval()
        with self.torch.inference_mode():
            self.model(self.x)


# ---------------------------------------------------------------------------- worker
def worker_main(engine_name: str) -> None:
    """Serve JSON commands from stdin, one per line, answering one JSON line each."""
    import numpy as np

    engine: Any = None
    engine_cls = ChainruleEngine if engine_name == "chainrule" else TorchEngine
    out = sys.stdout
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        reply: dict[str, Any] = {}
        if op == "setup":
            net = NETS[cmd["net"]]
            engine = engine_cls(net["layers"])
            rng = np.random.default_rng(1)
            x = rng.standard_normal((cmd["batch"], *net["input"]), dtype=np.float32)
            y = rng.integers(0, NUM_CLASSES, cmd["batch"]).astype(np.int64)
            engine.set_data(x, y)
            for _ in range(cmd["warmup"]):   # first touches of every buffer, lazy inits
                engine.train_step()
                engine.infer()
        elif op in ("train", "infer"):
            step = engine.train_step if op == "train" else engine.infer
            times = []
            deadline = time.perf_counter() + cmd["min_seconds"]
            while len(times) < cmd["min_reps"] or (time.perf_counter() < deadline
                                                     and len(times) < cmd["max_reps"]):
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
            reply["times"] = times
        elif op == "profile":
            reply["layers"] = engine.profile(cmd["reps"])
        elif op == "info":
            reply["maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            if engine_name == "chainrule":
                from threadpoolctl import threadpool_info
                reply["blas"] = [{k: d.get(k) for k in ("internal_api", "version", "architecture",
                                                        "num_threads")} for d in threadpool_info()]
            else:
                import torch
                reply["torch"] = {"version": torch.__version__, "threads": torch.get_num_threads()}
        elif op == "quit":
            break
        out.write(json.dumps(reply) + "\n")
        out.flush()


class Worker:
    """A worker subprocess of one engine, driven by JSON lines over its stdin/stdout."""

    def __init__(self, engine: str) -> None:
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join([os.path.join(root, "src"), root,
                                             env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self.engine = engine
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.compare", "--worker", engine],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                     cwd=root, text=True)

    def ask(self, op: str, **kwargs: Any) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps({"op": op, **kwargs}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.engine} worker died (exit code {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.close()
        self.proc.wait()


# ---------------------------------------------------------------------------- driver
def matmul_peak_gflops(size: int, repeats: int = 5) -> float:
    """Best float32 GFLOP/s of a size x size matmul in NumPy (BLAS at its default threads)."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2.0 * size ** 3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(net: str, batch: int, args: argparse.Namespace, profile: bool = False,
            workers: dict[str, Worker] | None = None) -> dict[str, Any]:
    """Time both engines on one network and batch size, alternating over rounds."""
    own = workers is None
    if own:
        workers = {name: Worker(name) for name in ("chainrule", "torch")}
    try:
        for w in workers.values():
            w.ask("setup", net=net, batch=batch, warmup=args.warmup)
        times: dict[str, dict[str, list[float]]] = {e: {"train": [], "infer": []} for e in workers}
        budget = dict(min_reps=args.min_reps, max_reps=args.max_reps, min_seconds=args.round_seconds)
        for _ in range(args.rounds):
            for op in ("train", "infer"):
                for name, w in workers.items():
                    # Let the other engine's spinning threads go idle before timing.
                    time.sleep(args.pause)
                    times[name][op].append(statistics.median(w.ask(op, **budget)["times"]))
        result: dict[str, Any] = {"net": net, "batch": batch, "times": times}
        if profile:
            result["profile"] = workers["chainrule"].ask("profile", reps=args.min_reps)["layers"]
        if own:
            result["info"] = {name: w.ask("info") for name, w in workers.items()}
        return result
    finally:
        if own:
            for w in workers.values():
                w.close()


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:9.2f}"


def report(result: dict[str, Any], peak: float) -> list[str]:
    net = NETS[result["net"]]
    batch = result["batch"]
    flops = dict(zip(("infer", "train"), count_flops(net["layers"], net["input"], batch)))
    lines = [f"## {net['title']}, batch {batch}, {'x'.join(map(str, net['input']))} float32", ""]
    lines.append("| engine | train step ms | infer ms | train GFLOP/s (% of peak) | "
                 "infer GFLOP/s (% of peak) | peak RSS MiB |")
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: |")
    med = {e: {op: statistics.median(v) for op, v in ops.items()} for e, ops in result["times"].items()}
    for engine in ("chainrule", "torch"):
        m = med[engine]
        rates = {op: flops[op] / m[op] / 1e9 for op in ("train", "infer")}
        rss = result["info"][engine]["maxrss_mib"]
        lines.append(f"| {engine} | {_ms(m['train'])} | {_ms(m['infer'])} | "
                     f"{rates['train']:6.1f} ({100 * rates['train'] / peak:4.1f}%) | "
                     f"{rates['infer']:6.1f} ({100 * rates['infer'] / peak:4.1f}%) | {rss:8.0f} |")
    lines.append("")
    for op, label in (("train", "training step"), ("infer", "inference")):
        ratios = [c / t for c, t in zip(result["times"]["chainrule"][op], result["times"]["torch"][op])]
        lines.append(f"- {label} ratio chainrule/torch per round: "
                     f"{', '.join(f'{r:.2f}' for r in ratios)}; **median {statistics.median(ratios):.2f}**")
    rss = {e: result["info"][e]["maxrss_mib"] for e in ("chainrule", "torch")}
    lines.append(f"- peak RSS chainrule/torch: {rss['chainrule'] / rss['torch']:.2f}")
    lines.append("")
    return lines


def report_profile(result: dict[str, Any]) -> list[str]:
    rows = result["profile"]
    total = sum(r["forward"] + r["backward"] for r in rows)
    lines = [f"### chainrule per-layer profile, {NETS[result['net']]['title']} batch {result['batch']}",
             "", "| # | layer | forward ms | backward ms | share |", "| ---: | --- | ---: | ---: | ---: |"]
    for i, r in enumerate(rows):
        lines.append(f"| {i} | `{r['layer']}` | {_ms(r['forward'])} | {_ms(r['backward'])} | "
                     f"{100 * (r['forward'] + r['backward']) / total:5.1f}% |")
    lines.append(f"| | total (layers only) | {_ms(sum(r['forward'] for r in rows))} | "
                 f"{_ms(sum(r['backward'] for r in rows))} | |")
    lines.append("")
    return lines


def report_scaling(results: list[dict[str, Any]], peak: float) -> list[str]:
    net = NETS[SCALING_NET]
    lines = [f"## Scaling: {net['title']} over batch sizes", "",
             "| batch | chainrule train ms | torch train ms | ratio | chainrule infer ms | "
             "torch infer ms | ratio | chainrule train GFLOP/s | torch train GFLOP/s |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for result in results:
        _, train_flops = count_flops(net["layers"], net["input"], result["batch"])
        t = result["times"]
        ratio = {op: statistics.median([c / q for c, q in zip(t["chainrule"][op], t["torch"][op])])
                 for op in ("train", "infer")}
        c_train, t_train = (statistics.median(t[e]["train"]) for e in ("chainrule", "torch"))
        lines.append(f"| {result['batch']} | {_ms(c_train)} | {_ms(t_train)} | {ratio['train']:.2f} | "
                     f"{_ms(statistics.median(t['chainrule']['infer']))} | "
                     f"{_ms(statistics.median(t['torch']['infer']))} | {ratio['infer']:.2f} | "
                     f"{train_flops / c_train / 1e9:6.1f} | {train_flops / t_train / 1e9:6.1f} |")
    lines.append("")
    return lines


def machine_lines(peak: float, info: dict[str, Any]) -> list[str]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    blas = info.get("chainrule", {}).get("blas", [])
    blas_text = "; ".join(f"{b['internal_api']} {b['version']} ({b['architecture']} kernel, "
                          f"{b['num_threads']} threads)" for b in blas) or "unknown"
    torch_info = info.get("torch", {}).get("torch", {})
    import numpy as np
    return [f"- CPU: {cpu}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at the end",
            f"- Python {platform.python_version()}, NumPy {np.__version__}, BLAS: {blas_text}",
            f"- torch {torch_info.get('version', '?')} with {torch_info.get('threads', '?')} threads",
            f"- measured peak: {peak:.0f} GFLOP/s (2048x2048 float32 matmul in NumPy, best of 5)", ""]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", default="lenet,cifar,vgg,scaling",
                        help="comma-separated subset of: " + ", ".join([*NETS, "scaling"]))
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per network")
    parser.add_argument("--quick", action="store_true",
                        help="tiny batches, one round: checks that the script runs, times nothing")
    parser.add_argument("--profile", action="store_true",
                        help="also print chainrule's per-layer forward/backward times")
    parser.add_argument("--worker", choices=("chainrule", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.nets = [n.strip() for n in args.nets.split(",") if n.strip()]
    unknown = [n for n in args.nets if n not in (*NETS, "scaling")]
    if unknown:
        parser.error(f"unknown nets {unknown}; choose from {[*NETS, 'scaling']}")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    # per round and engine: at least min_reps steps, more until round_seconds have passed
    args.min_reps, args.max_reps, args.round_seconds, args.warmup, args.pause = 3, 50, 0.6, 2, 0.2
    args.batches = {n: NETS[n]["batch"] for n in NETS}
    args.scaling = SCALING_BATCHES
    if args.quick:
        args.rounds = min(args.rounds, 1)
        args.min_reps, args.max_reps, args.round_seconds, args.warmup, args.pause = 1, 1, 0.0, 1, 0.0
        args.batches = {n: 2 for n in NETS}
        args.scaling = (1, 2)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return 0
    peak = matmul_peak_gflops(256 if args.quick else 2048)
    lines = [f"# chainrule vs torch: `python -m benchmarks.compare {' '.join(sys.argv[1:])}`".rstrip(), ""]
    info: dict[str, Any] = {}
    body: list[str] = []
    for net in args.nets:
        if net == "scaling":
            continue
        result = compare(net, args.batches[net], args, profile=args.profile)
        info = result["info"]
        body += report(result, peak)
        if args.profile:
            body += report_profile(result)
        print(f"[done {net}]", file=sys.stderr, flush=True)
    if "scaling" in args.nets:
        workers = {name: Worker(name) for name in ("chainrule", "torch")}
        try:
            results = [compare(SCALING_NET, b, args, workers=workers) for b in args.scaling]
            info = info or {name: w.ask("info") for name, w in workers.items()}
        finally:
            for w in workers.values():
                w.close()
        body += report_scaling(results, peak)
    lines += machine_lines(peak, info) + body
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
