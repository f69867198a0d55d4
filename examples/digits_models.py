"""Data, models and training artifacts of the digits example (examples/digits.py).

- Data: scikit-learn's bundled digits (1797 8x8 grey images, 10 classes, shipped inside the
  package: nothing is downloaded), pixels 0..16 scaled to [0, 1], one fixed stratified split
  (80 % train, 20 % held out, random_state 0).
- Models, built with onnx.helper; weights initialised per seed like PyTorch's default
  (U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases):
  - "mlp": x[N, 64] -> MatMul/Add 64 -> Relu -> MatMul/Add 10 (4,810 parameters);
  - "cnn": x[N, 1, 8, 8] -> Conv 3x3, 8 channels, pad 1 -> Relu -> MaxPool 2x2 -> Flatten
    -> Gemm to 10 (1,370 parameters).
  Both output "logits"; generate_artifacts adds the cross-entropy loss and, through
  additional_output_names, keeps "logits" as a second output of the training and eval graphs, so
  the eval graph (which sees the Lookahead weights, a pending sync included) gives the held-out
  accuracy directly.
- Inner optimizers: AdamW (onnxblock.optim.AdamW, betas (0.9, 0.999), eps 1e-6, weight decay
  0.01) and SGD (artifacts.OptimType.SGD: plain SGD, no momentum). The loop sets the learning rate.
- Lookahead versions: onnx_lookahead.rewrite(artifacts, out, k=5, alpha=...).

Also a NumPy forward pass of both models (`numpy_logits`), used by the quick mode to check that
the eval graph's logits are the ones of the Lookahead weights.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F32 = np.float32
MODELS = ("mlp", "cnn")
OPTIMIZERS = ("adamw", "sgd")
ADAMW_WEIGHT_DECAY = 0.01
SPLIT_SEED = 0
TEST_SIZE = 0.2


def load_data():
    """(x_train, y_train, x_test, y_test): x float32 [N, 64] in [0, 1], y int64."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(F32)
    y = y.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=y)
    return x_train, y_train, x_test, y_test


def model_input(model: str, x: np.ndarray) -> np.ndarray:
    """The model's input for flat [N, 64] pixels."""
    return x if model == "mlp" else x.reshape(-1, 1, 8, 8)


def _uniform(rng: np.random.Generator, shape, fan_in: int) -> np.ndarray:
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(F32)


def initial_weights(model: str, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, 0 if model == "mlp" else 1])
    if model == "mlp":
        return {"fc1.weight": _uniform(rng, (64, 64), 64), "fc1.bias": _uniform(rng, (64,), 64),
                "fc2.weight": _uniform(rng, (64, 10), 64), "fc2.bias": _uniform(rng, (10,), 64)}
    return {"conv.weight": _uniform(rng, (8, 1, 3, 3), 9), "conv.bias": _uniform(rng, (8,), 9),
            "fc.weight": _uniform(rng, (10, 128), 128), "fc.bias": _uniform(rng, (10,), 128)}


def onnx_model(model: str, seed: int) -> onnx.ModelProto:
    weights = initial_weights(model, seed)
    node = helper.make_node
    if model == "mlp":
        nodes = [node("MatMul", ["x", "fc1.weight"], ["a1"]), node("Add", ["a1", "fc1.bias"], ["z1"]),
                 node("Relu", ["z1"], ["h1"]), node("MatMul", ["h1", "fc2.weight"], ["a2"]),
                 node("Add", ["a2", "fc2.bias"], ["logits"])]
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])
    else:
        nodes = [node("Conv", ["x", "conv.weight", "conv.bias"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                 node("Relu", ["c"], ["r"]),
                 node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
                 node("Flatten", ["p"], ["f"], axis=1),
                 node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], transB=1)]
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])
    graph = helper.make_graph(nodes, f"digits_{model}", [x], [logits],
                              [numpy_helper.from_array(v, n) for n, v in weights.items()])
    result = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9,
                               producer_name="onnx-lookahead examples/digits.py")
    onnx.checker.check_model(result, full_check=True)
    return result


def parameter_count(model: str) -> int:
    return sum(v.size for v in initial_weights(model, 0).values())


@contextlib.contextmanager
def _quiet_fds():
    """Silence stdout/stderr at the file-descriptor level: ORT's gradient builder logs from C++."""
    saved = [os.dup(1), os.dup(2)]
    sys.stdout.flush()
    sys.stderr.flush()
    with open(os.devnull, "wb") as null:
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def generate(model: str, optimizer: str, seed: int, directory: Path) -> Path:
    """generate_artifacts for the model with the seed's initial weights and the inner optimizer."""
    from onnx_lookahead import ort

    ort.training_api()
    import onnxruntime
    from onnxruntime.training import artifacts, onnxblock

    onnxruntime.set_default_logger_severity(3)
    directory.mkdir(parents=True, exist_ok=True)
    block = (onnxblock.optim.AdamW(weight_decay=ADAMW_WEIGHT_DECAY) if optimizer == "adamw"
             else artifacts.OptimType.SGD)
    with _quiet_fds():
        artifacts.generate_artifacts(
            onnx_model(model, seed), requires_grad=list(initial_weights(model, seed)),
            loss=artifacts.LossType.CrossEntropyLoss, optimizer=block,
            artifact_directory=str(directory), additional_output_names=["logits"])
    return directory


def numpy_logits(model: str, weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The model's logits in NumPy (float64) for flat [N, 64] pixels."""
    w = {n: np.asarray(v, np.float64) for n, v in weights.items()}
    x = np.asarray(x, np.float64)
    if model == "mlp":
        h = np.maximum(x @ w["fc1.weight"] + w["fc1.bias"], 0.0)
        return h @ w["fc2.weight"] + w["fc2.bias"]
    images = np.pad(x.reshape(-1, 8, 8), ((0, 0), (1, 1), (1, 1)))
    patches = np.stack([images[:, i:i + 8, j:j + 8] for i in range(3) for j in range(3)], axis=-1)
    conv = patches @ w["conv.weight"].reshape(8, 9).T + w["conv.bias"]         # [N, 8, 8, C]
    r = np.maximum(conv, 0.0)
    pooled = r.reshape(-1, 4, 2, 4, 2, 8).max(axis=(2, 4))                     # [N, 4, 4, C]
    flat = pooled.transpose(0, 3, 1, 2).reshape(len(x), -1)                    # channel-major
    return flat @ w["fc.weight"].T + w["fc.bias"]
