"""The installed Python package: its API gives the command line's results, its errors carry the
command line's message, the console script is the command line, and `onnx_lookahead.ort` serves
the ONNX Runtime training loop without torch (a federated round; a plain export).
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnx_lookahead
from lookahead_testkit.model import TANH_MLP
from lookahead_testkit.ort import StockLoop, run_inference
from lookahead_testkit.reference import ADAMW, SGD_CFG, reference_run

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures"
TOL = 1e-5


def test_the_package_is_the_installed_one():
    location = Path(onnx_lookahead.__file__).resolve()
    assert REPO / "python" not in location.parents, f"tests must run the installed package, not {location}"
    assert onnx_lookahead.__version__


def test_the_console_script_is_the_command_line(lookahead_cli):
    assert lookahead_cli.binary.parent == Path(sys.executable).parent
    version = subprocess.run([str(lookahead_cli.binary), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip() == f"onnx-lookahead {onnx_lookahead.__version__}"
    res = lookahead_cli.run("rewrit")
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "similar subcommand" in res.stderr


@pytest.mark.parametrize("fixture", ["ort_adamw", "ort_sgd", "training_info_sgd.onnx", "ort_adamw_frozen"])
def test_api_results_are_the_command_lines(fixture, lookahead_cli, tmp_path):
    source = FIXTURES / fixture
    suffix = ".onnx" if fixture.endswith(".onnx") else ""
    by_api, by_cli = tmp_path / f"api{suffix}", tmp_path / f"cli{suffix}"
    summary = onnx_lookahead.rewrite(pathlib.PurePath(source), by_api, k=4, alpha=0.25)
    lookahead_cli.run_ok("rewrite", source, "--output", by_cli, "-k", 4, "--alpha", 0.25)
    assert summary["k"] == 4 and summary["alpha"] == 0.25 and summary["wrapped_parameters"]
    assert summary["injected_nodes"] > 0 and summary["state_bytes"] > 0
    api_report, cli_report = onnx_lookahead.inspect(by_api), lookahead_cli.inspect(by_cli)
    for report in (api_report, cli_report):
        report.pop("input")
        if report.get("checkpoint"):
            report["checkpoint"].pop("external_data", None)
    refusals = lambda r: [x.replace(str(by_api), "<out>").replace(str(by_cli), "<out>") for x in r.pop("refusals")]
    assert refusals(api_report) == refusals(cli_report)
    assert api_report == cli_report
    plain = tmp_path / f"plain{suffix}"
    result = onnx_lookahead.finalize(str(by_api), plain, weights="slow")
    assert result["weights"] == "averaged" and Path(result["output"]) == plain
    assert onnx_lookahead.inspect(plain)["lookahead"] is None


@pytest.mark.parametrize("fixture", ["ort_adamw", "training_info_sgd.onnx"])
def test_draw_is_the_command_lines(fixture, lookahead_cli, tmp_path):
    """draw(path, format) gives exactly what inspect --format dot|mermaid prints."""
    out = tmp_path / fixture
    onnx_lookahead.rewrite(FIXTURES / fixture, out)
    for path in (FIXTURES / fixture, out):
        for fmt in ("dot", "mermaid"):
            cli = lookahead_cli.run_ok("inspect", path, "--format", fmt).stdout
            assert onnx_lookahead.draw(path, format=fmt) == cli
    assert onnx_lookahead.draw(out).startswith("digraph lookahead {")
    with pytest.raises(onnx_lookahead.Error, match="format must be"):
        onnx_lookahead.draw(out, format="svg")
    if fixture == "ort_adamw":
        with pytest.raises(onnx_lookahead.Error, match="nothing to draw"):
            onnx_lookahead.draw(out / "checkpoint")


@pytest.mark.parametrize("fixture", ["ort_adamw", "training_info_sgd.onnx"])
def test_api_selection_is_the_command_lines(fixture, lookahead_cli, tmp_path):
    """include/exclude (a glob or a list of globs) select what --include/--exclude select."""
    source = FIXTURES / fixture
    suffix = ".onnx" if fixture.endswith(".onnx") else ""
    names = [p["name"] for p in onnx_lookahead.inspect(source)["parameters"]]
    by_api, by_cli = tmp_path / f"api{suffix}", tmp_path / f"cli{suffix}"
    summary = onnx_lookahead.rewrite(source, by_api, k=4, alpha=0.5, include=["*1", "*2"], exclude="b*")
    lookahead_cli.run_ok("rewrite", source, "--output", by_cli, "-k", 4, "--alpha", 0.5,
                         "--include", "*1", "--include", "*2", "--exclude", "b*")
    expected = [n for n in names if n[-1] in "12" and not n.startswith("b")]
    assert expected and len(expected) < len(names)
    assert sorted(summary["wrapped_parameters"]) == sorted(expected)
    for out in (by_api, by_cli):
        flags = {p["name"]: p["lookahead"] for p in onnx_lookahead.inspect(out)["parameters"]}
        assert flags == {n: n in expected for n in names}
    with pytest.raises(onnx_lookahead.Error, match="matches no trainable parameter"):
        onnx_lookahead.rewrite(source, tmp_path / f"none{suffix}", include="zzz*")
    with pytest.raises(onnx_lookahead.Error, match="glob or a list of globs"):
        onnx_lookahead.rewrite(source, tmp_path / f"none{suffix}", include=3)
    assert not (tmp_path / f"none{suffix}").exists()


def test_api_target_ort_is_the_command_lines(lookahead_cli, tmp_path):
    """target_ort= writes what --target-ort writes, on rewrite and finalize; bad values are refused
    with nothing written."""
    source = FIXTURES / "ort_adamw"
    onnx_lookahead.rewrite(source, tmp_path / "api", target_ort="1.17")
    lookahead_cli.run_ok("rewrite", source, "--output", tmp_path / "cli", "--target-ort", "1.17")
    for name in ("training_model.onnx", "eval_model.onnx", "optimizer_model.onnx", "checkpoint"):
        api, cli = (tmp_path / "api" / name).read_bytes(), (tmp_path / "cli" / name).read_bytes()
        assert api == cli, name
    rows = {r["runtime"]: r for r in onnx_lookahead.inspect(tmp_path / "api")["compatibility"]}
    assert rows["onnxruntime-training 1.17"]["loads"] and not rows["onnxruntime-training 1.19"]["loads"]
    summary = onnx_lookahead.finalize(tmp_path / "api", tmp_path / "plain", target_ort="1.19.2")
    assert summary["format"] == "ort-artifacts"
    rows = {r["runtime"]: r for r in onnx_lookahead.inspect(tmp_path / "plain")["compatibility"]}
    assert rows["onnxruntime-training 1.19"]["loads"], rows["onnxruntime-training 1.19"]
    for bad in ("1.20", "", 1.19, "latest"):
        with pytest.raises(onnx_lookahead.Error, match="target_ort"):
            onnx_lookahead.rewrite(source, tmp_path / "never", target_ort=bad)
        with pytest.raises(onnx_lookahead.Error, match="target_ort"):
            onnx_lookahead.finalize(tmp_path / "api", tmp_path / "never", target_ort=bad)
    with pytest.raises(onnx_lookahead.Error, match="applies to ONNX Runtime training artifacts"):
        onnx_lookahead.rewrite(FIXTURES / "training_info_sgd.onnx", tmp_path / "never.onnx", target_ort="1.19")
    assert not (tmp_path / "never").exists() and not (tmp_path / "never.onnx").exists()


def test_errors_carry_the_command_lines_message(lookahead_cli, tmp_path):
    missing = tmp_path / "missing.onnx"
    with pytest.raises(onnx_lookahead.Error) as caught:
        onnx_lookahead.rewrite(missing, tmp_path / "out.onnx")
    res = lookahead_cli.run("rewrite", missing, "--output", tmp_path / "out.onnx")
    assert res.stderr.strip() == f"error: {caught.value}"
    for bad in [dict(k=0), dict(k=-1), dict(k=2.5), dict(k=2**70), dict(alpha=0), dict(alpha=1.5),
                dict(alpha="x"), dict(alpha=float("nan")), dict(eval_weights="fast")]:
        with pytest.raises(onnx_lookahead.Error):
            onnx_lookahead.rewrite(FIXTURES / "ort_sgd", tmp_path / "never", **bad)
        assert not (tmp_path / "never").exists()
    with pytest.raises(onnx_lookahead.Error, match="weights"):
        onnx_lookahead.finalize(FIXTURES / "ort_sgd", tmp_path / "f", weights="fast")
    # Unknown fields: the lossy refusal is its own class.
    lossy = tmp_path / "future.onnx"
    lossy.write_bytes((FIXTURES / "training_info_sgd.onnx").read_bytes() + bytes([0xB8, 0x3E, 0x01]))
    with pytest.raises(onnx_lookahead.LossyError):
        onnx_lookahead.rewrite(lossy, tmp_path / "lossy_out.onnx")
    assert issubclass(onnx_lookahead.LossyError, onnx_lookahead.Error)
    onnx_lookahead.rewrite(lossy, tmp_path / "lossy_out.onnx", allow_lossy=True)
    # Random bytes, a FIFO: errors, never a panic or a hang.
    random_file = tmp_path / "random.onnx"
    random_file.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(onnx_lookahead.Error):
        onnx_lookahead.inspect(random_file)
    fifo = tmp_path / "fifo.onnx"
    import os
    os.mkfifo(fifo)
    with pytest.raises(onnx_lookahead.Error, match="FIFO"):
        onnx_lookahead.rewrite(fifo, tmp_path / "x.onnx")


@pytest.mark.parametrize("opt", [ADAMW, SGD_CFG], ids=lambda o: o.kind)
def test_federated_round(opt, stock_artifacts, tmp_path):
    """A client trains its local steps, ending on a sync step, reads its weights through the ORT API
    and sends them; the server loads them into fresh, plain artifacts and evaluates."""
    from onnx_lookahead import ort

    spec, k, alpha = TANH_MLP, 3, 0.5
    stock = stock_artifacts(spec, opt)
    client_artifacts = tmp_path / "client"
    onnx_lookahead.rewrite(stock, client_artifacts, k=k, alpha=alpha)
    schedule, batch = spec.schedule(2 * k), spec.eval_batch()
    ref = reference_run(spec, opt, schedule, batch, k, alpha)
    client = StockLoop(client_artifacts, opt.lr)
    for t in range(2 * k):
        client.step(schedule[t])
    state = client.state
    stale = {n: np.array(state.parameters[n].data) for n in spec.trainable}
    assert ort.sync_parameters(state) is True
    assert ort.sync_parameters(state) is False  # applied: the counter says no update is pending
    sent = {n: np.array(state.parameters[n].data) for n in spec.trainable}
    gap = max(np.abs(stale[n] - ref.params[-1][n]).max() for n in spec.trainable)
    assert gap > 1e-4, "without the sync the client would send its fast weights"
    assert max(np.abs(sent[n] - ref.params[-1][n]).max() for n in spec.trainable) <= TOL
    # The client keeps training on the Lookahead trajectory after the explicit sync.
    more = spec.schedule(2 * k + 1)
    ref_more = reference_run(spec, opt, more, batch, k, alpha)
    assert np.allclose(client.step(more[-1]), ref_more.losses[-1], atol=TOL)
    # The server: plain artifacts, the sent weights, evaluation equal to the reference.
    server = StockLoop(stock, opt.lr)
    for n, value in sent.items():
        server.state.parameters[n] = value
    want = float(spec.compute_loss(spec.forward(ref.params[-1], batch[0]), batch[1]))
    assert abs(server.eval_loss(batch) - want) <= TOL
    # Mid-cycle nothing is pending: nothing changes.
    fresh = StockLoop(client_artifacts, opt.lr)
    fresh.step(schedule[0])
    before = {n: np.array(fresh.state.parameters[n].data) for n in spec.trainable}
    assert ort.sync_parameters(fresh.state) is False
    assert all(np.array_equal(before[n], fresh.state.parameters[n].data) for n in spec.trainable)


def test_export_for_inference_gives_a_plain_model(stock_artifacts, tmp_path):
    from onnx_lookahead import ort

    spec, opt, k = TANH_MLP, ADAMW, 3
    artifacts = tmp_path / "la"
    onnx_lookahead.rewrite(stock_artifacts(spec, opt), artifacts, k=k, alpha=0.5)
    schedule, batch = spec.schedule(k), spec.eval_batch()
    ref = reference_run(spec, opt, schedule, batch, k, 0.5)
    loop = StockLoop(artifacts, opt.lr)
    for step in schedule:
        loop.step(step)
    for weights, params in [("lookahead", ref.params[-1]), ("slow", {**ref.params[-1], **ref.slow[-1]})]:
        out = tmp_path / f"model_{weights}.onnx"
        summary = ort.export_for_inference(loop.module, out, [spec.output_name], weights=weights)
        assert summary["weights"] == {"lookahead": "current", "slow": "averaged"}[weights]  # named by its canonical id
        model = onnx.load(str(out))
        onnx.checker.check_model(model, full_check=True)
        assert not [t.name for t in model.graph.initializer if t.name.startswith("lookahead__")]
        got = run_inference(out, {"x": batch[0]}, [spec.output_name])[0]
        assert np.abs(got - spec.forward(params, batch[0])).max() <= TOL
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".onnx-lookahead")) == []


def test_training_info_runtime_is_in_the_package():
    from onnx_lookahead import training_info

    assert training_info.TrainingSession and training_info.check_training_model
    res = subprocess.run([sys.executable, "-m", "onnx_lookahead.training_info", "--help"],
                         capture_output=True, text=True)
    assert res.returncode == 0 and "train" in res.stdout
    json.dumps(onnx_lookahead.inspect(FIXTURES / "training_info_sgd.onnx"))
