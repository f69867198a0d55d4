"""How `inspect` and `rewrite` scale with graph size: wall time against node count, per graph shape.

Why: real training graphs have 10^4 to 10^5 nodes and thousands of parameters, so every pass over
a graph (validation, dataflow view, sort, analysis, patching, fresh names) must be near-linear. A
quadratic pass is invisible on the bundled fixtures and costs minutes at 10^5 nodes. This
generates, in a temp dir, inputs of growing size for each shape below and times the release binary
on them, each command in a fresh process:

  chain      training_info model: a chain of N Identity nodes in the main graph, plus an SGD update
             (W - lr * G) of 4 weights in the algorithm
  wide       training_info model: one tensor read by N Identity nodes, whose N outputs one Sum reads
  weights    training_info model: N/4 weights (each read by one Add of the main graph), each with its
             own SGD update (Mul, Sub) and initialization (Constant + initialization_binding)
  nested     training_info model: If nodes nested 30 deep (about what protobuf decoders accept), N nodes spread over the levels, every
             level reading names of the top-level scope
  subgraphs  training_info model: N/3 If nodes in a row, each branch reading outer-scope names
  entries    training_info model: N/3 training_info entries, each updating its own weight
  ort        ONNX Runtime training artifacts (generate_artifacts, AdamW) of a deep MLP (width 4):
             N/10 layers, 2 parameters per layer (torch is not needed: the testkit's import shim)

Reported per input: total node count (every graph of the input, subgraphs included), input bytes,
`inspect` and `rewrite` wall time (median of --repeat runs), rewrite time per node, and the growth
ratio: rewrite time at this size / rewrite time at a tenth of it (near 10 when linear, near 100
when quadratic). A run over --timeout seconds is stopped; that binary then skips the larger sizes
of the case. With --baseline BIN a second binary (e.g. a build of an older commit) is measured in
the same run, input by input, so the two columns are comparable.

Usage: benches/graph_scale.sh [--cases chain ort ...] [--baseline OLD_BIN] [--quick] [--json out.json]
       (builds the binary and the pinned venv first), or
       target/py-venv/bin/python benches/graph_scale.py --help
The binary is --bin, else ONNX_LOOKAHEAD_BIN, else target/release/onnx-lookahead. Exit status 1
when a rewrite fails or the 100k-node chain rewrite takes 2 s or more.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from lookahead_testkit import cli  # noqa: E402

OPSET = [helper.make_opsetid("", 17)]
IR_VERSION = 9
# Protobuf decoders (prost's and Python's) refuse messages nested over 100 deep; every If level
# takes 3 (NodeProto, AttributeProto, GraphProto), so files hold at most ~32 levels.
NESTING_DEPTH = 30
TARGET_NODES = 100_000
TARGET_SECONDS = 2.0
# Node counts per case (the generator's size parameter N, roughly the node count).
SIZES = {
    "chain": [1_000, 10_000, 30_000, 100_000, 300_000],
    "wide": [1_000, 10_000, 30_000, 100_000, 300_000],
    "weights": [1_000, 10_000, 30_000, 100_000],
    "nested": [1_000, 10_000, 30_000, 100_000, 300_000],
    "subgraphs": [1_000, 10_000, 30_000, 100_000, 300_000],
    "entries": [1_000, 10_000, 30_000, 100_000],
    "ort": [1_000, 10_000, 30_000, 100_000],
}
QUICK_SIZES = {case: sizes[:3] for case, sizes in SIZES.items()}
CASES = tuple(SIZES)


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def _vi(name, shape=(4,)):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _tensor(name, value=0.1, shape=(4,)):
    return numpy_helper.from_array(np.full(shape, value, np.float32), name)


def _model(nodes, inputs, outputs, inits, infos, name):
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=OPSET, ir_version=IR_VERSION,
                              producer_name="benches/graph_scale.py")
    model.training_info.extend(infos)
    return model


def _sgd_info(weights, reads, prefix="", initialization=False):
    """A training_info entry: W_new = W - lr * G for each weight, G = `reads` - target."""
    nodes = [helper.make_node("Sub", [reads, f"{prefix}target"], [f"{prefix}grad"], name=f"{prefix}grad")]
    outputs, bindings = [], []
    for w in weights:
        nodes += [helper.make_node("Mul", [f"{prefix}lr", f"{prefix}grad"], [f"{w}_step"], name=f"{w}_step"),
                  helper.make_node("Sub", [w, f"{w}_step"], [f"{w}_new"], name=f"{w}_update")]
        outputs.append(_vi(f"{w}_new"))
        bindings.append((w, f"{w}_new"))
    algorithm = helper.make_graph(nodes, f"{prefix}sgd", [_vi(f"{prefix}target")], outputs,
                                  [numpy_helper.from_array(np.array(0.01, np.float32), f"{prefix}lr")])
    init_graph, init_bindings = None, None
    if initialization:
        init_graph = helper.make_graph(
            [helper.make_node("Constant", [], [f"{w}_init"], value=_tensor(f"{w}_init_value"), name=f"{w}_init")
             for w in weights], f"{prefix}init", [], [_vi(f"{w}_init") for w in weights])
        init_bindings = [(w, f"{w}_init") for w in weights]
    return helper.make_training_info(algorithm, bindings, init_graph, init_bindings)


def chain_model(n):
    weights = [f"W{i}" for i in range(4)]
    nodes, h = [], "x"
    for w in weights:
        nodes.append(helper.make_node("Add", [h, w], [f"{w}_out"], name=f"{w}_add"))
        h = f"{w}_out"
    for j in range(n):
        nodes.append(helper.make_node("Identity", [h], [f"t{j}"], name=f"id{j}"))
        h = f"t{j}"
    return _model(nodes, [_vi("x")], [_vi(h)], [_tensor(w) for w in weights],
                  [_sgd_info(weights, h)], "chain")


def wide_model(n):
    nodes = [helper.make_node("Add", ["x", "W0"], ["h"], name="add")]
    nodes += [helper.make_node("Identity", ["h"], [f"o{j}"], name=f"id{j}") for j in range(n)]
    nodes.append(helper.make_node("Sum", [f"o{j}" for j in range(n)], ["y"], name="sum"))
    return _model(nodes, [_vi("x")], [_vi("y")], [_tensor("W0")], [_sgd_info(["W0"], "y")], "wide")


def weights_model(n):
    weights = [f"W{i}" for i in range(max(1, n // 4))]
    nodes, h = [], "x"
    for i, w in enumerate(weights):
        nodes.append(helper.make_node("Add", [h, w], [f"h{i}"], name=f"add{i}"))
        h = f"h{i}"
    return _model(nodes, [_vi("x")], [_vi(h)], [_tensor(w) for w in weights],
                  [_sgd_info(weights, h, initialization=True)], "weights")


def nested_model(n):
    """If nodes nested NESTING_DEPTH deep; every level holds a chain reading top-level names."""
    per_level = max(1, n // NESTING_DEPTH - 3)

    def level(depth):
        nodes, h = [], "x"
        for j in range(per_level):
            nodes.append(helper.make_node("Add", [h, "W0"], [f"l{depth}_{j}"], name=f"l{depth}_{j}"))
            h = f"l{depth}_{j}"
        if depth + 1 < NESTING_DEPTH:
            inner = level(depth + 1)
            other = helper.make_graph([helper.make_node("Identity", [h], [f"l{depth}_else"], name=f"l{depth}_else")],
                                      f"else{depth}", [], [_vi(f"l{depth}_else")])
            nodes.append(helper.make_node("If", ["cond"], [f"l{depth}_if"], name=f"if{depth}",
                                          then_branch=inner, else_branch=other))
            h = f"l{depth}_if"
        return helper.make_graph(nodes, f"level{depth}", [], [_vi(h)])

    top = level(0)
    cond = numpy_helper.from_array(np.array(True), "cond")
    return _model(list(top.node), [_vi("x")], list(top.output), [_tensor("W0"), cond],
                  [_sgd_info(["W0"], top.output[0].name)], "nested")


def subgraphs_model(n):
    nodes, h = [], "x"
    for i in range(max(1, n // 3)):
        then = helper.make_graph([helper.make_node("Add", [h, "W0"], [f"s{i}_then"], name=f"s{i}_then")],
                                 f"then{i}", [], [_vi(f"s{i}_then")])
        other = helper.make_graph([helper.make_node("Identity", [h], [f"s{i}_else"], name=f"s{i}_else")],
                                  f"else{i}", [], [_vi(f"s{i}_else")])
        nodes.append(helper.make_node("If", ["cond"], [f"s{i}"], name=f"if{i}", then_branch=then, else_branch=other))
        h = f"s{i}"
    cond = numpy_helper.from_array(np.array(True), "cond")
    return _model(nodes, [_vi("x")], [_vi(h)], [_tensor("W0"), cond], [_sgd_info(["W0"], h)], "subgraphs")


def entries_model(n):
    count = max(1, n // 3)
    weights = [f"W{i}" for i in range(count)]
    nodes, h = [], "x"
    for i, w in enumerate(weights):
        nodes.append(helper.make_node("Add", [h, w], [f"h{i}"], name=f"add{i}"))
        h = f"h{i}"
    infos = [_sgd_info([w], h, prefix=f"e{i}_") for i, w in enumerate(weights)]
    return _model(nodes, [_vi("x")], [_vi(h)], [_tensor(w) for w in weights], infos, "entries")


TRAINING_INFO_BUILDERS = {
    "chain": chain_model, "wide": wide_model, "weights": weights_model, "nested": nested_model,
    "subgraphs": subgraphs_model, "entries": entries_model,
}


def count_nodes(graph) -> int:
    total = 0
    for node in graph.node:
        total += 1
        for attr in node.attribute:
            if attr.HasField("g"):
                total += count_nodes(attr.g)
            for g in attr.graphs:
                total += count_nodes(g)
    return total


def model_nodes(model) -> int:
    total = count_nodes(model.graph)
    for info in model.training_info:
        total += count_nodes(info.algorithm) + count_nodes(info.initialization)
    return total


def make_input(case: str, n: int, work: Path) -> tuple[Path, int]:
    """-> (input path, node count)."""
    if case == "ort":
        from lookahead_testkit.model import MlpSpec
        from lookahead_testkit.ort import generate_artifacts
        from lookahead_testkit.reference import OptimizerConfig
        layers = max(2, n // 10)
        spec = MlpSpec(f"deep{layers}", 4, tuple([(4, "relu")] * (layers - 1) + [(2, "none")]))
        folder = generate_artifacts(spec, OptimizerConfig("adamw", 0.01), work / f"ort_{n}")
        nodes = sum(model_nodes(onnx.load(str(folder / f), load_external_data=False))
                    for f in ("training_model.onnx", "eval_model.onnx", "optimizer_model.onnx"))
        return folder, nodes
    model = TRAINING_INFO_BUILDERS[case](n)
    path = work / f"{case}_{n}.onnx"
    onnx.save(model, str(path))
    return path, model_nodes(model)


def size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def remove(path: Path):
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


class TimedOut(Exception):
    pass


def timed(cmd: list, timeout: float) -> float:
    """Wall time of cmd in a fresh process; raises TimedOut, or RuntimeError on failure."""
    start = time.perf_counter()
    try:
        res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TimedOut from None
    wall = time.perf_counter() - start
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({res.returncode}):\n{res.stderr}{res.stdout}")
    return wall


@dataclasses.dataclass
class Row:
    case: str
    size: int  # the generator's N
    nodes: int
    input_bytes: int
    binary: str  # "new" or "baseline"
    inspect_s: float | None = None  # median; None: timed out or skipped
    rewrite_s: float | None = None
    rewrite_runs: list = dataclasses.field(default_factory=list)
    note: str = ""


def measure(binary: Path, label: str, case: str, size: int, src: Path, nodes: int, args, scratch: Path,
            skip: set) -> Row:
    row = Row(case, size, nodes, size_of(src), label)
    if (label, case) in skip:
        row.note = "skipped (a smaller size timed out)"
        return row
    try:
        inspects = [timed([binary, "inspect", src], args.timeout) for _ in range(args.repeat)]
        row.inspect_s = statistics.median(inspects)
        for i in range(args.repeat):
            out = scratch / f"out_{label}_{i}{'.onnx' if src.is_file() else ''}"
            remove(out)
            row.rewrite_runs.append(timed([binary, "rewrite", src, "--output", out], args.timeout))
            remove(out)
        row.rewrite_s = statistics.median(row.rewrite_runs)
    except TimedOut:
        row.note = f"timed out (> {args.timeout:g} s)"
        skip.add((label, case))
    return row


def fmt_s(value: float | None, note: str) -> str:
    """Seconds, or "> T" for a run stopped at the timeout T, or "-" for a skipped one."""
    if value is not None:
        return f"{value:.3f}"
    return f"> {note.split('> ')[1].split(' ')[0]}" if "> " in note else "-"


def timeout_of(row: Row) -> float | None:
    return float(row.note.split("> ")[1].split(" ")[0]) if row.note.startswith("timed out") else None


def growth(rows: list[Row], row: Row) -> str:
    """Rewrite time at this size / at a tenth of this size (same case and binary); a lower bound
    when this size timed out."""
    base = next((r for r in rows if r.case == row.case and r.binary == row.binary
                 and r.size * 10 == row.size), None)
    if base is None or base.rewrite_s is None:
        return ""
    nodes = f"(nodes x{row.nodes / base.nodes:.1f})"
    if row.rewrite_s is None:
        limit = timeout_of(row)
        return f">= x{limit / base.rewrite_s:.0f} {nodes}" if limit else ""
    return f"x{row.rewrite_s / base.rewrite_s:.1f} {nodes}"


def print_table(rows: list[Row]):
    head = ("case", "nodes", "input", "binary", "inspect s", "rewrite s", "us/node", "growth at 10x nodes")
    lines = [head]
    for r in rows:
        per_node = f"{r.rewrite_s / r.nodes * 1e6:.2f}" if r.rewrite_s is not None else ""
        lines.append((r.case, f"{r.nodes:,}", f"{r.input_bytes / 1024:,.0f} KiB", r.binary,
                      fmt_s(r.inspect_s, r.note), fmt_s(r.rewrite_s, r.note), per_node, growth(rows, r)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    print()
    for k, line in enumerate(lines):
        print("  ".join(cell.rjust(w) if 0 < i < 7 else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths))))
        if k == 0:
            print("  ".join("-" * w for w in widths))


def report_target(rows: list[Row]) -> bool:
    """Prints whether the 100k-node chain rewrite took under TARGET_SECONDS; False if not."""
    ok = True
    print()
    for r in rows:
        if r.case == "chain" and r.binary == "new" and r.size == TARGET_NODES:
            under = r.rewrite_s is not None and r.rewrite_s < TARGET_SECONDS
            print(f"{r.nodes:,}-node chain rewrite: {fmt_s(r.rewrite_s, r.note)} s -> "
                  f"{'under' if under else 'NOT under'} {TARGET_SECONDS:g} s")
            ok &= under
    return ok


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", type=Path, default=None, help="binary to measure (default: ONNX_LOOKAHEAD_BIN, "
                    "else target/release/onnx-lookahead)")
    ap.add_argument("--baseline", type=Path, default=None, help="a second binary measured side by side")
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="override the sizes (N) of every case")
    ap.add_argument("--quick", action="store_true", help="the three smallest sizes of each case")
    ap.add_argument("--repeat", type=int, default=3, help="runs per command (the median is reported)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds before a run is stopped")
    ap.add_argument("--work", type=Path, default=None, help="folder for the generated inputs (default: temp)")
    ap.add_argument("--keep", action="store_true", help="keep the generated inputs")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    ap.add_argument("--render", type=Path, default=None, metavar="JSON",
                    help="print the table of an earlier run's --json file and exit")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        rows = [Row(**r) for r in json.loads(args.render.read_text())]
        print_table(rows)
        report_target(rows)
        return 0
    if args.bin is None:
        args.bin, problem = cli.find_binary()
        if problem:
            print(problem, file=sys.stderr)
            return 1
    binaries = [(args.bin, "new")] + ([(args.baseline, "baseline")] if args.baseline else [])
    work = Path(tempfile.mkdtemp(prefix="graph_scale_", dir=args.work))
    rows: list[Row] = []
    skip: set = set()
    failed = False
    print(f"binary: {args.bin}" + (f"\nbaseline: {args.baseline}" if args.baseline else ""))
    print(f"runs per command: {args.repeat} (median), timeout {args.timeout:g} s, inputs in {work}")
    try:
        for case in args.cases:
            for size in args.sizes or (QUICK_SIZES if args.quick else SIZES)[case]:
                started = time.perf_counter()
                src, nodes = make_input(case, size, work)
                print(f"{case} N={size}: {nodes:,} nodes, {size_of(src) / 1024:,.0f} KiB "
                      f"(generated in {time.perf_counter() - started:.1f} s)", flush=True)
                for binary, label in binaries:
                    try:
                        row = measure(binary, label, case, size, src, nodes, args, work, skip)
                    except RuntimeError as e:
                        print(f"  {label}: FAILED {e}", flush=True)
                        failed = True
                        continue
                    rows.append(row)
                    print(f"  {label:<8} inspect {fmt_s(row.inspect_s, row.note):>8} s  "
                          f"rewrite {fmt_s(row.rewrite_s, row.note):>8} s  {row.note}", flush=True)
                remove(src)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_table(rows)
    failed |= not report_target(rows)
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=2) + "\n")
        print(f"wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
