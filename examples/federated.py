"""Federated learning on Flower with ONNX Runtime on-device training: FedAvg over clients that train
the stock artifacts (AdamW, SGD) or the same artifacts rewritten for Lookahead.

Every client is a Flower ``ClientApp`` that trains ORT artifacts (examples/digits_models.py: the
digits MLP 64-64-10, generate_artifacts, cross entropy) in the unchanged training loop. Per round:

1. load its checkpoint (the one it saved last round; the artifacts' own at the first round);
2. put the global weights in with ``onnx_lookahead.ort.load_parameters(state, weights,
   restart=True, inner_state=...)``: the Lookahead slow weights restart from the global model,
   so the first sync does not pull it back toward last round's slow weights;
3. train ``local-epochs`` epochs over its partition (mini-batches in a seeded order);
4. ``onnx_lookahead.ort.sync_parameters(state)`` (a sync pending after the last step is applied,
   so the weights read through the ORT API are the Lookahead weights) and send them;
5. save its checkpoint (with the optimizer state) for the next round.

The ``ServerApp`` runs FedAvg (weighted by the clients' example counts) and evaluates the global
model on the held-out split after every round (NumPy forward pass). Data: scikit-learn's bundled
digits (nothing is downloaded), the 80 % training split cut into non-IID partitions by a Dirichlet
label skew (per class, client shares ~ Dir(beta)).

    pip install ".[ort,federated]"                        # onnx-lookahead with flwr[simulation]
    python examples/federated.py --quick                  # Flower's simulation engine, < 1 min
    python examples/federated.py --out docs               # the README's experiment (all configs, seeds)

The same ``server_app`` / ``client_app`` run on Flower's deployment engine (a SuperLink and
SuperNodes, ``flwr run``): ``python examples/federated.py --write-app DIR`` writes a Flower App
folder with them (README, "Federated learning on Flower", shows the commands).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import digits_models as dm  # noqa: E402

MODEL = "mlp"
# The settings of one federated run (Flower run config keys; `flwr run --run-config` overrides).
DEFAULTS = {
    "num-rounds": 20, "num-partitions": 5, "local-epochs": 3, "batch-size": 32,
    "dirichlet-beta": 0.5, "seed": 0, "optimizer": "adamw", "lr": 0.003,
    "k": 5, "alpha": 0.0,                      # alpha 0: the plain artifacts, no Lookahead
    "restart": True, "inner-state": "reset", "out": "",
}
LRS = {"adamw": 0.003, "sgd": 0.1}
# The configurations of the experiment: name -> (optimizer, Lookahead alpha, restart).
CONFIGS = {
    "AdamW": ("adamw", 0.0, True), "AdamW + LA(5,0.5)": ("adamw", 0.5, True),
    "AdamW + LA(5,0.5), no restart": ("adamw", 0.5, False),
    "SGD": ("sgd", 0.0, True), "SGD + LA(5,0.5)": ("sgd", 0.5, True),
    "SGD + LA(5,0.5), no restart": ("sgd", 0.5, False),
}
FULL = {"seeds": 5, "num-rounds": 20, "num-partitions": 5, "local-epochs": 3, "configs": list(CONFIGS)}
QUICK = {"seeds": 1, "num-rounds": 2, "num-partitions": 2, "local-epochs": 1,
         "configs": ["AdamW", "AdamW + LA(5,0.5)", "AdamW + LA(5,0.5), no restart"]}


# ------------------------------------------------------------------------------------- data
def dirichlet_partitions(labels: np.ndarray, parts: int, beta: float, seed: int, min_size: int = 10):
    """Index arrays of a label-skewed split: for every class, its examples are shared among the
    partitions in proportions drawn from Dir(beta, ..., beta). Redrawn until every partition holds
    at least min_size examples."""
    rng = np.random.default_rng([seed, 7])
    for _ in range(1000):
        chunks = [[] for _ in range(parts)]
        for c in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(parts, beta))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
            for i, chunk in enumerate(np.split(members, cuts)):
                chunks[i].append(chunk)
        result = [np.sort(np.concatenate(c)) for c in chunks]
        if min(len(r) for r in result) >= min_size:
            return result
    raise ValueError(f"no Dirichlet({beta}) split into {parts} partitions of >= {min_size} examples")


def client_data(partition: int, parts: int, beta: float, seed: int):
    """(x, y) of one client: its partition of the training split."""
    x_train, y_train, _, _ = dm.load_data()
    index = dirichlet_partitions(y_train, parts, beta, seed)[partition]
    return x_train[index], y_train[index]


def batch_order(n: int, batch_size: int, epochs: int, seed: int, server_round: int, partition: int):
    """The client's mini-batches of one round: a fresh permutation per epoch, the last batch of
    an epoch smaller when batch_size does not divide n."""
    rng = np.random.default_rng([seed, server_round, partition])
    batches = []
    for _ in range(epochs):
        order = rng.permutation(n)
        batches += [order[i:i + batch_size] for i in range(0, n, batch_size)]
    return batches


def accuracy(weights: dict, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(dm.numpy_logits(MODEL, weights, x), axis=1) == y))


# ------------------------------------------------------------------------------------- the client
_ARTIFACTS: dict = {}


def state_root(node_config) -> Path:
    """Where a client keeps its files: node config "state-dir", else $ONNX_LOOKAHEAD_FLOWER_STATE
    (the simulation below sets it), else a folder in the temporary directory."""
    return Path(str(node_config.get("state-dir", "")) or os.environ.get("ONNX_LOOKAHEAD_FLOWER_STATE", "")
                or Path(tempfile.gettempdir()) / "onnx-lookahead-flower")


def client_artifacts(root: Path, optimizer: str, alpha: float, k: int, seed: int) -> Path:
    """The artifacts of a configuration: generate_artifacts of the seed's model (the app a device
    holds), rewritten for Lookahead(k, alpha) when alpha > 0. Made once under root (staged in a
    folder of their own and renamed into place, so clients sharing root may race) and remembered
    per process."""
    key = (optimizer, alpha, k, seed)
    if key not in _ARTIFACTS:
        final = root / "artifacts" / f"{optimizer}-k{k}-a{alpha}-s{seed}"
        if not final.exists():
            import onnx_lookahead

            final.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=final.parent))
            dm.generate(MODEL, optimizer, seed, staging / "plain")
            if alpha > 0:
                onnx_lookahead.rewrite(staging / "plain", staging / "set", k=k, alpha=alpha)
            else:
                (staging / "plain").rename(staging / "set")
            try:
                (staging / "set").rename(final)
            except OSError:
                if not final.exists():
                    raise
            shutil.rmtree(staging, ignore_errors=True)
        _ARTIFACTS[key] = final
    return _ARTIFACTS[key]


def _session_options():
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return options


def train_round(artifacts: Path, checkpoint: Path, weights: dict, config: dict, x, y, server_round: int,
                partition: int):
    """One client round in the stock ORT loop; -> (weights to send, mean training loss).
    checkpoint: the client's own, read when it exists and written at the end."""
    from onnx_lookahead import ort

    api = ort.training_api()
    lookahead = config["alpha"] > 0
    start = checkpoint if checkpoint.exists() else artifacts / "checkpoint"
    state = api.CheckpointState.load_checkpoint(str(start))
    state = ort.load_parameters(state, weights, restart=config["restart"], inner_state=config["inner-state"])
    module = api.Module(str(artifacts / "training_model.onnx"), state, str(artifacts / "eval_model.onnx"),
                        session_options=_session_options())
    optimizer = api.Optimizer(str(artifacts / "optimizer_model.onnx"), module)
    optimizer.set_learning_rate(config["lr"])
    module.train()
    losses = []
    for index in batch_order(len(x), config["batch-size"], config["local-epochs"], config["seed"],
                             server_round, partition):
        loss, _logits = module(x[index], y[index])
        optimizer.step()
        module.lazy_reset_grad()
        losses.append(float(loss))
    if lookahead:
        ort.sync_parameters(state)      # the Lookahead weights, also right after a sync step
    sent = {name: np.array(state.parameters[name].data, copy=True) for name in weights}
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    api.CheckpointState.save_checkpoint(state, str(checkpoint), include_optimizer_state=True)
    return sent, float(np.mean(losses))


def _client_train(msg, context):
    from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

    config = dict(msg.content["config"])
    config["restart"] = bool(config["restart"])
    partition, parts = int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    x, y = client_data(partition, parts, config["dirichlet-beta"], config["seed"])
    root = state_root(context.node_config)
    artifacts = client_artifacts(root, config["optimizer"], config["alpha"], config["k"], config["seed"])
    checkpoint = root / f"run{context.run_id}-node{context.node_id}" / config["tag"] / "checkpoint"
    weights = {name: array.numpy() for name, array in msg.content["arrays"].items()}
    sent, loss = train_round(artifacts, checkpoint, weights, config, x, y, int(config["server-round"]), partition)
    content = RecordDict({"arrays": ArrayRecord({n: Array(v) for n, v in sent.items()}),
                          "metrics": MetricRecord({"num-examples": len(x), "train-loss": loss})})
    return Message(content=content, reply_to=msg)


def make_client_app():
    from flwr.clientapp import ClientApp

    app = ClientApp()
    app.train()(_client_train)
    return app


# ------------------------------------------------------------------------------------- the server
def run_federated(grid, settings: dict, tag: str, quiet: bool = True) -> dict:
    """One FedAvg run over the grid; -> {"accuracy": per round (round 0: the initial model),
    "train_loss": per round, "weights": the final global weights}."""
    import logging

    from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord
    from flwr.serverapp.strategy import FedAvg

    _, _, x_test, y_test = dm.load_data()
    parts = int(settings["num-partitions"])
    initial = dm.initial_weights(MODEL, int(settings["seed"]))
    curve, rounds = [], []

    def evaluate(server_round: int, arrays) -> MetricRecord:
        weights = {name: array.numpy() for name, array in arrays.items()}
        rounds.append({name: value.copy() for name, value in weights.items()})
        curve.append(accuracy(weights, x_test, y_test))
        return MetricRecord({"accuracy": curve[-1]})

    keys = ("local-epochs", "batch-size", "dirichlet-beta", "seed", "optimizer", "lr", "k", "alpha",
            "restart", "inner-state")
    train_config = ConfigRecord({**{key: settings[key] for key in keys}, "tag": tag})
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=parts,
                      min_available_nodes=parts)
    logger = logging.getLogger("flwr")
    level = logger.level
    if quiet:
        logger.setLevel(logging.WARNING)
    try:
        result = strategy.start(grid=grid, initial_arrays=ArrayRecord({n: Array(v) for n, v in initial.items()}),
                                num_rounds=int(settings["num-rounds"]), train_config=train_config,
                                evaluate_fn=evaluate)
    finally:
        logger.setLevel(level)
    losses = [float(result.train_metrics_clientapp[r]["train-loss"])
              for r in sorted(result.train_metrics_clientapp)]
    return {"accuracy": curve, "train_loss": losses, "rounds": rounds}


def _settings(context_config) -> dict:
    settings = dict(DEFAULTS)
    settings.update({key: value for key, value in dict(context_config).items() if key in DEFAULTS})
    settings["restart"] = bool(settings["restart"])
    settings["alpha"] = float(settings["alpha"])
    return settings


def _server_main(grid, context):
    """One run as the run config says (deployment: `flwr run`); writes the accuracy per round and
    every round's global weights to run config "out" (an .npz), when given."""
    settings = _settings(context.run_config)
    run = run_federated(grid, settings, tag=f"{settings['optimizer']}-a{settings['alpha']}", quiet=False)
    print(f"global-model accuracy per round: {[round(a, 4) for a in run['accuracy']]}", flush=True)
    if settings["out"]:
        arrays = {f"round{r}/{name}": value for r, weights in enumerate(run["rounds"]) for name, value in weights.items()}
        np.savez(settings["out"], accuracy=np.array(run["accuracy"]), **arrays)


def make_server_app(experiments=None, results=None):
    """The ServerApp. Without arguments: one run from the run config. With a list of (name,
    settings) experiments (the simulation below): runs them one after the other over the same
    SuperNodes and appends each result to `results`."""
    from flwr.serverapp import ServerApp

    app = ServerApp()
    if experiments is None:
        app.main()(_server_main)
        return app

    @app.main()
    def main(grid, context):
        for name, settings in experiments:
            started = time.perf_counter()
            run = run_federated(grid, settings, tag=f"{name}-s{settings['seed']}".replace(" ", "_"))
            run.update(config=name, seed=settings["seed"], seconds=round(time.perf_counter() - started, 2))
            results.append(run)
            print(f"{name:32s} seed {settings['seed']}: accuracy per round "
                  f"{' '.join(f'{a:.3f}' for a in run['accuracy'])} ({run['seconds']} s)", flush=True)

    return app


# The apps `flwr run` loads (the written app's pyproject.toml names them).
server_app = make_server_app()
client_app = make_client_app()


# ------------------------------------------------------------------------------------- the simulation
def experiments(plan: dict) -> list:
    runs = []
    for seed in range(plan["seeds"]):
        for name in plan["configs"]:
            optimizer, alpha, restart = CONFIGS[name]
            settings = dict(DEFAULTS, seed=seed, optimizer=optimizer, lr=LRS[optimizer], alpha=alpha,
                            restart=restart)
            settings.update({key: plan[key] for key in ("num-rounds", "num-partitions", "local-epochs")})
            runs.append((name, settings))
    return runs


def simulate(plan: dict, state_dir: Path) -> list:
    """Every experiment of the plan in one session of Flower's simulation engine (Ray backend,
    one CPU per client actor)."""
    import logging

    from flwr.simulation import run_simulation

    results: list = []
    os.environ["ONNX_LOOKAHEAD_FLOWER_STATE"] = str(state_dir)     # the client actors inherit it
    logging.getLogger("flwr").setLevel(logging.WARNING)
    run_simulation(server_app=make_server_app(experiments(plan), results),
                   client_app=make_client_app(), num_supernodes=plan["num-partitions"],
                   backend_config={"client_resources": {"num_cpus": 1},
                                   "init_args": {"num_cpus": os.cpu_count() or 1,
                                                 "include_dashboard": False}})
    return results


def check_results(results: list, plan: dict) -> None:
    """Every experiment ran all its rounds, accuracies are numbers, and the Lookahead runs are not
    the plain ones."""
    assert len(results) == plan["seeds"] * len(plan["configs"]), len(results)
    by = {(r["config"], r["seed"]): r for r in results}
    for run in results:
        assert len(run["accuracy"]) == plan["num-rounds"] + 1, run["accuracy"]
        assert all(0.0 <= a <= 1.0 for a in run["accuracy"]), run["accuracy"]
    for (name, seed), run in by.items():
        optimizer, alpha, _ = CONFIGS[name]
        plain = by.get(("AdamW" if optimizer == "adamw" else "SGD", seed))
        if alpha > 0 and plain is not None:
            assert run["train_loss"] != plain["train_loss"], f"{name} trains like plain"


def write_app(directory: Path) -> Path:
    """A Flower App folder for `flwr run`: this file, digits_models.py and a pyproject.toml."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("federated.py", "digits_models.py"):
        shutil.copyfile(HERE / name, directory / name)
    config = "\n".join(f"{key} = {json.dumps(value) if not isinstance(value, bool) else str(value).lower()}"
                       for key, value in DEFAULTS.items())
    (directory / "pyproject.toml").write_text(f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "onnx-lookahead-federated"
version = "1.0.0"
description = "Lookahead clients training ONNX Runtime artifacts, FedAvg on Flower"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "onnx-lookahead"

[tool.flwr.app.components]
serverapp = "federated:server_app"
clientapp = "federated:client_app"

[tool.flwr.app.config]
{config}
""")
    return directory


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 clients, 2 rounds, 1 epoch, AdamW configs, 1 seed")
    ap.add_argument("--out", type=Path, help="write <out>/federated/results.json, tables.md and the plot")
    ap.add_argument("--seeds", type=int, help="override the number of seeds")
    ap.add_argument("--write-app", type=Path, metavar="DIR", help="write a Flower App folder for `flwr run` and exit")
    a = ap.parse_args(argv)
    if a.write_app:
        print(write_app(a.write_app))
        return
    plan = dict(QUICK if a.quick else FULL)
    if a.seeds:
        plan["seeds"] = a.seeds
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="onnx-lookahead-flower-") as work:
        results = simulate(plan, Path(work))
    check_results(results, plan)
    seconds = time.perf_counter() - started
    print(f"{len(results)} federated runs in {seconds:.0f} s")
    if a.out:
        import federated_report

        settings = {key: plan[key] for key in ("num-rounds", "num-partitions", "local-epochs")}
        settings.update({key: DEFAULTS[key] for key in ("batch-size", "dirichlet-beta", "k", "inner-state")},
                        lrs=LRS)
        federated_report.write(results, plan, settings, a.out, seconds)
        print(f"wrote {a.out / 'federated'}")


if __name__ == "__main__":
    main()
