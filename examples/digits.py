"""Does weight averaging help? Plain AdamW / SGD against Lookahead(k=5, alpha 0.5 and 0.8) around each,
an EMA of the weights (decay 0.99) and SWA (the mean of the weights at the end of each of the last 8
of 30 epochs), on real data, with ONNX Runtime on-device training artifacts and the stock training loop.

Data: scikit-learn's bundled digits (1797 8x8 images, 10 classes; nothing is downloaded), one
fixed stratified 80/20 split. Models: an MLP 64-64-10 and a small CNN (examples/digits_models.py).
For every (model, inner optimizer, seed) the artifacts are generated once (the seed sets the
initial weights) and rewritten once per averaging config with onnx_lookahead.rewrite (scheme
"lookahead" k=5 alpha, "ema" decay 0.99, "swa" swa_start/every from the epochs); every run then
trains one of them at one learning rate with the unchanged loop (CheckpointState / Module /
Optimizer, optimizer.set_learning_rate), mini-batches of a fixed size in the seed's order (the same
for every optimizer and learning rate), and records per epoch the mean training loss and the
held-out loss and accuracy (from the eval graph: Lookahead's synced weights, the EMA, the SWA
mean, which is the initial weights until SWA's first sample). EMA and SWA leave training alone:
their training losses are plain's, step for step (checked).

    target/py-venv/bin/python examples/digits.py --out docs       # the full run (README numbers)
    target/py-venv/bin/python examples/digits.py --quick --jobs 2  # a < 30 s check, to a temp dir

Writes <out>/digits/results.json, <out>/digits/tables.md, <out>/digits_curves.png and
<out>/digits_lr_robustness.png (examples/digits_report.py), and prints the tables.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import digits_models as dm  # noqa: E402

K = 5
EMA_DECAY = 0.99
SWA_FRACTION = 0.75
# config -> onnx_lookahead.rewrite options (None: the plain artifacts). SWA's swa_start and every
# depend on the run's length: see swa_options.
CONFIGS = {"plain": None,
           "LA(5,0.5)": {"scheme": "lookahead", "k": K, "alpha": 0.5},
           "LA(5,0.8)": {"scheme": "lookahead", "k": K, "alpha": 0.8},
           "EMA(0.99)": {"scheme": "ema", "decay": EMA_DECAY},
           "SWA": {"scheme": "swa"}}
# Why these averaging settings (steps per epoch = 1437 // 32 = 44; 30 epochs = 1320 steps):
# - EMA decay 0.99 averages over ~1 / (1 - 0.99) = 100 steps (~2.3 epochs, half-life 69 steps), short
#   against 1320 steps: the initial weights keep 0.99^1320 = 2e-6 of the average. The EMA starts at the
#   initial weights with no bias correction, so 0.999 (a 1000-step window, ~23 epochs) would still hold
#   0.999^1320 = 27 % of the random initial weights at the end: a setting for runs of 10k+ steps.
#   Updated every step (every=1), as timm/Keras/torch's EMA helpers do by default.
# - SWA as in torch.optim.swa_utils' recipe (and the SWA paper): start at ~75 % of training and add
#   the weights to the mean once per epoch (every = steps per epoch), with the loop's constant learning
#   rate: 30 epochs -> the ends of epochs 23..30, 8 samples. Once per epoch rather than every step:
#   consecutive steps' weights are nearly the same point, so 331 per-step samples over the same 8
#   epochs are not many more independent ones, and this is the schedule a user porting a torch SWA
#   loop would write (its per-step cost, one pass over the weights on 8 steps out of 1320, is nil).


def swa_options(epochs: int, steps_per_epoch: int) -> dict:
    """SWA's rewrite options: the mean of the weights at the end of every epoch from the first epoch
    after SWA_FRACTION of them (30 epochs: 23..30); at least 2 samples (quick mode's 2 epochs: 1..2)."""
    first_epoch = min(int(epochs * SWA_FRACTION) + 1, max(epochs - 1, 1))
    return {"scheme": "swa", "swa_start": first_epoch * steps_per_epoch, "every": steps_per_epoch,
            "first_epoch": first_epoch, "samples": epochs - first_epoch + 1}


def resolved_configs(epochs: int, steps_per_epoch: int) -> dict:
    """CONFIGS with SWA's schedule filled in for a run of this length."""
    return {config: (swa_options(epochs, steps_per_epoch) if options and options["scheme"] == "swa"
                     else options) for config, options in CONFIGS.items()}


def _rewrite_kwargs(options: dict) -> dict:
    return {key: value for key, value in options.items() if key not in ("first_epoch", "samples")}


# The learning-rate grids span, in half-decade steps, from too small for plain AdamW / SGD (held-out
# accuracy still climbing after 30 epochs) through their best to too large (unstable, then diverged),
# as found by a plain-only pilot (3 seeds, 30 epochs) before any Lookahead run.
FULL = {"seeds": 10, "epochs": 30, "batch_size": 32, "models": list(dm.MODELS),
        "lrs": {"adamw": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1],
                "sgd": [3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0]}}
QUICK = {"seeds": 1, "epochs": 2, "batch_size": 32, "models": list(dm.MODELS),
         "lrs": {"adamw": [1e-3, 1e-2], "sgd": [3e-2, 3e-1]}}


# ------------------------------------------------------------------------------------- artifacts
def artifact_dirs(work: Path, models, seeds, configs: dict) -> dict:
    """{(model, optimizer, seed, config): artifacts directory}: generated once per (model,
    optimizer, seed), rewritten once per averaging config."""
    import onnx_lookahead

    dirs = {}
    for model in models:
        for optimizer in dm.OPTIMIZERS:
            for seed in range(seeds):
                base = dm.generate(model, optimizer, seed, work / f"{model}_{optimizer}_s{seed}" / "plain")
                for index, (config, options) in enumerate(configs.items()):
                    if options is None:
                        dirs[model, optimizer, seed, config] = base
                        continue
                    out = base.parent / f"config{index}_{options['scheme']}"
                    summary = onnx_lookahead.rewrite(base, out, **_rewrite_kwargs(options))
                    assert summary["optimizer"].lower().startswith(optimizer), summary["optimizer"]
                    assert len(summary["wrapped_parameters"]) == 4, summary["wrapped_parameters"]
                    dirs[model, optimizer, seed, config] = out
    return dirs


# ------------------------------------------------------------------------------------- one run
_DATA = None


def _worker_init():
    global _DATA
    import onnxruntime

    # ORT warns about shape merging in generate_artifacts' own optimizer graph (stock or rewritten).
    onnxruntime.set_default_logger_severity(3)
    _DATA = dm.load_data()


def _session_options():
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1      # one run per core: the models are tiny
    options.inter_op_num_threads = 1
    return options


def open_loop(directory: Path, lr: float):
    """The stock loop's three objects over an artifacts directory, at learning rate lr."""
    from onnx_lookahead import ort

    api = ort.training_api()
    state = api.CheckpointState.load_checkpoint(str(directory / "checkpoint"))
    module = api.Module(str(directory / "training_model.onnx"), state, str(directory / "eval_model.onnx"),
                        session_options=_session_options())
    optimizer = api.Optimizer(str(directory / "optimizer_model.onnx"), module)
    optimizer.set_learning_rate(lr)
    return state, module, optimizer


def _finite(value: float):
    """6 significant digits, or None: JSON has no NaN / inf."""
    return float(f"{value:.6g}") if math.isfinite(value) else None


def train_run(task: dict) -> dict:
    """Trains one configuration; returns the task with its per-epoch record."""
    x_train, y_train, x_test, y_test = _DATA
    model, seed, batch = task["model"], task["seed"], task["batch_size"]
    xs_train, xs_test = dm.model_input(model, x_train), dm.model_input(model, x_test)
    _, module, optimizer = open_loop(Path(task["dir"]), task["lr"])
    order = np.random.default_rng([seed, 1])      # the seed's batch order, the same for every config
    started = time.perf_counter()
    train_loss, test_loss, test_acc = [], [], []
    for _ in range(task["epochs"]):
        module.train()
        permutation = order.permutation(len(x_train))
        losses = []
        for b in range(len(x_train) // batch):          # fixed-size batches (the rest is dropped)
            idx = permutation[b * batch:(b + 1) * batch]
            loss, _logits = module(xs_train[idx], y_train[idx])
            optimizer.step()
            module.lazy_reset_grad()
            losses.append(float(loss))
        module.eval()
        loss, logits = module(xs_test, y_test)
        train_loss.append(_finite(float(np.mean(losses))))
        test_loss.append(_finite(float(loss)))
        test_acc.append(round(float(np.mean(np.argmax(logits, axis=1) == y_test)), 6))
    result = {key: task[key] for key in ("model", "optimizer", "config", "seed", "lr")}
    result.update(train_loss=train_loss, test_loss=test_loss, test_acc=test_acc,
                  diverged=any(v is None for v in train_loss + test_loss),
                  seconds=round(time.perf_counter() - started, 3))
    return result


# ------------------------------------------------------------------------------------- quick-mode checks
def check_artifacts(dirs: dict, configs: dict) -> None:
    """Every rewritten directory inspects as its config (Lookahead k=5 and its alpha; EMA and its
    decay, every step; SWA and its start and period); every plain one is not rewritten."""
    import onnx_lookahead

    for (_model, _optimizer, _seed, config), directory in dirs.items():
        report = onnx_lookahead.inspect(directory)
        options = configs[config]
        if options is None:
            assert report["lookahead"] is None and report.get("averaging") is None, (directory, report)
        elif options["scheme"] == "lookahead":
            assert report["lookahead"]["k"] == K, (directory, report["lookahead"])
            assert report["lookahead"]["alpha"] == options["alpha"], (directory, report["lookahead"])
        else:
            averaging = report["averaging"]
            expected = ({"decay": options["decay"], "every": 1} if options["scheme"] == "ema" else
                        {"swa_start": options["swa_start"], "every": options["every"]})
            assert averaging["scheme"] == options["scheme"] and averaging["settings"] == expected, (
                directory, averaging)


def check_eval_is_at_lookahead_weights(dirs: dict, model: str, optimizer: str, lr: float) -> None:
    """Right after a sync step (k inner steps), the raw checkpoint parameters are still the fast
    weights; the eval graph (the accuracy source) must give the logits of the synced Lookahead
    weights, which onnx_lookahead.ort.sync_parameters computes on the host."""
    from onnx_lookahead import ort

    x_train, y_train, x_test, y_test = dm.load_data()
    state, module, opt = open_loop(dirs[model, optimizer, 0, "LA(5,0.5)"], lr)
    module.train()
    for step in range(K):
        idx = np.arange(step * 32, (step + 1) * 32)
        module(dm.model_input(model, x_train[idx]), y_train[idx])
        opt.step()
        module.lazy_reset_grad()
    module.eval()
    _, logits = module(dm.model_input(model, x_test), y_test)
    names = list(dm.initial_weights(model, 0))
    raw = {n: np.array(state.parameters[n].data) for n in names}
    assert ort.sync_parameters(state), "a sync should be pending after k steps"
    synced = {n: np.array(state.parameters[n].data) for n in names}
    gap_synced = np.abs(dm.numpy_logits(model, synced, x_test) - logits).max()
    gap_raw = np.abs(dm.numpy_logits(model, raw, x_test) - logits).max()
    assert gap_synced < 1e-4, f"eval logits differ from the Lookahead weights' by {gap_synced}"
    assert gap_raw > 1e-3, f"eval logits equal the fast weights' (gap {gap_raw}): no sync happened?"
    print(f"check {model}/{optimizer}: eval-graph logits = NumPy logits of the synced weights "
          f"(max gap {gap_synced:.1e}; {gap_raw:.2f} from the unsynced fast weights)")


def check_eval_is_at_the_average(dirs: dict, configs: dict, model: str, optimizer: str, lr: float,
                                 config: str, steps: int) -> None:
    """The stock loop trains the EMA / SWA artifacts for `steps` steps; a NumPy average of the
    weights read after every step (the issue's arithmetic: ema <- D*ema + (1-D)*p; SWA's running
    mean of the weights after steps swa_start, swa_start + every, ...) must give the eval graph's
    logits, which must differ from those of the weights training continues from."""
    x_train, y_train, x_test, y_test = dm.load_data()
    options = configs[config]
    state, module, opt = open_loop(dirs[model, optimizer, 0, config], lr)
    names = list(dm.initial_weights(model, 0))

    def weights():
        return {n: np.array(state.parameters[n].data, dtype=np.float32) for n in names}

    average, samples = weights(), 0
    for step in range(1, steps + 1):
        module.train()
        idx = np.arange((step - 1) * 32, step * 32) % len(x_train)
        module(dm.model_input(model, x_train[idx]), y_train[idx])
        opt.step()
        module.lazy_reset_grad()
        current = weights()
        if options["scheme"] == "ema":
            d = np.float32(options["decay"])
            average = {n: d * average[n] + np.float32(1.0 - options["decay"]) * current[n] for n in names}
        elif step >= options["swa_start"] and (step - options["swa_start"]) % options["every"] == 0:
            samples += 1
            w = np.float32(1.0 / samples)
            average = {n: (np.float32(1.0) - w) * average[n] + w * current[n] for n in names}
    module.eval()
    _, logits = module(dm.model_input(model, x_test), y_test)
    gap_average = np.abs(dm.numpy_logits(model, average, x_test) - logits).max()
    gap_current = np.abs(dm.numpy_logits(model, current, x_test) - logits).max()
    assert gap_average < 1e-4, f"{config}: eval logits differ from the NumPy average's by {gap_average}"
    assert gap_current > 1e-3, f"{config}: eval logits equal the current weights' (gap {gap_current})"
    if options["scheme"] == "swa":
        assert samples >= 2, samples
    what = f"{samples} samples" if options["scheme"] == "swa" else "every step"
    print(f"check {model}/{optimizer} {config}: eval-graph logits after {steps} steps = NumPy logits of "
          f"the NumPy average of the weights ({what}; max gap {gap_average:.1e}; {gap_current:.2f} from "
          f"the current weights)")


def check_results(runs: list, configs: dict) -> None:
    """Results for every run, numbers everywhere; Lookahead runs train differently from plain ones;
    EMA and SWA runs train exactly like plain ones (the same training losses) and evaluate differently."""
    by_key = {}
    for run in runs:
        assert run["test_acc"] and all(isinstance(a, float) and 0.0 <= a <= 1.0 for a in run["test_acc"]), run
        assert all(isinstance(v, float) for v in run["train_loss"] + run["test_loss"]), run
        by_key[run["model"], run["optimizer"], run["seed"], run["lr"], run["config"]] = run
    for (model, optimizer, seed, lr, config), run in by_key.items():
        if configs[config] is None:
            continue
        plain = by_key[model, optimizer, seed, lr, "plain"]
        if plain["diverged"]:
            continue
        if configs[config]["scheme"] == "lookahead":
            assert run["train_loss"] != plain["train_loss"], f"{config} trains like plain: {run}"
        else:
            assert run["train_loss"] == plain["train_loss"], f"{config} does not train like plain: {run}"
            assert run["test_loss"] != plain["test_loss"], f"{config} evaluates like plain: {run}"


def _json(results: dict) -> str:
    """The results as JSON, one line per run."""
    head = json.dumps({key: value for key, value in results.items() if key != "runs"}, indent=1)
    runs = ",\n".join("  " + json.dumps(run) for run in results["runs"])
    return head[:-2] + ',\n "runs": [\n' + runs + "\n ]\n}\n"


# ------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path,
                        help="output folder (the full run: docs); --quick defaults to a new temporary folder")
    parser.add_argument("--quick", action="store_true",
                        help="1 seed, 2 learning rates, 2 epochs, with correctness checks (< 30 s)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    if args.epochs:
        settings["epochs"] = args.epochs
    if args.seeds:
        settings["seeds"] = args.seeds
    if args.out is None:
        if not args.quick:
            parser.error("--out is required for the full run (the README numbers: --out docs)")
        args.out = Path(tempfile.mkdtemp(prefix="digits-quick-"))

    import onnxruntime

    import onnx_lookahead
    import digits_report

    started = time.perf_counter()
    x_train, _, x_test, _ = dm.load_data()
    steps_per_epoch = len(x_train) // settings["batch_size"]
    configs = resolved_configs(settings["epochs"], steps_per_epoch)
    with tempfile.TemporaryDirectory(prefix="digits-artifacts-") as work:
        dirs = artifact_dirs(Path(work), settings["models"], settings["seeds"], configs)
        prepared = time.perf_counter() - started
        if args.quick:
            check_artifacts(dirs, configs)
            for model in settings["models"]:
                check_eval_is_at_lookahead_weights(dirs, model, "adamw", 1e-2)
                check_eval_is_at_the_average(dirs, configs, model, "adamw", 1e-2, "EMA(0.99)", K)
                swa = configs["SWA"]
                check_eval_is_at_the_average(dirs, configs, model, "sgd", 0.3, "SWA",
                                             swa["swa_start"] + swa["every"])
        tasks = [{"model": model, "optimizer": optimizer, "config": config,
                  "seed": seed, "lr": lr, "dir": str(dirs[model, optimizer, seed, config]),
                  "epochs": settings["epochs"], "batch_size": settings["batch_size"]}
                 for model in settings["models"] for optimizer in dm.OPTIMIZERS
                 for lr in settings["lrs"][optimizer] for config in configs
                 for seed in range(settings["seeds"])]
        # The CNN runs take ~3x the MLP's: hand them out first so both workers finish together.
        tasks.sort(key=lambda t: t["model"] != "cnn")
        print(f"{len(tasks)} runs on {args.jobs} worker(s): {settings['epochs']} epochs of "
              f"{len(x_train) // settings['batch_size']} steps each", flush=True)
        if args.jobs > 1:
            with multiprocessing.get_context("spawn").Pool(args.jobs, initializer=_worker_init) as pool:
                runs = list(pool.imap_unordered(train_run, tasks))
        else:
            _worker_init()
            runs = [train_run(task) for task in tasks]
    wall = time.perf_counter() - started
    runs.sort(key=lambda r: (r["model"], r["optimizer"], r["lr"], list(configs).index(r["config"]), r["seed"]))

    results = {
        "description": "examples/digits.py: final and per-epoch held-out accuracy of plain AdamW/SGD vs "
                       "Lookahead around them and EMA and SWA of their weights, ONNX Runtime training "
                       "artifacts, scikit-learn digits",
        "command": " ".join(["examples/digits.py", *(sys.argv[1:] if argv is None else argv)]),
        "settings": {**settings, "k": K, "configs": configs, "split": {
            "train": len(x_train), "test": len(x_test), "test_size": dm.TEST_SIZE,
            "random_state": dm.SPLIT_SEED, "stratified": True},
            "steps_per_epoch": steps_per_epoch,
            "adamw": {"betas": [0.9, 0.999], "eps": 1e-6, "weight_decay": dm.ADAMW_WEIGHT_DECAY},
            "sgd": "plain SGD (no momentum)",
            "parameters": {m: int(dm.parameter_count(m)) for m in settings["models"]}},
        "environment": {"onnxruntime": onnxruntime.__version__, "onnx_lookahead": onnx_lookahead.__version__,
                        "numpy": np.__version__, "python": platform.python_version(),
                        "cpus": os.cpu_count(), "jobs": args.jobs},
        "wall_seconds": round(wall, 1), "prepare_seconds": round(prepared, 1),
        "runs": runs,
    }
    (args.out / "digits").mkdir(parents=True, exist_ok=True)
    (args.out / "digits" / "results.json").write_text(_json(results))
    tables = digits_report.tables(results)
    (args.out / "digits" / "tables.md").write_text(tables)
    print(tables)
    if not args.no_plots:
        for path in digits_report.plots(results, args.out):
            print(f"wrote {path}")
    print(f"wrote {args.out / 'digits' / 'results.json'}; {len(runs)} runs, wall time {wall:.1f} s "
          f"(artifacts {prepared:.1f} s)")
    check_results(runs, configs)     # after writing: a full run's results stay on disk to look at
    return 0


if __name__ == "__main__":
    sys.exit(main())
