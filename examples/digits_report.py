"""Tables and plots of examples/digits.py's results (the dict it writes to results.json).

- tables(results) -> markdown: what each config is; final held-out accuracy per model x optimizer x
  learning rate x config (mean and sample standard deviation over seeds); a per-config summary
  (best learning rate, accuracy there, mean and worst over the grid, the paired difference to plain
  at plain's best learning rate); the paired difference to plain at every learning rate; the runs
  that ended below 50 %.
- plots(results, out) -> [paths]: <out>/digits_curves.png (training loss and held-out accuracy
  per epoch at plain's best learning rate, mean over seeds with a min-max band; EMA and SWA train
  as plain, so only their accuracy is drawn, SWA's from its first sample on) and
  <out>/digits_lr_robustness.png (final held-out accuracy against the learning rate: mean and each
  seed, full range and zoomed to the top).

Run alone to redo them from a results file: python examples/digits_report.py docs/digits/results.json --out docs
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

COLORS = {"plain": "#222222", "LA(5,0.5)": "#1f77b4", "LA(5,0.8)": "#d62728", "EMA(0.99)": "#2ca02c",
          "SWA": "#9467bd"}
NAMES = {"mlp": "MLP 64-64-10", "cnn": "CNN (conv 3x3x8, maxpool, linear)", "adamw": "AdamW", "sgd": "SGD"}


def _group(results) -> dict:
    """{(model, optimizer, lr, config): [runs ordered by seed]}"""
    groups = defaultdict(list)
    for run in results["runs"]:
        groups[run["model"], run["optimizer"], run["lr"], run["config"]].append(run)
    for runs in groups.values():
        runs.sort(key=lambda r: r["seed"])
    return groups


def _panels(results):
    settings = results["settings"]
    return [(m, o) for m in settings["models"] for o in ("adamw", "sgd")]


def _configs(results):
    return list(results["settings"]["configs"])


def _final_acc(runs) -> np.ndarray:
    return np.array([r["test_acc"][-1] for r in runs]) * 100


def _std(values) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _fmt(values) -> str:
    return f"{np.mean(values):.1f} ± {_std(values):.1f}"


def _lr(lr) -> str:
    return f"{lr:g}"


def _scheme(results, config):
    """"plain", "lookahead", "ema" or "swa"."""
    options = results["settings"]["configs"][config]
    return "plain" if options is None else options["scheme"]


def _trains_as_plain(results, config) -> bool:
    return _scheme(results, config) in ("ema", "swa")


def _first_eval_epoch(results, config) -> int:
    """The first epoch whose evaluation reads trained weights (SWA: its first sample's epoch)."""
    options = results["settings"]["configs"][config]
    return options["first_epoch"] if _scheme(results, config) == "swa" else 1


def describe_configs(results) -> str:
    settings = results["settings"]
    steps = settings["steps_per_epoch"]
    parts = []
    for config, options in settings["configs"].items():
        scheme = _scheme(results, config)
        if scheme == "plain":
            parts.append(f"**{config}**: the stock artifacts")
        elif scheme == "lookahead":
            parts.append(f"**{config}**: rewritten with `scheme=\"lookahead\", k={options['k']}, "
                         f"alpha={options['alpha']:g}` (training changes: every {options['k']} steps the "
                         "weights are pulled back)")
        elif scheme == "ema":
            parts.append(f"**{config}**: `scheme=\"ema\", decay={options['decay']:g}` (every step; a window of "
                         f"~{1 / (1 - options['decay']):.0f} steps, {steps} steps per epoch)")
        else:
            parts.append(f"**{config}**: `scheme=\"swa\", swa_start={options['swa_start']}, "
                         f"every={options['every']}` (the mean of the weights at the end of epochs "
                         f"{options['first_epoch']}-{settings['epochs']}, {options['samples']} samples; "
                         "before the first one it is the initial weights)")
    return ("Configs, all from the same generated artifacts per seed: " + "; ".join(parts) + ". EMA and "
            "SWA train exactly as plain (their training losses are plain's, step for step); only "
            "evaluation, which reads the average, differs.")


def best_plain_lr(results, model, optimizer) -> float:
    """The learning rate with plain's highest mean final held-out accuracy (ties: the smaller lr)."""
    groups = _group(results)
    lrs = results["settings"]["lrs"][optimizer]
    return max(lrs, key=lambda lr: (np.mean(_final_acc(groups[model, optimizer, lr, "plain"])), -lr))


def tables(results) -> str:
    groups = _group(results)
    configs = _configs(results)
    settings = results["settings"]
    seeds = settings["seeds"]
    lines = [describe_configs(results), "",
             f"Final held-out accuracy (%) after {settings['epochs']} epochs, mean ± sample standard "
             f"deviation over {seeds} seed(s) ({settings['split']['test']} held-out images; one image = "
             f"{100 / settings['split']['test']:.2f} points).", "",
             "| model | optimizer | lr | " + " | ".join(configs) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in configs) + " |"]
    for model, optimizer in _panels(results):
        for lr in settings["lrs"][optimizer]:
            cells = []
            for config in configs:
                runs = groups[model, optimizer, lr, config]
                diverged = sum(r["diverged"] for r in runs)
                cells.append(_fmt(_final_acc(runs)) + (f" ({diverged} diverged)" if diverged else ""))
            lines.append(f"| {model} | {optimizer} | {_lr(lr)} | " + " | ".join(cells) + " |")

    lines += ["", "Per config: the learning rate with the highest mean final held-out accuracy and the "
              "accuracy there; the mean and the worst over the whole learning-rate grid (per seed, "
              "then mean ± std over seeds); the final training loss at plain's best learning rate; "
              "and the paired difference to plain at plain's best learning rate (same seed: same "
              "initial weights and batch order), in points, mean ± std over seeds.", "",
              "| model | optimizer | config | best lr | accuracy at best lr | mean over grid | "
              "worst over grid | train loss at plain's best lr | Δ vs plain at plain's best lr |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for model, optimizer in _panels(results):
        lrs = settings["lrs"][optimizer]
        plain_best = best_plain_lr(results, model, optimizer)
        plain_at_best = _final_acc(groups[model, optimizer, plain_best, "plain"])
        for config in configs:
            best = max(lrs, key=lambda lr: (np.mean(_final_acc(groups[model, optimizer, lr, config])), -lr))
            grid = np.array([_final_acc(groups[model, optimizer, lr, config]) for lr in lrs])  # [lr, seed]
            at_plain_best = groups[model, optimizer, plain_best, config]
            loss = [r["train_loss"][-1] for r in at_plain_best]
            loss_text = (f"{np.mean(loss):.4f} ± {_std(loss):.4f}" if None not in loss else "diverged")
            delta = _final_acc(at_plain_best) - plain_at_best
            delta_text = "—" if config == "plain" else f"{np.mean(delta):+.2f} ± {_std(delta):.2f}"
            lines.append(f"| {model} | {optimizer} | {config} | {_lr(best)} | "
                         f"{_fmt(_final_acc(groups[model, optimizer, best, config]))} | "
                         f"{_fmt(grid.mean(axis=0))} | {_fmt(grid.min(axis=0))} | {loss_text} "
                         f"(lr {_lr(plain_best)}) | {delta_text} |")
    first = max(_first_eval_epoch(results, c) for c in configs)
    window = f"epochs {first}-{settings['epochs']}" if first < settings["epochs"] else f"epoch {first}"
    lines += ["", f"At plain's best learning rate, over the last epochs ({window}: where every config's "
              "evaluation reads trained weights, SWA's included): the paired difference to plain averaged "
              "over these epochs (per seed, then mean ± std over seeds; in brackets the seeds better / "
              "worse), and how much the held-out accuracy moves from epoch to epoch (the standard "
              "deviation over these epochs per seed, mean over seeds): what a run stopped at another "
              "epoch than the last would see.", "",
              f"| model | optimizer | config | Δ vs plain, mean over {window} | "
              f"epoch-to-epoch std over {window} |", "| --- | --- | --- | --- | --- |"]
    for model, optimizer in _panels(results):
        lr = best_plain_lr(results, model, optimizer)
        plain = np.array([r["test_acc"][first - 1:] for r in groups[model, optimizer, lr, "plain"]]) * 100
        for config in configs:
            accs = np.array([r["test_acc"][first - 1:] for r in groups[model, optimizer, lr, config]]) * 100
            delta = (accs - plain).mean(axis=1)
            delta_text = ("—" if config == "plain" else f"{np.mean(delta):+.2f} ± {_std(delta):.2f} "
                          f"({int(np.sum(delta > 1e-9))}/{int(np.sum(delta < -1e-9))})")
            moves = (np.std(accs, axis=1, ddof=1).mean() if accs.shape[1] > 1 else 0.0)
            lines.append(f"| {model} | {optimizer} | {config} | {delta_text} | {moves:.2f} |")

    others = [c for c in configs if _scheme(results, c) != "plain"]
    lines += ["", "Paired difference to plain at every learning rate, in points (same seed: same initial "
              "weights and batch order; for EMA and SWA also the same training run, so the difference "
              "is the averaging alone): mean ± std over seeds, then in brackets the number of seeds "
              "where the config ended better / worse than plain.", "",
              "| model | optimizer | lr | " + " | ".join(others) + " |",
              "| --- | --- | --- | " + " | ".join("---" for _ in others) + " |"]
    for model, optimizer in _panels(results):
        for lr in settings["lrs"][optimizer]:
            plain = _final_acc(groups[model, optimizer, lr, "plain"])
            cells = []
            for config in others:
                delta = _final_acc(groups[model, optimizer, lr, config]) - plain
                cells.append(f"{np.mean(delta):+.2f} ± {_std(delta):.2f} "
                             f"({int(np.sum(delta > 1e-9))}/{int(np.sum(delta < -1e-9))})")
            lines.append(f"| {model} | {optimizer} | {_lr(lr)} | " + " | ".join(cells) + " |")
    lines += ["", f"Runs that ended below 50 % held-out accuracy (chance: 10 %), out of {seeds} seeds, at "
              "every learning rate where any config had one: at the smallest learning rates still "
              "learning, at the largest collapsed.", "",
              "| model | optimizer | lr | " + " | ".join(configs) + " |",
              "| --- | --- | --- | " + " | ".join("---" for _ in configs) + " |"]
    for model, optimizer in _panels(results):
        for lr in settings["lrs"][optimizer]:
            failed = [int(np.sum(_final_acc(groups[model, optimizer, lr, c]) < 50.0)) for c in configs]
            if any(failed):
                lines.append(f"| {model} | {optimizer} | {_lr(lr)} | "
                             + " | ".join(f"{n}/{len(groups[model, optimizer, lr, c])}"
                                          for n, c in zip(failed, configs)) + " |")
    return "\n".join(lines) + "\n"


def plots(results, out: Path) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _group(results)
    configs = _configs(results)
    panels = _panels(results)
    settings = results["settings"]
    seeds = settings["seeds"]
    band = "min-max band" if seeds > 1 else "one seed"
    written = []

    # Curves at plain's best learning rate.
    fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 7.2), squeeze=False)
    for col, (model, optimizer) in enumerate(panels):
        lr = best_plain_lr(results, model, optimizer)
        for config in configs:
            runs = groups[model, optimizer, lr, config]
            for row, key, scale in ((0, "train_loss", 1.0), (1, "test_acc", 100.0)):
                if row == 0 and _trains_as_plain(results, config):
                    continue                     # the same training losses as plain's
                data = np.array([[np.nan if v is None else v * scale for v in r[key]] for r in runs])
                epochs = np.arange(1, data.shape[1] + 1)
                first = _first_eval_epoch(results, config)
                data, epochs = data[:, first - 1:], epochs[first - 1:]
                ax = axes[row, col]
                ax.plot(epochs, np.nanmean(data, axis=0), color=COLORS.get(config), label=config, lw=1.6)
                if seeds > 1:
                    ax.fill_between(epochs, np.nanmin(data, axis=0), np.nanmax(data, axis=0),
                                    color=COLORS.get(config), alpha=0.15, lw=0)
        axes[0, col].set_title(f"{NAMES[model]}\n{NAMES[optimizer]}, lr {_lr(lr)} (plain's best)", fontsize=10)
        axes[0, col].set_yscale("log")
        axes[0, col].set_ylabel("training loss (mean over the epoch)")
        axes[1, col].set_ylabel("held-out accuracy (%)")
        axes[1, col].set_xlabel("epoch")
        accs = [v * 100 for c in configs for r in groups[model, optimizer, lr, c]
                for v in r["test_acc"][max(2, _first_eval_epoch(results, c) - 1):]]
        if accs:
            axes[1, col].set_ylim(max(0.0, min(accs) - 1.0), min(100.0, max(accs) + 0.5))
        for ax in axes[:, col]:
            ax.grid(True, which="both", alpha=0.3)
    axes[1, 0].legend(fontsize=8, loc="lower right")    # the accuracy row has every config
    fig.suptitle(f"Digits: training loss and held-out accuracy per epoch, mean over {seeds} seed(s) "
                 f"({band}); EMA and SWA train as plain (same losses), their accuracy is the average's, "
                 "SWA's from its first sample", fontsize=11)
    written.append(_save(fig, out / "digits_curves.png"))

    # Final held-out accuracy against the learning rate: the full range, then the top of it.
    fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 7.6), squeeze=False)
    for col, (model, optimizer) in enumerate(panels):
        lrs = np.array(settings["lrs"][optimizer])
        best = 0.0
        for i, config in enumerate(configs):
            finals = np.array([_final_acc(groups[model, optimizer, lr, config]) for lr in lrs])  # [lr, seed]
            mean = finals.mean(axis=1)
            best = max(best, mean.max())
            shift = lrs * 1.07 ** (i - (len(configs) - 1) / 2)   # side by side at each lr
            for ax in axes[:, col]:
                ax.plot(shift, mean, color=COLORS.get(config), label=config, marker="o", ms=4, lw=1.5)
                ax.plot(np.repeat(shift, finals.shape[1]), finals.ravel(), ls="none", marker=".", ms=3.5,
                        color=COLORS.get(config), alpha=0.35)
        axes[1, col].set_ylim(best - 6.0, min(100.0, best + 2.0))
        axes[0, col].set_ylim(0.0, 100.0)
        axes[0, col].set_title(f"{NAMES[model]}, {NAMES[optimizer]}", fontsize=10)
        axes[0, col].set_ylabel(f"held-out accuracy (%) after {settings['epochs']} epochs")
        axes[1, col].set_ylabel("the same, zoomed to the top")
        for ax in axes[:, col]:
            ax.set_xscale("log")
            ax.set_xticks(lrs)
            ax.set_xticklabels([_lr(v) for v in lrs], rotation=45, fontsize=8)
            ax.minorticks_off()
            ax.grid(True, alpha=0.3)
        axes[1, col].set_xlabel("learning rate")
    axes[0, 0].legend(fontsize=9, loc="lower center")
    fig.suptitle(f"Digits: final held-out accuracy against the learning rate; lines: mean over {seeds} "
                 f"seed(s), dots: each seed", fontsize=11)
    written.append(_save(fig, out / "digits_lr_robustness.png"))
    return written


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="tables and plots from examples/digits.py's results.json")
    parser.add_argument("results", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text())
    print(tables(results))
    for path in plots(results, args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

