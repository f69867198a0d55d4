"""What one ONNX Runtime training release loads, probed by loading small models in it.

Run with the python of a venv holding one onnxruntime-training release (1.16.3 to 1.19.2):

    python probe_release.py SCHEMAS.jsonl [NAMES.txt] > ort-<major.minor>.txt

SCHEMAS.jsonl is what dump_schemas.py writes (the ONNX operator schemas, newest onnx); NAMES.txt
more operator names to try in the contrib domains (make_tables.sh passes the ones any release
registers, so that a name is tried in every release). The output is
the table src/compat/data/ort-<major.minor>.txt that `inspect`'s compatibility report and
`--target-ort` read:

    release <version>
    checkpoint_format <the only checkpoint format version the release reads>
    max_ir <the highest model IR version it loads>
    opset <domain> <highest opset it loads an import of>        (domains it knows; others: any)
    contrib <domain> <op>                                        (operators it registers there)
    no_kernel <domain> <op> <since_version>                      (an ONNX schema with no CPU kernel)

Each line is a load tried in this release: a model importing the opset, a model at the IR version,
a node of the operator, a checkpoint of the format. A node the probe cannot build validly (a
subgraph, a sequence or map type, attributes whose values it cannot guess) counts as having a
kernel: no_kernel lines are only ones the runtime itself reported ("Could not find an
implementation").
"""
from __future__ import annotations

import os
import re
import sys
import tempfile

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

ort.set_default_logger_severity(4)
OPTIONS = ort.SessionOptions()
OPTIONS.log_severity_level = 4
OPTIONS.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
KNOWN_DOMAINS = ["ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training", "com.microsoft",
                 "com.microsoft.experimental", "com.microsoft.nchwc", "org.pytorch.aten",
                 "com.ms.internal.nhwc"]
CONTRIB_DOMAINS = ["com.microsoft", "com.microsoft.experimental", "org.pytorch.aten", "com.microsoft.nchwc"]
TYPES = {"tensor(float)": TensorProto.FLOAT, "tensor(int64)": TensorProto.INT64,
         "tensor(int32)": TensorProto.INT32, "tensor(bool)": TensorProto.BOOL,
         "tensor(double)": TensorProto.DOUBLE, "tensor(uint8)": TensorProto.UINT8,
         "tensor(int8)": TensorProto.INT8, "tensor(float16)": TensorProto.FLOAT16,
         "tensor(string)": TensorProto.STRING, "tensor(uint16)": TensorProto.UINT16,
         "tensor(int16)": TensorProto.INT16, "tensor(uint32)": TensorProto.UINT32,
         "tensor(uint64)": TensorProto.UINT64, "tensor(bfloat16)": TensorProto.BFLOAT16}


def loads(model) -> str:
    """'ok', or the runtime's first line of refusal."""
    try:
        ort.InferenceSession(model.SerializeToString(), OPTIONS, providers=["CPUExecutionProvider"])
        return "ok"
    except Exception as error:  # the runtime's own exception types differ between releases
        return str(error).replace("\n", " ")


def identity_model(opsets, ir=8):
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)] + opsets)
    model.ir_version = ir
    return model


def max_ir() -> int:
    return max(ir for ir in range(3, 16) if loads(identity_model([], ir)) == "ok")


def opset_ceiling(domain: str) -> int | None:
    """The highest version of an (unused) import of `domain` the release loads; None when any
    version loads (a domain it does not check)."""
    good = [v for v in range(1, 40)
            if loads(identity_model([helper.make_opsetid(domain, v)] if domain else [], 8)
                     if domain else _ai_onnx_model(v)) == "ok"]
    if len(good) == 39:
        return None
    return max(good)


def _ai_onnx_model(version):
    model = identity_model([], 8)
    model.opset_import[0].version = version
    return model


def checkpoint_format() -> int:
    """The format version of the checkpoint the release writes (it reads only that one)."""
    _training_api()
    from onnxruntime.training import artifacts

    with tempfile.TemporaryDirectory() as tmp:
        graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
                                  [helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
        model.ir_version = 8
        artifacts.generate_artifacts(model, requires_grad=["w"], loss=artifacts.LossType.L1Loss,
                                     optimizer=artifacts.OptimType.SGD, artifact_directory=tmp)
        data = open(os.path.join(tmp, "checkpoint"), "rb").read()
    # The root table's first field is the version (flatbuffers: root offset, vtable, field).
    root = int.from_bytes(data[0:4], "little")
    vtable = root - int.from_bytes(data[root:root + 4], "little", signed=True)
    field = int.from_bytes(data[vtable + 4:vtable + 6], "little")
    return int.from_bytes(data[root + field:root + field + 4], "little")


def _training_api():
    import types
    name = "onnxruntime.training"
    if name not in sys.modules:
        package = types.ModuleType(name)
        package.__path__ = [os.path.join(os.path.dirname(ort.__file__), "training")]
        sys.modules[name] = package
    from onnxruntime.training import api
    return api


def contrib_ops(domain: str, candidates) -> list[str]:
    """Operator names the release registers in `domain`: a node with no inputs is refused for
    its inputs when the schema exists, as "not a registered function/op" when it does not."""
    found = []
    for name in candidates:
        node = helper.make_node(name, [], ["y"], domain=domain)
        graph = helper.make_graph([node], "probe", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(domain, 1)])
        model.ir_version = 8
        if "is not a registered function/op" not in loads(model):
            found.append(name)
    return found


def candidate_names() -> list[str]:
    """Identifier-like strings of the release's binary and their capitalised suffixes: every
    registered name is one of them."""
    folder = os.path.join(os.path.dirname(ort.__file__), "capi")
    names = set()
    for file in os.listdir(folder):
        if ".so" not in file:
            continue
        data = open(os.path.join(folder, file), "rb").read()
        for match in re.findall(rb"(?<![A-Za-z0-9_])[A-Z][A-Za-z0-9_]{1,63}(?![A-Za-z0-9_])", data):
            word = match.decode()
            # The linker stores a string that ends another one as that one's tail ("ReluGrad" in
            # "LeakyReluGrad"), so every capitalised suffix is a candidate too.
            names.update(word[i:] for i in range(len(word)) if word[i].isupper())
    return sorted(names)


def read_schemas(path):
    """(domain, name, since, deprecated, inputs, outputs, constraints, attributes) per schema."""
    import json
    with open(path) as f:
        return [json.loads(line) for line in f if line.startswith("{")]


PREFERRED = ["tensor(float)", "tensor(int64)", "tensor(int32)", "tensor(double)", "tensor(bool)",
             "tensor(uint8)", "tensor(int8)", "tensor(float16)", "tensor(string)", "tensor(uint16)",
             "tensor(int16)", "tensor(uint32)", "tensor(uint64)", "tensor(bfloat16)"]


def kernel_verdict(schema, ceilings) -> str:
    """'kernel', 'no_kernel' or 'unknown' for this schema version: a node is built for each type
    the schema allows for its first type parameter (most common first); one that loads, or fails
    only in its kernel's constructor, shows a kernel; "Could not find an implementation" for every
    type that got that far shows none; anything else leaves it unknown."""
    domain, since = schema["domain"], schema["since"]
    constraints = {c["name"]: sorted((t for t in c["types"] if t in TYPES), key=PREFERRED.index)
                   for c in schema["constraints"]}
    first = next((i["type"] for i in schema["inputs"] if i["type"] in constraints), None)
    choices = constraints.get(first) or [None]
    missing = False
    for choice in choices:
        def typed(type_str):
            allowed = constraints.get(type_str)
            if allowed is None:
                return TYPES.get(type_str)
            if type_str == first and choice is not None:
                return TYPES[choice]
            return TYPES[allowed[0]] if allowed else None
        inputs, names = [], []
        for i, spec in enumerate(schema["inputs"]):
            if spec["option"] == "optional":
                names.append("")
                continue
            t = typed(spec["type"])
            if t is None:
                return "unknown"
            inputs.append(helper.make_tensor_value_info(f"i{i}", t, None))
            names.append(f"i{i}")
        while names and names[-1] == "":
            names.pop()
        outputs = []
        for i, spec in enumerate(schema["outputs"]):
            t = typed(spec["type"])
            if t is None:
                return "unknown"
            outputs.append(helper.make_tensor_value_info(f"o{i}", t, None))
        attributes = {}
        for attribute in schema["attributes"]:
            if attribute["required"]:
                value = {"INT": 1, "FLOAT": 1.0, "STRING": "x", "INTS": [1], "FLOATS": [1.0],
                         "STRINGS": ["x"], "TENSOR": helper.make_tensor("t", TensorProto.FLOAT, [], [1.0])}.get(attribute["type"])
                if value is None:
                    return "unknown"
                attributes[attribute["name"]] = value
        node = helper.make_node(schema["name"], names, [o.name for o in outputs], domain=domain, **attributes)
        graph = helper.make_graph([node], "probe", inputs, outputs)
        opsets = [helper.make_opsetid("", since if domain == "" else ceilings[""])]
        if domain:
            opsets.append(helper.make_opsetid(domain, since))
        model = helper.make_model(graph, opset_imports=opsets)
        model.ir_version = 8
        result = loads(model)
        if result == "ok" or "Exception during initialization" in result:
            return "kernel"
        if "Could not find an implementation" in result:
            missing = True
    return "no_kernel" if missing else "unknown"


def main() -> None:
    schemas = read_schemas(sys.argv[1])
    print(f"# {ort.__version__}: probed by docs/experiments/ort_releases/probe_release.py")
    print(f"release {ort.__version__}")
    print(f"max_ir {max_ir()}")
    ceilings = {"": opset_ceiling("")}
    print(f"opset ai.onnx {ceilings['']}")
    for domain in KNOWN_DOMAINS:
        ceiling = opset_ceiling(domain)
        if ceiling is not None:
            ceilings[domain] = ceiling
            print(f"opset {domain} {ceiling}")
    names = candidate_names()
    if len(sys.argv) > 2:
        with open(sys.argv[2]) as f:
            names = sorted(set(names) | {line.strip() for line in f if line.strip()})
    for domain in CONTRIB_DOMAINS:
        for name in contrib_ops(domain, names):
            print(f"contrib {domain} {name}")
    verdicts: dict[str, int] = {}
    for schema in schemas:
        domain = schema["domain"]
        if domain not in ("", "ai.onnx.ml") or schema["deprecated"]:
            continue
        if schema["since"] > ceilings.get(domain, 0):
            continue
        verdict = kernel_verdict(schema, ceilings)
        verdicts[verdict] = verdicts.get(verdict, 0) + 1
        if verdict == "no_kernel":
            print(f"no_kernel {domain or 'ai.onnx'} {schema['name']} {schema['since']}")
    print(f"# schema versions probed: {verdicts}")
    # Last: generate_artifacts leaves the process accepting imports of unreleased opsets.
    print(f"checkpoint_format {checkpoint_format()}")


if __name__ == "__main__":
    main()
