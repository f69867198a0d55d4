"""examples/federated.py on Flower's deployment engine: a real SuperLink and two SuperNodes (separate
processes talking over 127.0.0.1 only, insecure mode), `flwr run` of the written Flower App for
two rounds of Lookahead(5, 0.5) clients around AdamW, and the global model of every round checked
against a host-side computation of the same rounds: the NumPy Lookahead reference (AdamW as ONNX
Runtime computes it, lookahead_testkit) started from the global weights on each client's partition
and batches, then FedAvg weighted by the example counts.

Every process the test starts gets a session of its own and is killed with its group in `finally`
(the SuperLink and SuperNodes start helper processes); every wait is bounded.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lookahead_testkit.model import MlpSpec
from lookahead_testkit.reference import AdamW, F32

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
BIN = Path(sys.executable).parent
# The digits MLP of examples/digits_models.py as a testkit model (its NumPy backward pass).
SPEC = MlpSpec("digits_mlp", 64, ((64, "relu"), (10, "none")), loss="ce", output_name="logits")
NAMES = {"fc1.weight": "W1", "fc1.bias": "b1", "fc2.weight": "W2", "fc2.bias": "b2"}
ROUNDS, EPOCHS, K, ALPHA, LR = 2, 1, 5, 0.5, 0.003


def _federated():
    sys.path.insert(0, str(EXAMPLES))
    try:
        import digits_models
        import federated
    finally:
        sys.path.remove(str(EXAMPLES))
    return federated, digits_models


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, log: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited with {process.returncode}:\n{log.read_text()}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {seconds} s:\n{log.read_text()}")


def _descendants(pid: int) -> set:
    """The processes below pid (Flower's helpers: SuperExec, the app processes; some start sessions
    of their own, out of reach of a group signal)."""
    children: dict = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _stop(processes: list) -> None:
    """SIGTERM to every started process's group, then to the helpers that left it; SIGKILL to
    whatever is still running after 20 s; then reap."""
    helpers = set().union(*(_descendants(p.pid) for p in processes)) if processes else set()
    for process in processes:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for pid in helpers:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (any(p.poll() is None for p in processes) or any(map(_alive, helpers))):
        time.sleep(0.2)
    for pid in [p.pid for p in processes if p.poll() is None] + [h for h in helpers if _alive(h)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for process in processes:
        process.wait(timeout=10)


def host_rounds(federated, dm, seed: int = 0) -> list:
    """The global weights after every round (round 0: the initial model), computed in NumPy."""
    settings = federated.DEFAULTS
    weights = dm.initial_weights("mlp", seed)
    history = [weights]
    for server_round in range(1, ROUNDS + 1):
        sent, counts = [], []
        for partition in range(2):
            x, y = federated.client_data(partition, 2, settings["dirichlet-beta"], seed)
            p = {NAMES[n]: v.copy() for n, v in weights.items()}
            slow = {n: v.copy() for n, v in p.items()}
            inner = AdamW(LR, dm.ADAMW_WEIGHT_DECAY)      # inner_state="reset": fresh every round
            batches = federated.batch_order(len(x), settings["batch-size"], EPOCHS, seed, server_round, partition)
            for t, index in enumerate(batches, 1):
                _, grads = SPEC.loss_and_grads(p, x[index], y[index])
                inner.step(p, grads, t)
                if t % K == 0:
                    for n in slow:
                        slow[n] = slow[n] + F32(ALPHA) * (p[n] - slow[n])
                        p[n] = slow[n].copy()
            sent.append({name: p[NAMES[name]] for name in weights})
            counts.append(len(x))
        total = sum(counts)
        weights = {}
        for client, count in zip(sent, counts):   # Flower's FedAvg: sum of value * (count / total)
            for name, value in client.items():
                part = value * (count / total)
                weights[name] = part if name not in weights else weights[name] + part
        history.append(weights)
    return history


def test_two_rounds_on_a_superlink_and_two_supernodes(tmp_path):
    federated, dm = _federated()
    app = federated.write_app(tmp_path / "app")
    link_port = _free_port()
    home = tmp_path / "flwr-home"
    home.mkdir()
    # The only SuperLink connection `flwr run` knows: this test's, on loopback.
    (home / "config.toml").write_text(f'[superlink]\ndefault = "test"\n\n[superlink.test]\n'
                                      f'address = "127.0.0.1:{link_port}"\ninsecure = true\n')
    env = dict(os.environ, FLWR_HOME=str(home), PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    processes = []

    def start(name: str, *args) -> tuple:
        log = tmp_path / f"{name}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen([str(BIN / args[0]), *args[1:]], stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=env, cwd=tmp_path, start_new_session=True)
        processes.append(process)
        return process, log

    out = tmp_path / "global.npz"
    try:
        link, link_log = start("superlink", "flower-superlink", "--insecure", "--disable-runtime-dependency-installation",
                               "--host", "127.0.0.1", "--port", str(link_port))
        _wait_for_port(link_port, link, link_log)
        nodes = []
        for partition in range(2):
            port = _free_port()
            nodes.append((port, *start(
                f"supernode{partition}", "flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{link_port}",
                "--host", "127.0.0.1", "--port", str(port), "--max-wait-time", "120",
                "--node-config", f'partition-id={partition} num-partitions=2 state-dir="{tmp_path / f"node{partition}"}"')))
        for port, node, node_log in nodes:
            _wait_for_port(port, node, node_log)
        config = (f'num-rounds={ROUNDS} num-partitions=2 local-epochs={EPOCHS} optimizer="adamw" lr={LR} '
                  f'k={K} alpha={ALPHA} out="{out}"')
        run = subprocess.run([str(BIN / "flwr"), "run", str(app), "test", "--run-config", config, "--stream"],
                             capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240)
        logs = "".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(tmp_path.glob("*.log")))
        assert run.returncode == 0 and out.exists(), run.stdout + run.stderr + logs
        assert "global-model accuracy per round" in run.stdout, run.stdout
    finally:
        _stop(processes)
    got = np.load(out)
    want = host_rounds(federated, dm)
    accuracy = got["accuracy"]
    _, _, x_test, y_test = dm.load_data()
    for server_round, weights in enumerate(want):
        for name, value in weights.items():
            deployed = got[f"round{server_round}/{name}"]
            assert deployed.dtype == np.float32 and deployed.shape == value.shape, name
            gap = float(np.abs(deployed - value).max())
            assert gap <= 2e-5, f"round {server_round}, {name}: the deployed global model is {gap:.2g} away"
        assert abs(accuracy[server_round] - federated.accuracy(weights, x_test, y_test)) <= 1 / len(y_test) + 1e-9
    # Two rounds of training moved the model: the check above is not of the initial weights.
    assert np.abs(got["round2/fc1.weight"] - want[0]["fc1.weight"]).max() > 1e-2
    assert accuracy[2] > accuracy[0] + 0.2, accuracy
