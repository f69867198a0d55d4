"""examples/digits.py (plain AdamW/SGD vs Lookahead around them and EMA and SWA of their weights, on
scikit-learn's digits): its quick mode runs the whole pipeline (artifacts, rewrites, the stock
loop, tables, plots) with its correctness checks (every rewritten directory inspects as its config;
the eval graph's logits right after a Lookahead sync are those of the synced weights, and after
EMA / SWA steps those of a NumPy average of the weights read after every step; Lookahead runs train
differently from plain ones, EMA and SWA runs exactly like them but evaluate differently), writing
only to the folder it is given; and the committed results and tables are each other's, shown in
README.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
CONFIGS = ["plain", "LA(5,0.5)", "LA(5,0.8)", "EMA(0.99)", "SWA"]
LOOKAHEAD = {"LA(5,0.5)": {"scheme": "lookahead", "k": 5, "alpha": 0.5},
             "LA(5,0.8)": {"scheme": "lookahead", "k": 5, "alpha": 0.8}}


def test_quick_mode_runs_the_pipeline_into_the_given_folder(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(EXAMPLES / "digits.py"), "--quick", "--out", str(out), "--jobs", "2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    for model in ("mlp", "cnn"):
        assert f"check {model}/adamw: eval-graph logits = NumPy logits of the synced weights" in done.stdout
        assert (f"check {model}/adamw EMA(0.99): eval-graph logits after 5 steps = NumPy logits of the NumPy "
                "average of the weights (every step;") in done.stdout
        assert (f"check {model}/sgd SWA: eval-graph logits after 88 steps = NumPy logits of the NumPy "
                "average of the weights (2 samples;") in done.stdout
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "digits/results.json", "digits/tables.md", "digits_curves.png", "digits_lr_robustness.png"]
    results = json.loads((out / "digits" / "results.json").read_text())
    settings = results["settings"]
    assert settings["k"] == 5 and settings["steps_per_epoch"] == 44 and settings["epochs"] == 2
    # Quick mode's SWA: the weights at the end of epochs 1 and 2 (the full run's: 23..30 of 30).
    assert settings["configs"] == {"plain": None, **LOOKAHEAD, "EMA(0.99)": {"scheme": "ema", "decay": 0.99},
                                   "SWA": {"scheme": "swa", "swa_start": 44, "every": 44, "first_epoch": 1,
                                           "samples": 2}}
    runs = results["runs"]
    assert len(runs) == 2 * 2 * 2 * len(CONFIGS) * settings["seeds"]
    by_key = {}
    for run in runs:
        assert len(run["test_acc"]) == len(run["train_loss"]) == settings["epochs"]
        assert all(isinstance(a, float) and 0.0 <= a <= 1.0 for a in run["test_acc"])
        by_key[run["model"], run["optimizer"], run["lr"], run["seed"], run["config"]] = run
    for (model, optimizer, lr, seed, config), run in by_key.items():
        plain = by_key[model, optimizer, lr, seed, "plain"]
        if config in LOOKAHEAD:
            assert run["train_loss"] != plain["train_loss"] and run["test_acc"] != plain["test_acc"]
        elif config != "plain":
            # EMA and SWA leave training alone; evaluation reads the average.
            assert run["train_loss"] == plain["train_loss"] and run["test_loss"] != plain["test_loss"]
        # Two epochs at a sensible learning rate learn something on every config; the EMA (a ~100-step
        # window that still holds 0.99^88 = 41 % of the initial weights) only at the larger one.
        if config != "EMA(0.99)" or lr == max(settings["lrs"][optimizer]):
            assert run["test_acc"][-1] > 0.2, run
    assert (out / "digits" / "tables.md").read_text() in done.stdout
    for png in ("digits_curves.png", "digits_lr_robustness.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_committed_tables_are_the_committed_results():
    sys.path.insert(0, str(EXAMPLES))
    try:
        import digits_report
    finally:
        sys.path.remove(str(EXAMPLES))
    results = json.loads((REPO / "docs" / "digits" / "results.json").read_text())
    assert len(results["settings"]["lrs"]["adamw"]) >= 4 and len(results["settings"]["lrs"]["sgd"]) >= 4
    assert results["settings"]["seeds"] >= 3 and list(results["settings"]["configs"]) == CONFIGS
    settings = results["settings"]
    # The full run's EMA and SWA: decay 0.99 every step; the weights at the end of epochs 23..30 of 30.
    assert settings["configs"]["EMA(0.99)"] == {"scheme": "ema", "decay": 0.99}
    swa = settings["configs"]["SWA"]
    assert swa["every"] == settings["steps_per_epoch"] and swa["swa_start"] == swa["first_epoch"] * swa["every"]
    assert swa["samples"] == settings["epochs"] - swa["first_epoch"] + 1 >= 2
    assert 0.7 <= (swa["first_epoch"] - 1) / settings["epochs"] <= 0.8
    # Every run is there, and the EMA / SWA runs are plain's training runs (paired to the step).
    runs = {(r["model"], r["optimizer"], r["lr"], r["seed"], r["config"]): r for r in results["runs"]}
    assert len(runs) == len(results["runs"]) == len(settings["models"]) * settings["seeds"] * len(CONFIGS) * sum(
        len(lrs) for lrs in settings["lrs"].values())
    for (model, optimizer, lr, seed, config), run in runs.items():
        plain = runs[model, optimizer, lr, seed, "plain"]
        if config in ("EMA(0.99)", "SWA") and not plain["diverged"]:
            assert run["train_loss"] == plain["train_loss"], (config, model, optimizer, lr, seed)
    tables = digits_report.tables(results)
    assert (REPO / "docs" / "digits" / "tables.md").read_text() == tables
    # The write-up shows these tables verbatim (docs/digits.md, or README.md once merged there).
    write_up = REPO / "docs" / "digits.md"
    assert tables in (write_up if write_up.exists() else REPO / "README.md").read_text()
