"""examples/federated.py in Flower's simulation engine (Ray backend): its quick mode runs FedAvg over
two non-IID clients for plain AdamW, Lookahead with load_parameters' restart, and Lookahead without
it, writing only to the folder it is given; the committed results, tables and README agree.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def _modules():
    sys.path.insert(0, str(EXAMPLES))
    try:
        import digits_models
        import federated
        import federated_report
    finally:
        sys.path.remove(str(EXAMPLES))
    return federated, federated_report, digits_models


def test_the_partitions_are_label_skewed_and_cover_the_training_split():
    federated, _, dm = _modules()

    _, y_train, _, _ = dm.load_data()
    for parts, seed in ((2, 0), (5, 0), (5, 3)):
        split = federated.dirichlet_partitions(y_train, parts, 0.5, seed)
        assert sorted(int(i) for part in split for i in part) == list(range(len(y_train)))
        assert min(len(part) for part in split) >= 10
        shares = [np.bincount(y_train[part], minlength=10) / len(part) for part in split]
        # Label skew: some class makes up far more of one client's data than of another's.
        assert max(np.max(a - b) for a in shares for b in shares) > 0.15
        assert federated.dirichlet_partitions(y_train, parts, 0.5, seed)[0].tolist() == split[0].tolist()


def test_quick_mode_runs_flower_simulation_into_the_given_folder(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(EXAMPLES / "federated.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "federated/results.json", "federated/tables.md", "federated_accuracy.png"]
    results = json.loads((out / "federated" / "results.json").read_text())
    runs = {run["config"]: run for run in results["runs"]}
    assert list(runs) == ["AdamW", "AdamW + LA(5,0.5)", "AdamW + LA(5,0.5), no restart"]
    for run in runs.values():
        assert len(run["accuracy"]) == results["settings"]["num-rounds"] + 1 == 3
        assert run["accuracy"][-1] > run["accuracy"][0] + 0.2, run   # two rounds learn something
    plain, restart, stale = runs["AdamW"], runs["AdamW + LA(5,0.5)"], runs["AdamW + LA(5,0.5), no restart"]
    assert restart["train_loss"] != plain["train_loss"]
    # Round 1 starts every client from the artifacts' checkpoint, whose slow weights are the initial
    # global model: with or without restart the same. From round 2 on the stale slow weights differ.
    assert restart["train_loss"][0] == stale["train_loss"][0] and restart["accuracy"][1] == stale["accuracy"][1]
    assert restart["train_loss"][1] != stale["train_loss"][1]
    assert (out / "federated" / "tables.md").read_text() in done.stdout
    assert (out / "federated_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_committed_tables_are_the_committed_results():
    federated, report, _ = _modules()
    results = json.loads((REPO / "docs" / "federated" / "results.json").read_text())
    settings = results["settings"]
    assert settings["seeds"] >= 3 and settings["num-rounds"] >= 10 and settings["num-partitions"] >= 5
    assert settings["configs"] == list(federated.CONFIGS)
    assert len(results["runs"]) == settings["seeds"] * len(settings["configs"])
    tables = report.tables(results)
    assert (REPO / "docs" / "federated" / "tables.md").read_text() == tables
    assert tables in (REPO / "README.md").read_text()

