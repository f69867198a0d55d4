"""Step time of Lookahead-rewritten ORT artifacts against the original ones (CPU, one process).

Why: the rewrite promises that optimizer steps which do not sync cost the same as stock steps, and
that a sync costs about one pass over the weights. This measures it on a model of a few million
parameters for AdamW and SGD, calling the onnx-lookahead CLI to rewrite, and driving every
configuration with the unmodified training loop (forward + backward, optimizer.step(),
lazy_reset_grad()):

  stock      the original artifacts
  stock_b    the original artifacts again, loaded separately: the A/A control. Its ratio to
             stock shows the noise band; differences inside it mean nothing.
  lookahead  the rewritten artifacts (k, alpha)

The configurations run interleaved, round-robin with a rotating order, in one process, after a
warm-up, so drifts of the machine (frequency, other load) hit all of them alike. Intra-op thread
spinning is off, since spinning pools of idle sessions would steal cores from the running one.

Step t belongs to phase t mod k. A rewrite may do its sync work in the step that ends a cycle
(phase 0) or lazily at the first forward after it (phase 1), so "non-sync" steps are phases
2..k-1 and need k >= 3. Reported per configuration, as ratio to stock:
  plainR  median step time over non-sync steps
  cycleR  sum over the k phases of the median step time of that phase: the cost of a whole cycle,
          i.e. the time averaged over k steps, robust against outliers
  meanR   plain mean over all measured steps (whole cycles)

Usage: target/py-venv/bin/python benches/ort_step_time.py [--steps 100] [--k 5] ...
       (or benches/ort_step_time.sh, which builds the binary and the venv first)
The binary is --bin, else ONNX_LOOKAHEAD_BIN, else target/release/onnx-lookahead.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402

from lookahead_testkit import cli  # noqa: E402
from lookahead_testkit.model import MlpSpec  # noqa: E402
from lookahead_testkit.ort import StockLoop, generate_artifacts  # noqa: E402
from lookahead_testkit.reference import OptimizerConfig  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", default="512,2048,2048,1024,16",
                    help="layer widths, input first (default: 7.4 M parameters)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=100, help="measured steps per config (rounded up to whole cycles)")
    ap.add_argument("--warmup", type=int, default=10, help="warm-up steps per config (rounded up to whole cycles)")
    ap.add_argument("--optimizers", nargs="+", default=["adamw", "sgd"], choices=["adamw", "sgd"])
    ap.add_argument("--work", type=Path, help="keep artifacts here (default: a temporary folder)")
    ap.add_argument("--bin", type=Path, help="onnx-lookahead binary")
    ap.add_argument("--json", type=Path, help="also write the results as JSON")
    a = ap.parse_args(argv)
    if a.k < 3:
        ap.error("--k must be >= 3: phases 0 and 1 may carry the sync")
    return a


def cycles(n: int, k: int) -> int:
    return -(-n // k) * k


OPTIMIZERS = {"adamw": OptimizerConfig("adamw", lr=1e-3, weight_decay=0.01), "sgd": OptimizerConfig("sgd", lr=1e-3)}


def make_spec(dims: str) -> MlpSpec:
    """The benchmark MLP: widths input first, ReLU between, a linear last layer."""
    d = [int(x) for x in dims.split(",")]
    return MlpSpec("bench_mlp", d[0], tuple((w, "relu") for w in d[1:-1]) + ((d[-1], "none"),))


def session_options() -> onnxruntime.SessionOptions:
    """No intra-op spinning: spinning pools of idle sessions would steal cores from the running one."""
    so = onnxruntime.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def interleaved(steppers: dict, warmup: int, steps: int):
    """Runs step t = 1..warmup+steps of every stepper (name -> callable(t) -> loss), round-robin
    with a rotating order; -> (times[name][i] = seconds of step warmup+1+i, last loss per name)."""
    names = list(steppers)
    times = {n: [] for n in names}
    last_loss = {}
    for t in range(1, warmup + steps + 1):
        for j in range(len(names)):
            name = names[(t + j) % len(names)]
            start = time.perf_counter()
            last_loss[name] = steppers[name](t)
            elapsed = time.perf_counter() - start
            if t > warmup:
                times[name].append(elapsed)
    return times, last_loss


def summarize(times: dict, last_loss: dict, warmup: int, steps: int, k: int, base: str = "stock") -> dict:
    """Per config: plain_median (phases >= 2), cycle (sum of the k phase medians), mean, and their
    ratios to `base` (plainR, cycleR, meanR). Step t has phase t mod k."""
    phases = np.arange(warmup + 1, warmup + steps + 1) % k
    result = {}
    for name, ts in times.items():
        ts = np.array(ts)
        phase_medians = [float(np.median(ts[phases == p])) for p in range(k)]
        result[name] = dict(plain_median=float(np.median(ts[phases >= 2])), cycle=float(sum(phase_medians)),
                            mean=float(ts.mean()), phase_medians=phase_medians, last_loss=last_loss[name])
    b = result[base]
    for r in result.values():
        r.update(plainR=r["plain_median"] / b["plain_median"], cycleR=r["cycle"] / b["cycle"],
                 meanR=r["mean"] / b["mean"])
    return result


def bench_optimizer(a, opt: OptimizerConfig, spec: MlpSpec, tool: cli.Cli, work: Path) -> dict:
    stock = generate_artifacts(spec, opt, work / f"{opt.kind}_stock")
    rewritten = tool.rewrite(stock, work / f"{opt.kind}_lookahead", a.k, a.alpha, "--force")
    so = session_options()
    loops = {name: StockLoop(d, opt.lr, session_options=so)
             for name, d in (("stock", stock), ("stock_b", stock), ("lookahead", rewritten))}
    batch = [spec.batch(np.random.RandomState(0), a.batch)]
    warmup, steps = cycles(a.warmup, a.k), cycles(a.steps, a.k)
    times, last_loss = interleaved({n: (lambda t, loop=loop: loop.step(batch)[0]) for n, loop in loops.items()},
                                   warmup, steps)
    return dict(optimizer=opt.kind, steps=steps, warmup=warmup,
                configs=summarize(times, last_loss, warmup, steps, a.k))


def report(a, spec: MlpSpec, res: dict) -> None:
    print(f"=== {res['optimizer']}: {spec.n_params / 1e6:.2f} M params (dims {a.dims}), batch {a.batch}, "
          f"k={a.k} alpha={a.alpha}, {res['steps']} measured steps/config after {res['warmup']} warm-up, "
          f"ort {onnxruntime.__version__}")
    phase_cols = " ".join(f"ph{p:<5}" for p in range(a.k))
    print(f"{'config':<10} {'plain ms':>9} {'cycle ms':>9} {'mean ms':>8}  {phase_cols}  "
          f"{'plainR':>7} {'cycleR':>7} {'meanR':>7}  last loss")
    for name, r in res["configs"].items():
        phases = " ".join(f"{m * 1e3:7.2f}" for m in r["phase_medians"])
        print(f"{name:<10} {r['plain_median'] * 1e3:9.2f} {r['cycle'] * 1e3:9.2f} {r['mean'] * 1e3:8.2f}  {phases}  "
              f"{r['plainR']:7.3f} {r['cycleR']:7.3f} {r['meanR']:7.3f}  {r['last_loss']:.6g}")
    c = res["configs"]
    print(f"A/A control (stock_b/stock): plainR {c['stock_b']['plainR']:.3f}, cycleR {c['stock_b']['cycleR']:.3f}; "
          f"lookahead/stock: plainR {c['lookahead']['plainR']:.3f}, cycleR {c['lookahead']['cycleR']:.3f}, "
          f"meanR {c['lookahead']['meanR']:.3f}")


def main(argv=None) -> None:
    a = parse_args(argv)
    if a.bin is None:
        a.bin, problem = cli.find_binary()
        if problem:
            sys.exit(f"error: {problem}")
    tool = cli.Cli(a.bin)
    spec = make_spec(a.dims)
    optimizers = OPTIMIZERS
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = a.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for kind in a.optimizers:
            results.append(bench_optimizer(a, optimizers[kind], spec, tool, work))
            report(a, spec, results[-1])
    if a.json:
        a.json.write_text(json.dumps(dict(args={k: str(v) for k, v in vars(a).items()}, results=results), indent=1))


if __name__ == "__main__":
    main()
