"""Tables and the plot of examples/federated.py's experiment: global-model accuracy per round.

write(results, plan, out, seconds) writes <out>/federated/results.json, <out>/federated/tables.md
and <out>/federated_accuracy.png, and prints the tables; tables(results_json) is what tables.md
holds (test_federated_example.py checks that the committed files agree).
"""
from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np


def _cell(values) -> str:
    values = 100.0 * np.asarray(values, dtype=float)
    spread = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.1f} ± {spread:.1f}"


def _by_config(results: dict) -> dict:
    out: dict = {}
    for run in results["runs"]:
        out.setdefault(run["config"], []).append(run)
    for runs in out.values():
        runs.sort(key=lambda r: r["seed"])
    return out


def _plain(config: str) -> str:
    return config.split(" + ")[0]


def tables(results: dict) -> str:
    s = results["settings"]
    by = _by_config(results)
    rounds = s["num-rounds"]
    shown = [r for r in (1, 2, 3, 5, 10, 15, 20, 30, 50) if r <= rounds]
    if rounds not in shown:
        shown.append(rounds)
    lines = [
        f"Global-model accuracy (%) on the held-out split (360 images) after FedAvg round r, mean ± sample "
        f"standard deviation over {s['seeds']} seed(s); {s['num-partitions']} clients, Dirichlet({s['dirichlet-beta']}) "
        f"label skew, {s['local-epochs']} local epochs of batch {s['batch-size']} per round; AdamW lr {s['lrs']['adamw']}, "
        f"SGD lr {s['lrs']['sgd']}; Lookahead k = {s['k']}; the inner optimizer's state: {s['inner-state']} at every round.",
        "",
        "| config | " + " | ".join(f"r={r}" for r in shown) + " |",
        "| --- | " + " | ".join("---" for _ in shown) + " |",
    ]
    for config, runs in by.items():
        lines.append(f"| {config} | " + " | ".join(_cell([run["accuracy"][r] for run in runs]) for r in shown) + " |")
    lines += [
        "",
        "Per config: the final accuracy, the best round's, the mean over all rounds (area under the curve), and the "
        "paired difference to the plain inner optimizer with the same seed (same initial model, partitions and "
        "batch order) at the final round and averaged over rounds, in points.",
        "",
        "| config | final | best round | mean over rounds | Δ final vs plain | Δ mean over rounds vs plain |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for config, runs in by.items():
        final = [run["accuracy"][-1] for run in runs]
        best = [max(run["accuracy"][1:]) for run in runs]
        mean = [float(np.mean(run["accuracy"][1:])) for run in runs]
        plain = {run["seed"]: run for run in by.get(_plain(config), [])}
        if config == _plain(config) or not plain:
            delta_final = delta_mean = "—"
        else:
            delta_final = _cell([run["accuracy"][-1] - plain[run["seed"]]["accuracy"][-1] for run in runs])
            delta_mean = _cell([np.mean(run["accuracy"][1:]) - np.mean(plain[run["seed"]]["accuracy"][1:])
                                for run in runs])
        lines.append(f"| {config} | {_cell(final)} | {_cell(best)} | {_cell(mean)} | {delta_final} | {delta_mean} |")
    pairs = [(c, f"{c}, no restart") for c in by if f"{c}, no restart" in by]
    if pairs:
        lines += [
            "",
            "The restart, paired by seed: accuracy with `load_parameters(restart=True)` minus without it (the "
            "slow weights left from the client's last round), in points.",
            "",
            "| config | Δ final | Δ mean over rounds | seeds better / equal / worse (mean over rounds) |",
            "| --- | --- | --- | --- |",
        ]
        for restart, stale in pairs:
            old = {run["seed"]: run for run in by[stale]}
            runs = [run for run in by[restart] if run["seed"] in old]
            final = [run["accuracy"][-1] - old[run["seed"]]["accuracy"][-1] for run in runs]
            mean = [np.mean(run["accuracy"][1:]) - np.mean(old[run["seed"]]["accuracy"][1:]) for run in runs]
            counts = [sum(d > 0 for d in mean), sum(d == 0 for d in mean), sum(d < 0 for d in mean)]
            lines.append(f"| {restart} | {_cell(final)} | {_cell(mean)} | {' / '.join(map(str, counts))} |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = _by_config(results)
    families = [f for f in ("AdamW", "SGD") if any(_plain(c) == f for c in by)]
    fig, axes = plt.subplots(1, len(families), figsize=(6 * len(families), 4.2), squeeze=False)
    for ax, family in zip(axes[0], families):
        for config, runs in by.items():
            if _plain(config) != family:
                continue
            curves = 100.0 * np.array([run["accuracy"] for run in runs])
            mean, spread = curves.mean(axis=0), curves.std(axis=0)
            rounds = np.arange(len(mean))
            style = "--" if "no restart" in config else "-"
            ax.plot(rounds, mean, style, label=config, marker="o", markersize=3)
            ax.fill_between(rounds, mean - spread, mean + spread, alpha=0.15)
        ax.set_title(f"{family}: global model, FedAvg over {results['settings']['num-partitions']} non-IID clients")
        ax.set_xlabel("round")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("held-out accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(runs: list, plan: dict, settings: dict, out: Path, seconds: float) -> str:
    folder = out / "federated"
    folder.mkdir(parents=True, exist_ok=True)
    results = {
        "settings": {**settings, "seeds": plan["seeds"], "configs": plan["configs"],
                     "seconds": round(seconds, 1), "machine": f"{platform.machine()}, {platform.python_version()}"},
        "runs": [{key: run[key] for key in ("config", "seed", "accuracy", "train_loss")} for run in runs],
    }
    for run in results["runs"]:
        run["accuracy"] = [round(float(a), 6) for a in run["accuracy"]]
        run["train_loss"] = [round(float(v), 6) for v in run["train_loss"]]
    (folder / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    text = tables(results)
    (folder / "tables.md").write_text(text)
    plot(results, out / "federated_accuracy.png")
    print(text)
    return text
