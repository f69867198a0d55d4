"""examples/digits.py (Lookahead vs plain AdamW/SGD on scikit-learn's digits): its quick mode runs
the whole pipeline (artifacts, rewrites, the stock loop, tables, plots) with its correctness checks
(every Lookahead directory inspects as k=5 with its alpha; the eval graph's logits right after a
sync are those of the synced weights; Lookahead runs differ from plain ones), writing only to the
folder it is given; and the committed results and tables are each other's.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
CONFIGS = ["plain", "LA(5,0.5)", "LA(5,0.8)"]


def test_quick_mode_runs_the_pipeline_into_the_given_folder(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(EXAMPLES / "digits.py"), "--quick", "--out", str(out), "--jobs", "2"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    for model in ("mlp", "cnn"):
        assert f"check {model}/adamw: eval-graph logits = NumPy logits of the synced weights" in done.stdout
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "digits/results.json", "digits/tables.md", "digits_curves.png", "digits_lr_robustness.png"]
    results = json.loads((out / "digits" / "results.json").read_text())
    settings = results["settings"]
    assert settings["k"] == 5 and settings["configs"] == {"plain": None, "LA(5,0.5)": 0.5, "LA(5,0.8)": 0.8}
    runs = results["runs"]
    assert len(runs) == 2 * 2 * 2 * 3 * settings["seeds"]
    by_key = {}
    for run in runs:
        assert len(run["test_acc"]) == len(run["train_loss"]) == settings["epochs"]
        assert all(isinstance(a, float) and 0.0 <= a <= 1.0 for a in run["test_acc"])
        by_key[run["model"], run["optimizer"], run["lr"], run["seed"], run["config"]] = run
    for (model, optimizer, lr, seed, config), run in by_key.items():
        plain = by_key[model, optimizer, lr, seed, "plain"]
        if config != "plain":
            assert run["train_loss"] != plain["train_loss"] and run["test_acc"] != plain["test_acc"]
        # Two epochs at a sensible learning rate learn something on every config.
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
    tables = digits_report.tables(results)
    assert (REPO / "docs" / "digits" / "tables.md").read_text() == tables
    # The write-up shows these tables verbatim (docs/digits.md, or README.md once merged there).
    write_up = REPO / "docs" / "digits.md"
    assert tables in (write_up if write_up.exists() else REPO / "README.md").read_text()
