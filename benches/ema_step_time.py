"""Step time of EMA-rewritten ORT artifacts against stock artifacts and a host-side EMA (CPU, one process).

Why: issue 17 promises that an EMA of the weights injected by the rewrite costs one fused pass over
the weights on steps that update the average and nothing on the others, and that it is at or below
what a user gets by doing the same EMA on the host after optimizer.step(). This measures it on the
same model as benches/ort_step_time.py (whose model building, interleaved timing and per-phase
summary it reuses), driving every configuration with the unmodified training loop:

  stock      the original artifacts
  stock_b    the original artifacts again, loaded separately: the A/A control (the noise band)
  ema1       onnx_lookahead.rewrite(stock, scheme="ema", decay=D, every=1)
  ema10      the same with every=10
  host1      the original artifacts, and after every optimizer.step() the user's host-side EMA:
             for each trainable parameter p = state.parameters[name].data (a zero-copy view of the
             checkpoint's buffer): ema *= D; ema += (1-D)*p, in place in float32 NumPy arrays
  host10     the same after every 10th step

Step t has phase t mod 10. The rewritten EMA applies the update of step t at the first forward
after it (phase 1 for every=10), and the host EMA right after step() (phase 0), so the non-update
steps of every=10 are phases 2..9 (plainR). Reported per configuration, as ratio to stock:
  meanR   mean over all measured steps (whole 10-step cycles): the average cost per step
  cycleR  sum of the 10 phase medians: the same, robust against outliers
  plainR  median over phases 2..9 (non-update steps for every=10)
The A/A band is the range of stock_b/stock plainR over 5 consecutive blocks of the run, next to the
whole-run value. At the end the host EMA and the rewrite's EMA state (onnx_lookahead.ort.
sync_parameters applies the last pending update) are compared, so both did the same work, and the
last training losses of all configurations are printed (they must be equal: training is untouched).

Usage: target/py-venv/bin/python benches/ema_step_time.py [--steps 300] [--optimizers adamw sgd] ...
       (or benches/ema_step_time.sh, which installs the package into the venv first)
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ort_step_time as base  # noqa: E402  (also puts tests/python on sys.path)
import onnx_lookahead  # noqa: E402
import onnxruntime  # noqa: E402
from lookahead_testkit.ort import StockLoop, generate_artifacts  # noqa: E402
from onnx_lookahead.ort import sync_parameters  # noqa: E402

PERIOD = 10   # every=N of the sparse configurations, and the phase structure of the summary
BLOCKS = 5    # blocks of the run for the A/A band


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", default="512,2048,2048,1024,16",
                    help="layer widths, input first (default: 7.4 M parameters)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--decay", type=float, default=0.999)
    ap.add_argument("--steps", type=int, default=300, help="measured steps per config (rounded up to whole cycles)")
    ap.add_argument("--warmup", type=int, default=20, help="warm-up steps per config (rounded up to whole cycles)")
    ap.add_argument("--optimizers", nargs="+", default=["adamw"], choices=["adamw", "sgd"])
    ap.add_argument("--work", type=Path, help="keep artifacts here (default: a temporary folder)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON")
    return ap.parse_args(argv)


class HostEma:
    """The stock loop plus the user's EMA on the host after optimizer.step() (every `every` steps)."""

    def __init__(self, loop: StockLoop, names, decay: float, every: int):
        self.loop, self.every = loop, every
        self.views = {n: loop.state.parameters[n].data for n in names}   # live views of the weights
        self.ema = {n: np.array(v, copy=True) for n, v in self.views.items()}
        self.d, self.e = np.float32(decay), np.float32(1 - decay)

    def step(self, t: int, batch) -> float:
        loss = self.loop.step(batch)[0]
        if t % self.every == 0:
            for n, ema in self.ema.items():
                ema *= self.d
                ema += self.e * self.views[n]
        return loss


def aa_band(times: dict, warmup: int, steps: int) -> list[float]:
    """stock_b/stock ratio of the non-update-phase medians in each of BLOCKS consecutive blocks."""
    phases = np.arange(warmup + 1, warmup + steps + 1) % PERIOD
    ratios = []
    for idx in np.array_split(np.arange(steps), BLOCKS):
        sel = idx[phases[idx] >= 2]
        ratios.append(float(np.median(np.array(times["stock_b"])[sel]) / np.median(np.array(times["stock"])[sel])))
    return ratios


def bench_optimizer(a, kind: str, work: Path) -> dict:
    opt = base.OPTIMIZERS[kind]
    spec = base.make_spec(a.dims)
    stock = generate_artifacts(spec, opt, work / f"{kind}_stock")
    rewritten = {}
    for every in (1, PERIOD):
        out = work / f"{kind}_ema{every}"
        onnx_lookahead.rewrite(stock, out, scheme="ema", decay=a.decay, every=every, force=True)
        rewritten[every] = out
    so = base.session_options()
    loops = {"stock": StockLoop(stock, opt.lr, session_options=so),
             "stock_b": StockLoop(stock, opt.lr, session_options=so),
             "ema1": StockLoop(rewritten[1], opt.lr, session_options=so),
             f"ema{PERIOD}": StockLoop(rewritten[PERIOD], opt.lr, session_options=so)}
    hosts = {f"host{n}": HostEma(StockLoop(stock, opt.lr, session_options=so), spec.trainable, a.decay, n)
             for n in (1, PERIOD)}
    batch = [spec.batch(np.random.RandomState(0), a.batch)]
    steppers = {n: (lambda t, loop=loop: loop.step(batch)[0]) for n, loop in loops.items()}
    steppers.update({n: (lambda t, h=h: h.step(t, batch)) for n, h in hosts.items()})
    warmup, steps = base.cycles(a.warmup, PERIOD), base.cycles(a.steps, PERIOD)
    times, last_loss = base.interleaved(steppers, warmup, steps)
    configs = base.summarize(times, last_loss, warmup, steps, PERIOD)
    # Same work on both sides: the rewrite's EMA state (last pending update applied) vs the host EMA.
    agreement = {}
    for n in (1, PERIOD):
        state = loops[f"ema{n}"].state
        sync_parameters(state)
        host = hosts[f"host{n}"].ema
        agreement[n] = max(float(np.max(np.abs(np.asarray(state.parameters[f"lookahead__ema__{p}"].data) - host[p])))
                           for p in spec.trainable)
    return dict(optimizer=kind, n_params=spec.n_params, steps=steps, warmup=warmup, configs=configs,
                aa_blocks=aa_band(times, warmup, steps), ema_vs_host_max_abs=agreement)


def report(a, res: dict) -> None:
    c = res["configs"]
    print(f"=== {res['optimizer']}: {res['n_params'] / 1e6:.2f} M params (dims {a.dims}), batch {a.batch}, "
          f"EMA decay {a.decay}, {res['steps']} measured steps/config after {res['warmup']} warm-up, "
          f"ort {onnxruntime.__version__}")
    print(f"{'config':<8} {'mean ms':>8} {'plain ms':>9} {'ph0 ms':>7} {'ph1 ms':>7}  "
          f"{'meanR':>6} {'cycleR':>6} {'plainR':>6}  last loss")
    for name, r in c.items():
        ph = r["phase_medians"]
        print(f"{name:<8} {r['mean'] * 1e3:8.2f} {r['plain_median'] * 1e3:9.2f} {ph[0] * 1e3:7.2f} {ph[1] * 1e3:7.2f}  "
              f"{r['meanR']:6.3f} {r['cycleR']:6.3f} {r['plainR']:6.3f}  {r['last_loss']:.6g}")
    band = res["aa_blocks"]
    print(f"A/A (stock_b/stock) non-update steps: {c['stock_b']['plainR']:.3f} over the run, "
          f"{min(band):.3f}..{max(band):.3f} over {BLOCKS} blocks; "
          f"ema{PERIOD} non-update steps: {c[f'ema{PERIOD}']['plainR']:.3f}")
    print(f"mean per step vs stock: ema1 {c['ema1']['meanR']:.3f} vs host1 {c['host1']['meanR']:.3f}; "
          f"ema{PERIOD} {c[f'ema{PERIOD}']['meanR']:.3f} vs host{PERIOD} {c[f'host{PERIOD}']['meanR']:.3f}")
    print("rewritten EMA state vs host EMA, max |diff|: "
          + ", ".join(f"every={n}: {v:.2g}" for n, v in res["ema_vs_host_max_abs"].items()))


def main(argv=None) -> None:
    a = parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = a.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for kind in a.optimizers:
            results.append(bench_optimizer(a, kind, work))
            report(a, results[-1])
    if a.json:
        a.json.write_text(json.dumps(dict(args={k: str(v) for k, v in vars(a).items()}, results=results), indent=1))


if __name__ == "__main__":
    main()
