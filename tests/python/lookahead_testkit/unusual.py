"""Valid but unusual inputs for test_unusual_inputs.py: generators and transforms.

training_info models: `ti_linear` builds one or more linear regression heads (pred = X @ W + B,
MSE loss against Y, explicit gradients) with knobs for what is unusual: the weights' element type
(float16 / double / bfloat16 / mixed), the optimizer (plain SGD arithmetic or a preview-training
Momentum / Adam / Adagrad node), IR version and default-domain opset, an If nested in an If or a
Loop computing an update (reading outer-scope names), an If in the MAIN graph, a weight whose
update is computed in the main graph, a model-local function, rank-0 / zero-size weights, weights
that are also graph inputs, an int64 state variable, no initialization graph. The transforms
rename every value and node name (`rename_all`), store tensors in the typed data fields
(`typed_fields`) or as external data (`save_external`, `externalize_algorithm`); a few special
inputs (reserved names, tied updates, cross-entry initialization, ...) follow.

Each builder returns a `TiInput`: the model, a feed generator (in the model's current names) and
the weights a correct rewrite wraps with Lookahead, so the test knows what to expect without
reading the graph.

ORT artifacts: small `zoo.ZooModel`s (PyTorch-style and unicode names, If / Loop in the graph,
float16 / double weights, opsets, all frozen but one), `checkpoint_data_artifacts` (a checkpoint
with its tensors in `checkpoint.data`: ORT writes a data file only past 1800 MiB, so the checkpoint
is tests/data/checkpoint_adamw_external, written by ORT for TANH_MLP, see checkpoint_fixtures.md)
and hooks that change a generated directory (no eval model, extra files, a trained checkpoint).
"""
from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import zoo

F, D, H, BF = TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16
NP = {F: np.float32, D: np.float64, H: np.float16, BF: np.float32}  # bfloat16 values as float32
TRAINING_DOMAIN = "ai.onnx.preview.training"
LOCAL_DOMAIN = "local.training"
IN, OUT = 3, 2
REPO = Path(__file__).resolve().parents[3]


def ir_for(opset: int) -> int:
    """The IR version onnx released with `opset` (at least 7, the oldest this suite uses)."""
    return max(7, helper.find_min_ir_version_for([helper.make_opsetid("", opset)]))


# ------------------------------------------------------------------------------ training_info
@dataclass
class TiInput:
    model: onnx.ModelProto
    feeds: Callable[[int], List[Dict[str, np.ndarray]]]  # steps -> one feed dict per step
    wrapped: Tuple[str, ...]  # weights a correct rewrite gives Lookahead


def _feeds(x_name: str, y_names: List[str], out: int = OUT):
    def make(steps: int, batch: int = 6, seed: int = 0):
        rs = np.random.RandomState(seed)
        proj = np.random.RandomState(77).randn(IN, out)
        result = []
        for _ in range(steps):
            x = rs.randn(batch, IN).astype(np.float32)
            y = np.tanh(x @ proj).astype(np.float32)
            result.append({x_name: x, **{n: y for n in y_names}})
        return result
    return make


class _Graph:
    """Nodes, initializers and outputs of one graph under construction."""

    def __init__(self):
        self.nodes: List[onnx.NodeProto] = []
        self.inits: List[TensorProto] = []
        self.outputs: List[onnx.ValueInfoProto] = []
        self._casts: Dict[Tuple[str, int], str] = {}

    def node(self, op, inputs, outputs, **attrs):
        self.nodes.append(helper.make_node(op, inputs, outputs, **attrs))
        return outputs[0] if outputs else None

    def const(self, name, value, dtype):
        """An initializer: `value` in element type `dtype` (a float type), or as given."""
        if dtype == BF:
            self.inits.append(helper.make_tensor(name, BF, np.shape(value), np.ravel(value).tolist()))
        else:
            self.inits.append(numpy_helper.from_array(np.asarray(value, NP.get(dtype)), name))
        return name

    def cast(self, name, to, from_type):
        if to == from_type:
            return name
        key = (name, to)
        if key not in self._casts:
            self._casts[key] = self.node("Cast", [name], [f"{name}_as{to}"], to=to)
        return self._casts[key]


def _tensor(name, array, dtype):
    if dtype == BF:
        return helper.make_tensor(name, BF, array.shape, array.astype(np.float32).ravel().tolist())
    return numpy_helper.from_array(array.astype(NP[dtype]), name)


def _vi(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


def _nested_if_update(g: _Graph, w, lr, grad, cond, out, dtype, shape):
    """out = w - lr * grad, computed inside If(cond) { If(cond) {..} else {..} } else {..}: every
    branch reads w, lr, grad (and the inner If cond) from enclosing scopes."""
    def branch(tag):
        nodes = [helper.make_node("Mul", [lr, grad], [f"{out}_{tag}_step"]),
                 helper.make_node("Sub", [w, f"{out}_{tag}_step"], [f"{out}_{tag}"])]
        return helper.make_graph(nodes, f"{out}_{tag}", [], [_vi(f"{out}_{tag}", dtype, shape)])
    inner = helper.make_node("If", [cond], [f"{out}_inner"], then_branch=branch("inner_then"),
                             else_branch=branch("inner_else"))
    then_g = helper.make_graph([inner], f"{out}_outer_then", [], [_vi(f"{out}_inner", dtype, shape)])
    g.node("If", [cond], [out], then_branch=then_g, else_branch=branch("outer_else"))


def _loop_update(g: _Graph, w, lr, grad, out, dtype, shape):
    """out = w - lr * grad in two Loop iterations of (lr / 2) * grad, read from the outer scope."""
    half = g.node("Mul", [lr, g.const(f"{out}_half", 0.5, dtype)], [f"{out}_half_lr"])
    body = helper.make_graph(
        [helper.make_node("Identity", [f"{out}_cond_in"], [f"{out}_cond_out"]),
         helper.make_node("Mul", [half, grad], [f"{out}_body_step"]),
         helper.make_node("Sub", [f"{out}_v_in", f"{out}_body_step"], [f"{out}_v_out"])],
        f"{out}_body",
        [_vi(f"{out}_iter", TensorProto.INT64, []), _vi(f"{out}_cond_in", TensorProto.BOOL, []),
         _vi(f"{out}_v_in", dtype, shape)],
        [_vi(f"{out}_cond_out", TensorProto.BOOL, []), _vi(f"{out}_v_out", dtype, shape)])
    trips = g.const(f"{out}_trips", np.array(2, np.int64), TensorProto.INT64)
    g.node("Loop", [trips, "", w], [out], body=body)


def ti_linear(dtypes=(F,), optimizer="sgd", opset=21, ir_version=None, initialization=True,
              nested_if=False, loop=False, if_main=False, update_in_main=False, int_state=False,
              decayed=(), weights_as_inputs=False, function_update=False, seed=0) -> TiInput:
    """One training_info entry training one linear head per entry of `dtypes` (the weights'
    element type; a bfloat16 head computes in float32 between Casts). Names: X, Y, and per head
    W, B, pred, loss (suffixed with the head index when there are several heads).

    decayed: shapes of extra float weights E<i> (rank 0, zero-size, ...) that the algorithm
    decays (E_new = 0.9 * E); weights_as_inputs: the weights are also main-graph inputs (an
    initializer as the default value of an input); function_update: W's SGD step is a call of a
    model-local function; the other knobs: see the module docstring."""
    rs = np.random.RandomState(seed)
    main, alg, init = _Graph(), _Graph(), _Graph()
    main_inputs = [_vi("X", F, ["N", IN])]
    wrapped, bindings, init_bindings = [], [], []
    main_weights: List[TensorProto] = []
    for h, dtype in enumerate(dtypes):
        s = "" if len(dtypes) == 1 else str(h)
        cdt = F if dtype == BF else dtype  # compute type
        W, B, pred, loss = f"W{s}", f"B{s}", f"pred{s}", f"loss{s}"
        shapes = {W: [IN, OUT], B: [OUT]}
        for name, shape in shapes.items():
            main_weights.append(_tensor(name, rs.randn(*shape) * 0.5 + 0.25, dtype))
            if initialization:
                init.nodes.append(helper.make_node("Constant", [], [f"{name}_init"], name=f"{name}_init",
                                                   value=_tensor(f"{name}_init_value", rs.randn(*shape) * 0.5, dtype)))
                init.outputs.append(_vi(f"{name}_init", dtype, shape))
                init_bindings.append((name, f"{name}_init"))
        x, w, b = main.cast("X", cdt, F), main.cast(W, cdt, dtype), main.cast(B, cdt, dtype)
        if if_main and h == 0:
            cond = main.const("use_then_branch", np.array(True), TensorProto.BOOL)

            def fwd(tag):
                nodes = [helper.make_node("MatMul", [x, w], [f"{tag}_mm"]),
                         helper.make_node("Add", [f"{tag}_mm", b], [f"{tag}_pred"])]
                return helper.make_graph(nodes, tag, [], [_vi(f"{tag}_pred", cdt, ["N", OUT])])
            main.node("If", [cond], [pred], then_branch=fwd("fwd_then"), else_branch=fwd("fwd_else"))
        else:
            main.node("Add", [main.node("MatMul", [x, w], [f"mm{s}"]), b], [pred])
        main.outputs.append(_vi(pred, cdt, ["N", OUT]))

        # algorithm: loss and gradients
        y = alg.cast("Y", cdt, F)
        diff = alg.node("Sub", [pred, y], [f"diff{s}"])
        alg.node("ReduceMean", [alg.node("Mul", [diff, diff], [f"sq{s}"])], [loss], keepdims=0)
        count = alg.node("Cast", [alg.node("Size", [diff], [f"n{s}_i64"])], [f"n{s}"], to=cdt)
        scale = alg.node("Div", [alg.const(f"two{s}", 2.0, cdt), count], [f"scale{s}"])
        g_pred = alg.node("Mul", [diff, scale], [f"g_pred{s}"])
        if opset >= 11:  # Gemm(transA), not MatMul(Transpose): ORT fuses that into FusedMatMul,
            # which has no double kernel; Gemm's C is optional from opset 11
            g_w = alg.node("Gemm", [x, g_pred], [f"g_{W}"], transA=1)
        else:
            g_w = alg.node("MatMul", [alg.node("Transpose", [x], [f"xT{s}"]), g_pred], [f"g_{W}"])
        if opset >= 13:
            g_b = alg.node("ReduceSum", [g_pred, alg.const(f"axis0{s}", np.array([0], np.int64), TensorProto.INT64)],
                           [f"g_{B}"], keepdims=0)
        else:
            g_b = alg.node("ReduceSum", [g_pred], [f"g_{B}"], axes=[0], keepdims=0)
        alg.outputs.append(_vi(loss, cdt, []))

        # algorithm: the update
        lr = alg.const(f"lr{s}", 0.1, cdt)
        news = {W: f"{W}_new", B: f"{B}_new"}
        if optimizer == "sgd":
            for name, cur, grad in ((W, w, g_w), (B, b, g_b)):
                new_c = f"{news[name]}_c" if cdt != dtype else news[name]
                if nested_if and h == 0 and name == W:
                    zero = alg.const(f"zero{s}", 0.0, cdt)
                    cond = alg.node("Greater", [loss, zero], [f"loss_positive{s}"])
                    _nested_if_update(alg, cur, lr, grad, cond, new_c, cdt, shapes[name])
                elif loop and h == 0 and name == B:
                    _loop_update(alg, cur, lr, grad, new_c, cdt, shapes[name])
                elif function_update and h == 0 and name == W:
                    alg.node("SgdStep", [cur, grad, lr], [new_c], domain=LOCAL_DOMAIN)
                else:
                    alg.node("Sub", [cur, alg.node("Mul", [lr, grad], [f"{name}_step"])], [new_c])
                if cdt != dtype:
                    alg.node("Cast", [new_c], [news[name]], to=dtype)
        else:
            assert dtype in (F, D), "the preview-training optimizers take float and double"
            op = {"momentum": "Momentum", "adam": "Adam", "adagrad": "Adagrad"}[optimizer]
            slots = {"momentum": ["V"], "adam": ["V", "H"], "adagrad": ["H"]}[optimizer]
            attrs = {"momentum": dict(alpha=0.9, beta=1.0, mode="standard", norm_coefficient=0.0),
                     "adam": dict(alpha=0.9, beta=0.999, epsilon=1e-6),
                     "adagrad": dict(decay_factor=0.0, epsilon=1e-6)}[optimizer]
            T = alg.const(f"T{s}", np.array(0, np.int64), TensorProto.INT64)
            inputs, outputs = [lr, T, W, B, g_w, g_b], [news[W], news[B]]
            for slot in slots:
                for name in (W, B):
                    state = alg.const(f"{slot}_{name}", np.zeros(shapes[name]), dtype)
                    inputs.append(state)
                    outputs.append(f"{state}_new")
                    bindings.append((state, f"{state}_new"))
                    alg.outputs.append(_vi(f"{state}_new", dtype, shapes[name]))
            alg.node(op, inputs, outputs, domain=TRAINING_DOMAIN, **attrs)
            alg.node("Add", [T, alg.const(f"one{s}", np.array(1, np.int64), TensorProto.INT64)], [f"T{s}_new"])
            bindings.append((T, f"T{s}_new"))
            alg.outputs.append(_vi(f"T{s}_new", TensorProto.INT64, []))
        for name in (W, B):
            alg.outputs.append(_vi(news[name], dtype, shapes[name]))
            bindings.append((name, news[name]))
            wrapped.append(name)

    if update_in_main:  # a weight decayed by the MAIN graph; the binding reads a main output
        main_weights.append(_tensor("Decayed", rs.randn(OUT), F))
        main.node("Mul", ["Decayed", main.const("decay", 0.9, F)], ["Decayed_next"])
        main.outputs.append(_vi("Decayed_next", F, [OUT]))
        bindings.append(("Decayed", "Decayed_next"))
        wrapped.append("Decayed")
    if int_state:  # an integer state variable of the main graph: state, never a weight
        main.const("seen_batches", np.array(0, np.int64), TensorProto.INT64)
        alg.node("Add", ["seen_batches", alg.const("one_batch", np.array(1, np.int64), TensorProto.INT64)],
                 ["seen_batches_next"])
        alg.outputs.append(_vi("seen_batches_next", TensorProto.INT64, []))
        bindings.append(("seen_batches", "seen_batches_next"))

    for i, shape in enumerate(decayed):
        name = f"E{i}"
        main_weights.append(_tensor(name, np.asarray(rs.randn(*shape)), F))
        alg.node("Mul", [name, alg.const(f"{name}_decay", 0.9, F)], [f"{name}_new"])
        alg.outputs.append(_vi(f"{name}_new", F, list(shape)))
        bindings.append((name, f"{name}_new"))
        wrapped.append(name)
    if weights_as_inputs:
        main_inputs += [_vi(t.name, t.data_type, list(t.dims)) for t in main_weights]
    graph = helper.make_graph(main.nodes, "main", main_inputs, main.outputs, main_weights + main.inits)
    algorithm = helper.make_graph(alg.nodes, "algorithm", [_vi("Y", F, ["N", OUT])], alg.outputs, alg.inits)
    initialization = helper.make_graph(init.nodes, "initialization", [], init.outputs) if initialization else None
    opsets = [helper.make_opsetid("", opset)]
    if optimizer != "sgd":
        opsets.append(helper.make_opsetid(TRAINING_DOMAIN, 1))
    if function_update:
        opsets.append(helper.make_opsetid(LOCAL_DOMAIN, 1))
    model = helper.make_model(graph, opset_imports=opsets, ir_version=ir_version or ir_for(opset),
                              producer_name="lookahead_testkit.unusual")
    if function_update:
        model.functions.append(helper.make_function(
            LOCAL_DOMAIN, "SgdStep", ["X", "G", "R"], ["Y"],
            [helper.make_node("Mul", ["R", "G"], ["step"]), helper.make_node("Sub", ["X", "step"], ["Y"])],
            [helper.make_opsetid("", opset)]))
    model.training_info.append(helper.make_training_info(algorithm, bindings, initialization,
                                                         init_bindings or None))
    return TiInput(model, _feeds("X", ["Y"]), tuple(wrapped))


def ti_from_spec(spec) -> TiInput:
    """A tinfo_models.ModelSpec (Momentum / Adam / Adagrad / two entries) as a TiInput."""
    def feeds(steps, batch=6, seed=0):
        import tinfo_models
        return tinfo_models.batches(spec, steps, batch=batch, seed=seed)
    return TiInput(spec.model, feeds, tuple(spec.weight_names))


# ------------------------------------------------------------------------------ transforms
def _graphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def all_graphs(model: onnx.ModelProto):
    yield from _graphs(model.graph)
    for info in model.training_info:
        for g in (info.algorithm, info.initialization):
            if g.ByteSize():
                yield from _graphs(g)


def rename_all(ti: TiInput, value: Callable[[str], str], node: Optional[Callable[[str, str], str]] = None) -> TiInput:
    """Renames every value name (inputs, outputs, initializers, node inputs/outputs, value_info,
    bindings) of every graph with `value`, and every node with node(old node name, first output's
    new name) (default: unchanged). Returns the renamed copy."""
    model = onnx.ModelProto()
    model.CopyFrom(ti.model)
    names = set()
    for g in all_graphs(model):
        names.update(v.name for v in list(g.input) + list(g.output) + list(g.value_info))
        names.update(t.name for t in g.initializer)
        for n in g.node:
            names.update(x for x in list(n.input) + list(n.output) if x)
    mapping = {n: value(n) for n in sorted(names)}
    assert len(set(mapping.values())) == len(mapping), "the renaming must be injective"
    for g in all_graphs(model):
        for v in list(g.input) + list(g.output) + list(g.value_info):
            v.name = mapping[v.name]
        for t in g.initializer:
            t.name = mapping[t.name]
        for n in g.node:
            n.input[:] = [mapping[x] if x else x for x in n.input]
            n.output[:] = [mapping[x] if x else x for x in n.output]
            if node is not None:
                n.name = node(n.name, n.output[0] if n.output else "")
    for info in model.training_info:
        for b in list(info.update_binding) + list(info.initialization_binding):
            b.key, b.value = mapping[b.key], mapping[b.value]
    base = ti.feeds

    def feeds(steps, **kw):
        return [{mapping.get(k, k): v for k, v in f.items()} for f in base(steps, **kw)]
    return TiInput(model, feeds, tuple(mapping[w] for w in ti.wrapped))


def typed_fields(ti: TiInput) -> TiInput:
    """Every initializer and Constant value stored in the typed fields (float_data, double_data,
    int32_data for float16 / bfloat16 / bool, int64_data) instead of raw_data."""
    model = onnx.ModelProto()
    model.CopyFrom(ti.model)

    def convert(t: TensorProto):  # to_array gives bfloat16 as float32; make_tensor packs it back
        values = numpy_helper.to_array(t).ravel().tolist()
        t.CopyFrom(helper.make_tensor(t.name, t.data_type, list(t.dims), values, raw=False))
    for g in all_graphs(model):
        for t in g.initializer:
            convert(t)
        for n in g.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    convert(a.t)
    return dataclasses.replace(ti, model=model)


def save_external(model: onnx.ModelProto, path: Path, location: str) -> None:
    """Saves `model` with every main-graph initializer in ONE external file `location` (relative
    to the model's folder; may contain a sub-folder), at increasing offsets."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    (path.parent / location).parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=0, convert_attribute=False)


def load_resolved(path: Path) -> onnx.ModelProto:
    """onnx.load with EVERY external tensor read in, also those of training_info graphs (which
    onnx.load leaves as references: its external-data walk covers ModelProto.graph only)."""
    from onnx.external_data_helper import load_external_data_for_tensor
    model = onnx.load(str(path))
    for g in all_graphs(model):
        for t in g.initializer:
            if t.data_location == TensorProto.EXTERNAL:
                load_external_data_for_tensor(t, str(Path(path).parent))
                t.data_location = TensorProto.DEFAULT
                del t.external_data[:]
    return model


def externalize_algorithm(ti: TiInput, folder: Path, location: str) -> TiInput:
    """Moves every initializer of every algorithm graph into the external file `location`
    (relative to `folder`, where the model will be saved), one after the other."""
    model = onnx.ModelProto()
    model.CopyFrom(ti.model)
    blob = bytearray()
    for info in model.training_info:
        for t in info.algorithm.initializer:
            raw = numpy_helper.to_array(t).tobytes()
            entries = {"location": location, "offset": str(len(blob)), "length": str(len(raw))}
            blob += raw
            t.ClearField("raw_data")
            t.data_location = TensorProto.EXTERNAL
            for key, value in entries.items():
                t.external_data.add(key=key, value=value)
    (folder / location).parent.mkdir(parents=True, exist_ok=True)
    (folder / location).write_bytes(bytes(blob))
    return dataclasses.replace(ti, model=model)


def external_locations(model_path: Path) -> Dict[str, List[int]]:
    """location -> offsets of the external tensors of a saved model (not loading the data)."""
    model = onnx.load(str(model_path), load_external_data=False)
    found: Dict[str, List[int]] = {}
    for g in all_graphs(model):
        for t in g.initializer:
            if t.data_location == TensorProto.EXTERNAL:
                entries = {e.key: e.value for e in t.external_data}
                found.setdefault(entries["location"], []).append(int(entries.get("offset", 0)))
    return found


# ------------------------------------------------------------------------------ special inputs
def reserved(newline=False):
    """W renamed into the tool's reserved namespace (optionally with line breaks in the name)."""
    name = "lookahead__W" + ("\nsecond line\rthird line" if newline else "")
    return lambda: rename_all(ti_linear(), lambda n: name if n == "W" else n)


def initialization_without_bindings():
    """An initialization graph that no initialization_binding reads."""
    base = ti_linear()
    del base.model.training_info[0].initialization_binding[:]
    return base


def tied_update():
    """W_twin (same shape as W) is bound to W's new value too: one value, two weights."""
    base = ti_linear()
    graph, info = base.model.graph, base.model.training_info[0]
    w = next(t for t in graph.initializer if t.name == "W")
    twin = graph.initializer.add()
    twin.CopyFrom(w)
    twin.name = "W_twin"
    info.update_binding.add(key="W_twin", value="W_new")
    return TiInput(base.model, base.feeds, base.wrapped + ("W_twin",))


def weight_as_output():
    """The weight W is also an output of the main graph (exported with the predictions)."""
    base = ti_linear()
    base.model.graph.output.append(_vi("W", F, [IN, OUT]))
    return base


def cross_entry_initialization():
    """Two entries (tinfo_models); entry 0's initialization also initialises entry 1's weights
    (allowed: they are initializers of ModelProto.graph), entry 1 keeps only its own state."""
    import tinfo_models
    base = ti_from_spec(tinfo_models.two_algorithm_model(coupled=False))
    first, second = base.model.training_info
    main = {t.name for t in base.model.graph.initializer}
    moved = [b for b in second.initialization_binding if b.key in main]
    kept = [b for b in second.initialization_binding if b.key not in main]

    def move(bindings, into: onnx.GraphProto, source: onnx.GraphProto):
        values = {b.value for b in bindings}
        into.node.extend(n for n in source.node if n.output[0] in values)
        into.output.extend(o for o in source.output if o.name in values)
    move(moved, first.initialization, second.initialization)
    first.initialization_binding.extend(moved)
    rest = onnx.GraphProto(name=second.initialization.name)
    move(kept, rest, second.initialization)
    second.initialization.CopyFrom(rest)
    del second.initialization_binding[:]
    second.initialization_binding.extend(kept)
    return base


def only_counter():
    """training_info that only counts batches: no floating-point weight to wrap."""
    base = ti_linear(int_state=True, initialization=False)
    info = base.model.training_info[0]
    keep = [b for b in info.update_binding if b.key == "seen_batches"]
    del info.update_binding[:]
    info.update_binding.extend(keep)
    return TiInput(base.model, base.feeds, ())


# ------------------------------------------------------------------------------ ORT artifacts
def linear_model(name: str, params: Tuple[str, str, str, str], opset: int = 17) -> zoo.ZooModel:
    """Two PyTorch-style Gemm layers whose parameters are named `params` (w1, b1, w2, b2)."""
    return zoo.ZooModel(name, zoo._linear_build(params, 2), params, zoo._regression_batch(5, 2, 31), opset=opset)


def cast_model(name: str, dtype: int) -> zoo.ZooModel:
    """float32 in and out, one weight of `dtype` between Casts (what generate_artifacts needs to
    build a gradient graph for a float16 / double weight)."""
    def build():
        w = (np.random.RandomState(0).randn(5, 2) * 0.5).astype(NP[dtype])
        nodes = [helper.make_node("Cast", ["x"], ["x_c"], to=dtype), helper.make_node("MatMul", ["x_c", "W"], ["m"]),
                 helper.make_node("Cast", ["m"], ["y"], to=F)]
        return nodes, [_vi("x", F, ["N", 5])], [_vi("y", F, ["N", 2])], {"W": w}
    return zoo.ZooModel(name, build, ("W",), zoo._regression_batch(5, 2, 32))


def _loop_side_build():
    """zoo.IF_SIDE with a Loop instead of the If: off the gradient path, it reads the frozen W2
    and h (computed from the trainable W1) from the outer scope, three iterations."""
    rs = np.random.RandomState(15)
    inits = {"W1": zoo._w(rs, 4, 3), "W2": zoo._w(rs, 3, 3), "trips": np.array(3, np.int64)}
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("MatMul", ["h", "W2"], ["hw"]),
         helper.make_node("Add", ["acc_in", "hw"], ["acc_out"])],
        "body", [_vi("i", TensorProto.INT64, []), _vi("cond_in", TensorProto.BOOL, []), _vi("acc_in", F, ["N", 3])],
        [_vi("cond_out", TensorProto.BOOL, []), _vi("acc_out", F, ["N", 3])])
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("Tanh", ["h"], ["y"]),
             helper.make_node("Loop", ["trips", "", "h"], ["aux"], body=body)]
    return nodes, [_vi("x", F, ["N", 4])], [_vi("y", F, ["N", 3]), _vi("aux", F, ["N", 3])], inits


LOOP_SIDE = zoo.ZooModel("loop_side_output", _loop_side_build, ("W1",), zoo._regression_batch(4, 3, 29),
                         frozen=("W2",), loss_inputs=("y",), additional_outputs=("aux",))


def all_frozen_but_one() -> zoo.ZooModel:
    return zoo._mlp3("all_frozen_but_one", ("b2",), ("W1", "b1", "W2", "W3", "b3"))


def opset_model(opset: int) -> zoo.ZooModel:
    return dataclasses.replace(zoo.OPSET11, name=f"mlp_opset{opset}", opset=opset)


def checkpoint_data_artifacts(directory: Path) -> Path:
    """TANH_MLP AdamW artifacts whose checkpoint keeps its tensors in checkpoint.data (see the
    module docstring); ORT wrote that checkpoint for these shapes and trains with it."""
    from .model import TANH_MLP
    from .ort import generate_artifacts
    from .reference import ADAMW
    generate_artifacts(TANH_MLP, ADAMW, directory)
    data = REPO / "tests" / "data"
    shutil.copyfile(data / "checkpoint_adamw_external", directory / "checkpoint")
    shutil.copyfile(data / "checkpoint_adamw_external.data", directory / "checkpoint.data")
    return directory


def without_eval(directory: Path):
    """Moves the eval model out of the artifacts (to ../eval), as a user who only trains might."""
    (directory.parent / "eval").mkdir()
    for model in directory.glob("*eval_model.onnx"):
        model.rename(directory.parent / "eval" / model.name)


def trained(model, opt):
    """Replaces the checkpoint by one saved after two stock steps, with optimizer state and
    properties (resuming a plain run with Lookahead)."""
    def post(directory: Path):
        loop = zoo.ZooLoop(directory, opt.lr)
        for batches in model.schedule(2, seed=5):
            loop.step(batches)
        for key, value in {"epoch": 3, "best loss": 0.125, "note ü": "plain run, step 2"}.items():
            loop.state.properties[key] = value
        loop.save(directory / "checkpoint")
    return post


def extra_files(directory: Path):
    """Files an artifacts folder may carry besides the artifacts: copied unchanged."""
    (directory / "notes ü.txt").write_text("trained on data set 7\n", encoding="utf-8")
    (directory / "sub" / "dir").mkdir(parents=True)
    (directory / "sub" / "dir" / "blob.bin").write_bytes(bytes(range(256)) * 3)
