"""Wall time, peak RSS and bytes written by onnx-lookahead on multi-GiB models, next to baselines.

Why: the tool promises that big models cost a memory mapping, not a copy. Models are memory-mapped
and decoded zero-copy, a slow-weight copy shares the bytes of its weight (a `Bytes` clone inline,
the same region of the data file for external data), outputs go to a temporary file that is
renamed, and protobuf's 2 GiB limit is refused with an `error:` line before anything big is
written. Small fixtures cannot show any of that, so this generates large inputs and measures, in one
run and on the same disk, the tool next to what the same bytes cost anyway:

  ti-inline    training_info model, ~0.9 GiB of float32 weights inline (raw_data) in a few big
               initializers: `inspect`, `rewrite` (output ~1.8 GiB: the slow copies are inline too)
               vs `cp` of the input, `cp` of the output (the write floor) and Python `onnx.load`.
  ti-limit     the same with ~1.2 GiB: the output would be ~2.4 GiB, over protobuf's limit; the
               rewrite must fail with an `error:` line, fast, and leave nothing behind.
  ti-external  ~4 GiB of weights as ONNX external data (one weights.bin; data_location=EXTERNAL
               with location/offset/length): `rewrite` into another folder (the tool copies
               weights.bin there) and into the same folder (nothing to copy), vs `cp` of weights.bin.
  ti-mixed-limit  W1 external (~0.4 GiB weights.bin), the other weights inline (~1.2 GiB), output
               to another folder would be over the limit: the refusal must come before weights.bin
               is copied there, and leave the output folder empty.
  ort          ONNX Runtime training artifacts (generate_artifacts, AdamW) of a big MLP, ~0.9 GiB
               of parameters in an inline checkpoint. With the slow weights it reaches ORT's own
               1800 MiB threshold, so the rewrite moves the parameters to checkpoint.data as ORT
               would, and the slow weights share their regions.
  ort-limit    the same with ~1.2 GiB: ORT keeps this checkpoint inline (it switches to a data file
               at 1800 MiB of initializers); inline, the rewritten one (~2.4 GiB) would break the
               FlatBuffers limit, so it must come out with checkpoint.data and load in ORT.
  ort-external ~1.85 GiB of parameters: ORT writes checkpoint + checkpoint.data; slow weights share
               the data file's regions, so the output stays ~1.85 GiB.

Every measurement runs the command in a fresh process under GNU time (/usr/bin/time), which
forks it and reads its rusage with wait4: a child forked from this big Python process would
inherit this process's resident pages in ru_maxrss. Without GNU time, VmHWM is sampled instead.
  wall      median over --repeat runs (each preceded by an untimed `sync`, inputs warm in the page
            cache; a fresh output path each run)
  maxRSS    peak resident set (ru_maxrss). It counts file pages the process has mapped and touched,
            so a zero-copy reader that maps a 1 GiB file and reads it all shows ~1 GiB here too.
  anon      peak anonymous memory (heap), sampled from /proc/<pid>/status RssAnon every 2 ms: the
            number that shows whether tensor bytes were copied into the heap
  written   bytes the process dirtied in files (ru_oublock * 512)
The tool fsyncs what it writes, plain `cp` does not, so `cp+sync` (cp, then `sync FILE...`) is
measured as well; ratios are given against both. Outputs and inputs are checked after the timed
runs: the rewritten models are read back (onnx, onnxruntime.training) and slow weights compared
with their weights.

Usage: benches/large_models.sh [--work DIR] [--json out.json] [--cases ti-inline ort ...]
       (builds the binary and the pinned venv first), or
       target/py-venv/bin/python benches/large_models.py --help
The binary is --bin, else ONNX_LOOKAHEAD_BIN, else target/release/onnx-lookahead. Big files go to
a fresh folder under --work (default: the system temp dir) and are deleted at the end (--keep keeps
them). Needs ~10 GiB of free disk and, for ort-external, ~15 GiB of free memory (generate_artifacts
holds the model several times; the case is skipped when the memory is not there).
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
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

# The training_info builders of the test suite (explicit backward, SGD as W - lr * G).
import tinfo_models as tm  # noqa: E402
from lookahead_testkit import cli  # noqa: E402

GiB = 1 << 30
MiB = 1 << 20
CASES = ("ti-inline", "ti-limit", "ti-external", "ti-mixed-limit", "ort", "ort-limit", "ort-external")
PROTOBUF_LIMIT = (1 << 31) - 1
CHUNK_FLOATS = 16 * MiB  # 64 MiB of float32 per generated chunk


# ---------------------------------------------------------------------------------------------
# Measuring one child process
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    wall: float
    maxrss: int  # bytes, peak resident set of the command
    anon: int  # bytes, sampled peak
    written: int  # bytes
    returncode: int
    stdout: str
    stderr: str


# A child forked from this (large) Python process starts with this process's resident pages
# counted, and Linux carries that high-water mark over exec into ru_maxrss. So the command runs
# under GNU time, a small process that forks and waits for it and reports its rusage. Without
# GNU time, the peak comes from sampling the child's VmHWM (the peak of its own address space).
def _gnu_time() -> str | None:
    try:
        res = subprocess.run(["/usr/bin/time", "--version"], capture_output=True, text=True)
    except OSError:
        return None
    return "/usr/bin/time" if "GNU" in res.stdout + res.stderr else None


GNU_TIME = _gnu_time()


class _Sampler(threading.Thread):
    """Polls /proc/<pid>/status of the measured process every `interval` seconds; keeps the
    maximum RssAnon and the last VmHWM (bytes). With `via_parent`, the measured process is the
    first child of `pid` (GNU time's child)."""

    def __init__(self, pid: int, via_parent: bool, interval: float = 0.002):
        super().__init__(daemon=True)
        self.pid, self.via_parent, self.interval = pid, via_parent, interval
        self.anon = self.hwm = 0
        self.stop = threading.Event()

    def _measured_pid(self) -> int | None:
        if not self.via_parent:
            return self.pid
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                children = f.read().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def run(self):
        target = None
        while not self.stop.is_set():
            target = target or self._measured_pid()
            if target:
                try:
                    with open(f"/proc/{target}/status", "rb") as f:
                        for line in f:
                            if line.startswith(b"RssAnon:"):
                                self.anon = max(self.anon, int(line.split()[1]) * 1024)
                            elif line.startswith(b"VmHWM:"):
                                self.hwm = max(self.hwm, int(line.split()[1]) * 1024)
                except (OSError, ValueError):
                    pass
            self.stop.wait(self.interval)


def run_once(cmd: list, cwd=None) -> Run:
    """Runs cmd in a fresh process after an untimed sync: wall time, peak RSS, peak anonymous
    memory and bytes written of that process alone."""
    os.sync()  # earlier writes are not flushed on this run's clock
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", suffix=".time") as timing:
        cmd = [str(c) for c in cmd]
        full = [GNU_TIME, "-f", "%M %O %x", "-o", timing.name, "--", *cmd] if GNU_TIME else cmd
        start = time.perf_counter()
        proc = subprocess.Popen(full, stdout=out, stderr=err, cwd=cwd)
        sampler = _Sampler(proc.pid, via_parent=bool(GNU_TIME))
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        sampler.stop.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if GNU_TIME:
            # GNU time prefixes "Command exited with non-zero status N" etc.; the format is last.
            maxrss_kib, oublock, code = timing.read().split("\n")[-2].split()
            maxrss, written, code = int(maxrss_kib) * 1024, int(oublock) * 512, int(code)
        else:
            maxrss, written, code = sampler.hwm, usage.ru_oublock * 512, proc.returncode
        out.seek(0)
        err.seek(0)
        return Run(wall, maxrss, sampler.anon, written, code,
                   out.read().decode(errors="replace"), err.read().decode(errors="replace"))


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    case: str
    operation: str
    input_bytes: int
    output_bytes: int | None
    wall_s: float  # median
    min_s: float
    walls_s: list
    maxrss_bytes: int  # max over runs
    anon_bytes: int  # max over runs
    written_bytes: int  # max over runs
    returncode: int
    x_cp: float | None = None
    x_cp_sync: float | None = None
    note: str = ""
    stderr: str = dataclasses.field(default="", repr=False)  # of the last run; not in the JSON


class Bench:
    def __init__(self, args):
        self.args = args
        self.rows: list[Row] = []
        self.info: dict = {"cases": {}, "problems": [], "observations": []}

    def measure(self, case: str, operation: str, cmd: list, input_bytes: int, *, before=None,
                output=None, expect_ok=True, note="") -> Row:
        """--repeat runs of cmd; `before()` runs untimed ahead of each (e.g. removes the output)."""
        for _ in range(self.args.warmup):
            if before:
                before()
            run_once(cmd)
        runs = []
        for _ in range(self.args.repeat):
            if before:
                before()
            runs.append(run_once(cmd))
        last = runs[-1]
        codes = {r.returncode for r in runs}
        if expect_ok and codes != {0}:
            raise RuntimeError(f"{operation} failed ({codes}):\n{last.stderr}{last.stdout}")
        row = Row(case, operation, input_bytes, size_of(output) if output else None,
                  statistics.median(r.wall for r in runs), min(r.wall for r in runs),
                  [round(r.wall, 4) for r in runs],
                  max(r.maxrss for r in runs), max(r.anon for r in runs),
                  max(r.written for r in runs), last.returncode, note=note, stderr=last.stderr)
        self.rows.append(row)
        print(f"  {operation:<32} {row.wall_s:8.3f} s  maxRSS {row.maxrss_bytes / MiB:8.1f} MiB  "
              f"anon {row.anon_bytes / MiB:8.1f} MiB  written {row.written_bytes / MiB:8.1f} MiB  rc={row.returncode}",
              flush=True)
        return row

    def baselines(self, case: str, src: Path, scratch: Path, label: str = "cp") -> tuple[Row, Row]:
        """`cp` and `cp` + `sync` of src (a file or a directory) into scratch."""
        size = size_of(src)
        dst = scratch / f"{src.name}.copy"
        recursive = ["-r"] if src.is_dir() else []
        clear = lambda: remove(dst)  # noqa: E731
        cp = self.measure(case, f"{label}", ["cp", *recursive, src, dst], size, before=clear, output=dst)
        script = 'cp -r "$1" "$2" && if [ -d "$2" ]; then find "$2" -type f -exec sync {} +; else sync "$2"; fi'
        cps = self.measure(case, f"{label}+sync", ["sh", "-c", script, "sh", src, dst], size, before=clear, output=dst)
        remove(dst)
        return cp, cps

    def problem(self, text: str):
        """A broken promise of the tool: printed, in the JSON, and the exit status is 1."""
        print(f"  PROBLEM: {text}", flush=True)
        self.info["problems"].append(text)

    def observe(self, text: str):
        """Worth knowing, not a broken promise."""
        print(f"  NOTE: {text}", flush=True)
        self.info["observations"].append(text)

    def check_refusal(self, case: str, row: Row, phrase: str, folder: Path, output: Path, allowed=()):
        """A refused rewrite: non-zero exit, an `error:` line containing `phrase`, little written,
        and nothing left in `folder` but the names in `allowed` (inputs)."""
        error = first_error_line(row.stderr)
        left = sorted(p.name for p in Path(folder).iterdir() if p.name not in allowed)
        row.note = "refused (error below)" if row.returncode else "NOT refused"
        self.info["cases"][case].update(error=error, left_behind=left)
        if row.returncode == 0:
            self.problem(f"{case}: expected a refusal ({phrase}), the rewrite succeeded")
        elif phrase not in error:
            self.problem(f"{case}: expected an `error:` line naming {phrase!r}, got: {row.stderr.strip()[:300]}")
        if row.returncode and left:
            sizes = {name: size_of(Path(folder) / name) for name in left}
            self.problem(f"{case}: the refused rewrite left files behind in {folder}: {sizes}")
        if row.written_bytes > 64 * MiB:
            self.problem(f"{case}: the refused rewrite wrote {row.written_bytes / MiB:.0f} MiB before refusing")
        if error and str(output) not in error and ".onnx-lookahead-" in error:
            self.observe(f"{case}: the error names a temporary path instead of {output}: {error}")


def with_ratios(rows: list[Row], cp: Row, cp_sync: Row):
    for row in rows:
        row.x_cp = row.wall_s / cp.wall_s
        row.x_cp_sync = row.wall_s / cp_sync.wall_s


def size_of(path: Path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def remove(path: Path):
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def first_error_line(stderr: str) -> str:
    return next((line for line in stderr.splitlines() if line.startswith("error:")), "")


# ---------------------------------------------------------------------------------------------
# Large training_info models, written without holding the weights in memory
# ---------------------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _len_prefix(field: int, length: int) -> bytes:
    """Key (wire type 2) and length of a length-delimited protobuf field."""
    return _varint(field << 3 | 2) + _varint(length)


def _write_floats(f, count: int, seed: int, scale: float):
    """Streams `count` deterministic float32 values (N(0, scale^2)) in chunks of CHUNK_FLOATS."""
    rng = np.random.default_rng(seed)
    left = count
    while left:
        n = min(left, CHUNK_FLOATS)
        chunk = rng.standard_normal(n, dtype=np.float32)
        chunk *= np.float32(scale)
        f.write(memoryview(chunk).cast("B"))
        left -= n


@dataclasses.dataclass
class BigTensor:
    name: str
    dims: tuple
    seed: int

    @property
    def count(self) -> int:
        return int(np.prod(self.dims))

    @property
    def nbytes(self) -> int:
        return 4 * self.count

    @property
    def scale(self) -> float:
        return 1.0 / float(np.sqrt(self.dims[0]))

    def array(self) -> np.ndarray:
        """The values _write_floats writes (only for small tensors: the encoder self-check)."""
        rng = np.random.default_rng(self.seed)
        parts, left = [], self.count
        while left:
            n = min(left, CHUNK_FLOATS)
            chunk = rng.standard_normal(n, dtype=np.float32)
            chunk *= np.float32(self.scale)
            parts.append(chunk)
            left -= n
        return np.concatenate(parts).reshape(self.dims)


def training_info_model(widths: list[int]) -> tuple[onnx.ModelProto, list[BigTensor]]:
    """A dense ReLU regressor X -> W1 ... Wn with an SGD training_info (tests/python/tinfo_models).

    The weight matrices are placeholders (dims and type, no data): the caller writes their bytes.
    Biases are small and stored normally. No initialization graph: its Constant nodes would carry
    every weight a second time.
    """
    n = len(widths) - 1
    layers = []
    for i in range(1, n + 1):
        last = i == n
        layers.append(tm.Layer(x="X" if i == 1 else f"A{i - 1}", w=f"W{i}", b=f"B{i}",
                               z="pred" if last else f"Z{i}", relu=None if last else f"A{i}"))
    head = tm.Head(layers, "Y")
    shapes = {}
    for i in range(1, n + 1):
        shapes[f"W{i}"], shapes[f"B{i}"] = (widths[i - 1], widths[i]), (widths[i],)
    big = [BigTensor(f"W{i}", shapes[f"W{i}"], seed=i) for i in range(1, n + 1)]
    initializers = []
    for i in range(1, n + 1):
        placeholder = TensorProto(name=f"W{i}", data_type=TensorProto.FLOAT)
        placeholder.dims.extend(shapes[f"W{i}"])
        initializers.append(placeholder)
        initializers.append(numpy_helper.from_array(np.full(widths[i], 0.01, np.float32), f"B{i}"))
    graph = helper.make_graph(tm._forward_nodes(head), "large_main", [tm._float_info("X", ["batch", widths[0]])],
                              [tm._float_info("pred", ["batch", widths[-1]])], initializer=initializers)
    loss_nodes, gradients = tm._loss_and_gradient_nodes(head, "loss", "")
    optimizer = tm._optimizer("sgd")
    opt_nodes, opt_inits, bindings, new_weights, state_outputs = tm._optimizer_nodes(
        optimizer, head.weights, gradients, shapes, "")
    algorithm = helper.make_graph(
        loss_nodes + opt_nodes, "large_sgd_step", [tm._float_info("Y", ["batch", widths[-1]])],
        [tm._float_info("loss", [])] + [tm._float_info(new_weights[w], shapes[w]) for w in head.weights] + state_outputs,
        initializer=opt_inits)
    model = helper.make_model(graph, ir_version=tm.IR_VERSION, opset_imports=tm.OPSET_IMPORTS,
                              producer_name="benches/large_models.py")
    model.training_info.append(helper.make_training_info(algorithm, bindings, None, None))
    return model, big


_MODEL_HEAD_FIELDS = ("ir_version", "producer_name", "producer_version", "domain", "model_version", "doc_string")


def write_inline(model: onnx.ModelProto, big: list[BigTensor], path: Path):
    """Writes model with each placeholder in `big` filled inline (raw_data), streaming its bytes.

    The bytes are exactly what model.SerializeToString() would give with the data filled in:
    fields in field-number order (ModelProto 1-6, graph 7, then 8+; GraphProto node and name,
    initializer 5, then 10+; TensorProto dims/data_type/name, then raw_data 9). Checked on a small
    model by self_check().
    """
    big_by_name = {b.name: b for b in big}
    head = onnx.ModelProto()
    tail = onnx.ModelProto()
    tail.CopyFrom(model)
    tail.ClearField("graph")
    for name in _MODEL_HEAD_FIELDS:
        if model.HasField(name):
            setattr(head, name, getattr(model, name))
            tail.ClearField(name)
    g = model.graph
    g_head = onnx.GraphProto()
    g_head.node.extend(g.node)
    g_head.name = g.name
    g_tail = onnx.GraphProto()
    g_tail.CopyFrom(g)
    for name in ("node", "name", "initializer"):
        g_tail.ClearField(name)

    # Each initializer: (prefix bytes, big tensor to stream or None).
    pieces = []
    for t in g.initializer:
        if t.name in big_by_name:
            b = big_by_name[t.name]
            header = t.SerializeToString() + _len_prefix(9, b.nbytes)
            pieces.append((_len_prefix(5, len(header) + b.nbytes) + header, b))
        else:
            body = t.SerializeToString()
            pieces.append((_len_prefix(5, len(body)) + body, None))
    g_head_bytes, g_tail_bytes = g_head.SerializeToString(), g_tail.SerializeToString()
    graph_len = len(g_head_bytes) + len(g_tail_bytes) + sum(len(p) + (b.nbytes if b else 0) for p, b in pieces)
    with open(path, "wb") as f:
        f.write(head.SerializeToString())
        f.write(_len_prefix(7, graph_len))
        f.write(g_head_bytes)
        for prefix, b in pieces:
            f.write(prefix)
            if b:
                _write_floats(f, b.count, b.seed, b.scale)
        f.write(g_tail_bytes)
        f.write(tail.SerializeToString())
        f.flush()
        os.fsync(f.fileno())


def write_external(model: onnx.ModelProto, big: list[BigTensor], folder: Path, model_name: str,
                   location: str = "weights.bin") -> Path:
    """Writes the big tensors one after another into folder/location and the model (referencing
    them by location/offset/length, data_location=EXTERNAL) to folder/model_name."""
    big_by_name = {b.name: b for b in big}
    model = onnx.ModelProto.FromString(model.SerializeToString())
    offset = 0
    with open(folder / location, "wb") as f:
        for t in model.graph.initializer:
            b = big_by_name.get(t.name)
            if b is None:
                continue
            _write_floats(f, b.count, b.seed, b.scale)
            t.data_location = TensorProto.EXTERNAL
            for key, value in (("location", location), ("offset", offset), ("length", b.nbytes)):
                entry = t.external_data.add()
                entry.key, entry.value = key, str(value)
            offset += b.nbytes
        f.flush()
        os.fsync(f.fileno())
    path = folder / model_name
    onnx.save(model, path)
    return path


def square_widths(total_bytes: float, layers: int, out: int = 16) -> list[int]:
    """Widths [d, d, ..., d, out] whose (layers - 1) square d x d matrices hold ~total_bytes."""
    d = int((total_bytes / 4 / (layers - 1)) ** 0.5)
    return [d] * layers + [out]


def self_check(folder: Path):
    """The streaming encoder against onnx's own serialization, and the model against the checker."""
    model, big = training_info_model([37, 29, 23, 5])
    path = folder / "self_check.onnx"
    write_inline(model, big, path)
    filled = onnx.ModelProto()
    filled.CopyFrom(model)
    for t in filled.graph.initializer:
        for b in big:
            if t.name == b.name:
                t.raw_data = b.array().tobytes()
    onnx.checker.check_model(filled)
    assert path.read_bytes() == filled.SerializeToString(), "streamed model differs from onnx's serialization"
    ext = write_external(model, big, folder, "self_check_ext.onnx", "self_check.bin")
    loaded = onnx.load(ext)
    for b in big:
        t = next(t for t in loaded.graph.initializer if t.name == b.name)
        assert np.array_equal(numpy_helper.to_array(t), b.array())
    for p in (path, ext, folder / "self_check.bin"):
        p.unlink()


# ---------------------------------------------------------------------------------------------
# Checks of the outputs (untimed)
# ---------------------------------------------------------------------------------------------


def slow_name(report_names: list[str], weight: str) -> str:
    hits = [n for n in report_names if n.endswith(f"slow__{weight}")]
    assert len(hits) == 1, (weight, report_names)
    return hits[0]


def check_ti_output(bench: Bench, case: str, out: Path, big: list[BigTensor], external: bool):
    """The rewritten model reads back with onnx; every slow weight equals its weight (inline: same
    bytes; external: the same location/offset/length)."""
    model = onnx.load(out, load_external_data=False)
    algorithm = model.training_info[0].algorithm
    main = {t.name: t for t in model.graph.initializer}
    slow = {t.name: t for t in algorithm.initializer if "slow__" in t.name}
    result = {}
    for b in big:
        name = slow_name(list(slow), b.name)
        w, s = main[b.name], slow[name]
        if external:
            same = (w.data_location == s.data_location == TensorProto.EXTERNAL
                    and list(w.external_data) == list(s.external_data))
            result[b.name] = {kv.key: kv.value for kv in s.external_data}
        else:
            same = w.raw_data == s.raw_data and len(w.raw_data) == b.nbytes
        if not same:
            bench.problem(f"{case}: slow weight {name} does not equal {b.name}")
    bench.info["cases"][case]["slow_weights_checked"] = result or len(big)
    del model


# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------


def inline_training_info_input(bench: Bench, work: Path, case: str, gib: float):
    """A fresh case folder holding model.onnx with ~gib GiB of inline weights.
    Returns (folder, model path, its size, the big weights)."""
    folder = work / case
    folder.mkdir()
    widths = square_widths(gib * GiB, 4)
    model, big = training_info_model(widths)
    src = folder / "model.onnx"
    start = time.perf_counter()
    write_inline(model, big, src)
    size = size_of(src)
    bench.info["cases"][case] = {"widths": widths, "input_bytes": size,
                                 "generate_s": round(time.perf_counter() - start, 2)}
    print(f"[{case}] {src} {size / GiB:.3f} GiB, widths {widths}", flush=True)
    return folder, src, size, big


def case_ti_inline(bench: Bench, tool: Path, work: Path, gib: float):
    case = "ti-inline"
    folder, src, size, big = inline_training_info_input(bench, work, case, gib)
    out = folder / "rewritten.onnx"
    cp, cp_sync = bench.baselines(case, src, folder, "cp input")
    rows = [
        bench.measure(case, "python -c 'import onnx'", [sys.executable, "-c", "import onnx"], size),
        bench.measure(case, "python onnx.load", [sys.executable, "-c", "import sys, onnx; onnx.load(sys.argv[1])", src], size),
        bench.measure(case, "onnx-lookahead inspect", [tool, "inspect", src], size),
        bench.measure(case, "onnx-lookahead rewrite", [tool, "rewrite", src, "--output", out, "-k", 5, "--alpha", 0.5],
                      size, before=lambda: remove(out), output=out),
    ]
    out_cp, out_cp_sync = bench.baselines(case, out, folder, "cp output (write floor)")
    with_ratios([*rows, out_cp, out_cp_sync], cp, cp_sync)
    for r in (out_cp, out_cp_sync):
        r.note = "ratio to cp of the input"
    rows[-1].note = f"output/input {size_of(out) / size:.3f}"
    check_ti_output(bench, case, out, big, external=False)
    remove(folder)


def case_ti_limit(bench: Bench, tool: Path, work: Path, gib: float):
    case = "ti-limit"
    folder, src, size, _ = inline_training_info_input(bench, work, case, gib)
    out = folder / "rewritten.onnx"
    cp, cp_sync = bench.baselines(case, src, folder, "cp input")
    row = bench.measure(case, "onnx-lookahead rewrite (refused)",
                        [tool, "rewrite", src, "--output", out, "-k", 5, "--alpha", 0.5],
                        size, before=lambda: remove(out), expect_ok=False)
    with_ratios([row], cp, cp_sync)
    bench.check_refusal(case, row, "2 GiB", folder, out, allowed=(src.name,))
    if 2 * size <= PROTOBUF_LIMIT:
        bench.observe(f"{case}: {gib} GiB is too small to reach the 2 GiB limit (output ~{2 * size / GiB:.2f} GiB)")
    remove(folder)


def case_ti_external(bench: Bench, tool: Path, work: Path, gib: float):
    case = "ti-external"
    folder = work / case
    src_dir, out_dir = folder / "in", folder / "out"
    src_dir.mkdir(parents=True)
    widths = square_widths(gib * GiB, 5)
    model, big = training_info_model(widths)
    start = time.perf_counter()
    src = write_external(model, big, src_dir, "model.onnx")
    data = src_dir / "weights.bin"
    size = size_of(src_dir)
    bench.info["cases"][case] = {"widths": widths, "input_bytes": size, "model_bytes": size_of(src),
                                 "data_bytes": size_of(data), "generate_s": round(time.perf_counter() - start, 2)}
    print(f"[{case}] {src} {size_of(src)} bytes + {data.name} {size_of(data) / GiB:.3f} GiB, widths {widths}", flush=True)
    cp, cp_sync = bench.baselines(case, data, folder, "cp weights.bin")

    def clear_out():
        remove(out_dir)
        out_dir.mkdir()

    same_out = src_dir / "rewritten.onnx"
    rows = [
        bench.measure(case, "onnx-lookahead inspect", [tool, "inspect", src], size),
        bench.measure(case, "rewrite, other folder", [tool, "rewrite", src, "--output", out_dir / "model.onnx", "-k", 5,
                                                      "--alpha", 0.5], size, before=clear_out, output=out_dir),
    ]
    out_data = out_dir / "weights.bin"
    copied = {
        "output_folder": sorted(p.name for p in out_dir.iterdir()),
        "weights_bin_copied": out_data.exists(),
        "weights_bin_bytes": size_of(out_data),
        "same_inode": out_data.exists() and out_data.stat().st_ino == data.stat().st_ino,
    }
    rows[-1].note = (f"copies weights.bin ({copied['weights_bin_bytes'] / GiB:.2f} GiB, own inode)"
                     if copied["weights_bin_copied"] and not copied["same_inode"] else f"{copied}")
    check_ti_output(bench, case, out_dir / "model.onnx", big, external=True)
    if out_data.exists() and not filecmp_equal(out_data, data):
        bench.problem(f"{case}: the copied weights.bin differs from the input")
    remove(out_dir)
    rows.append(bench.measure(case, "rewrite, same folder", [tool, "rewrite", src, "--output", same_out, "-k", 5,
                                                             "--alpha", 0.5], size,
                              before=lambda: remove(same_out), output=same_out))
    rows[-1].note = "output is the model file only"
    rows.append(bench.measure(case, "python onnx.load (+data)",
                              [sys.executable, "-c", "import sys, onnx; onnx.load(sys.argv[1])", src], size))
    with_ratios(rows, cp, cp_sync)
    bench.info["cases"][case]["other_folder"] = copied
    remove(folder)


def case_ti_mixed_limit(bench: Bench, tool: Path, work: Path, gib: float):
    """W1 as external data, the other weights inline, the output over 2 GiB, written to another
    folder: the refusal must also come before the data file is copied there."""
    case = "ti-mixed-limit"
    folder = work / case
    src_dir, out_dir = folder / "in", folder / "out"
    src_dir.mkdir(parents=True)
    out_dir.mkdir()
    widths = square_widths(gib * GiB, 4)
    model, big = training_info_model(widths)
    start = time.perf_counter()
    w1 = big[0]
    with open(src_dir / "weights.bin", "wb") as f:
        _write_floats(f, w1.count, w1.seed, w1.scale)
    t = next(t for t in model.graph.initializer if t.name == w1.name)
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "weights.bin"), ("offset", 0), ("length", w1.nbytes)):
        entry = t.external_data.add()
        entry.key, entry.value = key, str(value)
    src = src_dir / "model.onnx"
    write_inline(model, big[1:], src)
    size = size_of(src_dir)
    bench.info["cases"][case] = {"widths": widths, "input_bytes": size, "model_bytes": size_of(src),
                                 "data_bytes": size_of(src_dir / "weights.bin"),
                                 "generate_s": round(time.perf_counter() - start, 2)}
    print(f"[{case}] {src} {size_of(src) / GiB:.3f} GiB inline + weights.bin "
          f"{size_of(src_dir / 'weights.bin') / GiB:.3f} GiB, widths {widths}", flush=True)
    cp, cp_sync = bench.baselines(case, src_dir, folder, "cp -r input folder")
    out = out_dir / "model.onnx"

    def clear_out():
        remove(out_dir)
        out_dir.mkdir()

    row = bench.measure(case, "rewrite, other folder (refused)",
                        [tool, "rewrite", src, "--output", out, "-k", 5, "--alpha", 0.5],
                        size, before=clear_out, expect_ok=False)
    with_ratios([row], cp, cp_sync)
    bench.check_refusal(case, row, "2 GiB", out_dir, out)
    if 2 * size_of(src) <= PROTOBUF_LIMIT:
        bench.observe(f"{case}: {gib} GiB is too small to reach the 2 GiB limit")
    remove(folder)


def filecmp_equal(a: Path, b: Path, block: int = 64 * MiB) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(block), fb.read(block)
            if x != y:
                return False
            if not x:
                return True


# ----- ORT artifacts


def generate_ort(out: str, widths: list[int]):
    """(Runs in a child process.) generate_artifacts (AdamW, MSE) for a tanh MLP of `widths`."""
    from lookahead_testkit.model import MlpSpec
    from lookahead_testkit.ort import generate_artifacts
    from lookahead_testkit.reference import OptimizerConfig

    layers = tuple((w, "tanh") for w in widths[1:-1]) + ((widths[-1], "none"),)
    spec = MlpSpec("large_mlp", widths[0], layers)
    rng = np.random.default_rng(0)
    params = {}
    for name, shape in spec.shapes().items():
        scale = 1 / np.sqrt(shape[0]) if name[0] == "W" else 0.1
        params[name] = rng.standard_normal(shape, dtype=np.float32)
        params[name] *= np.float32(scale)
    model = spec.onnx_model(params)  # MlpSpec.onnx_model would otherwise draw float64 weights itself
    del params

    class _Spec(MlpSpec):
        def onnx_model(self, params=None):
            return model

    generate_artifacts(_Spec(spec.name, spec.n_in, spec.layers), OptimizerConfig("adamw", 0.01), out)


def check_ort_output(bench: Bench, case: str, out: Path):
    """Loads the rewritten checkpoint with onnxruntime.training (in a child, to free its memory) and
    compares every slow weight with its parameter."""
    code = (
        "import sys, json, numpy as np\n"
        f"sys.path.insert(0, {str(ROOT / 'tests' / 'python')!r})\n"
        "from lookahead_testkit.ort import CheckpointState\n"
        "s = CheckpointState.load_checkpoint(sys.argv[1])\n"
        "names = [name for name, _ in s.parameters]  # iterating Parameters yields (name, Parameter)\n"
        "bad = []\n"
        "slow = [n for n in names if 'slow__' in n]\n"
        "for n in slow:\n"
        "    p = n.split('slow__', 1)[1]\n"
        "    if not np.array_equal(s.parameters[n].data, s.parameters[p].data): bad.append(n)\n"
        "print(json.dumps({'parameters': len(names), 'slow': len(slow), 'mismatch': bad}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code, out / "checkpoint"], capture_output=True, text=True)
    if res.returncode != 0:
        bench.problem(f"{case}: onnxruntime could not load the rewritten checkpoint: {res.stderr.strip()[-400:]}")
        return
    result = json.loads(res.stdout.strip().splitlines()[-1])
    bench.info["cases"][case]["ort_load_check"] = result
    if result["mismatch"] or not result["slow"]:
        bench.problem(f"{case}: slow weights differ from their parameters after ORT load: {result}")


def ort_case(bench: Bench, tool: Path, work: Path, case: str, gib: float, expect_refusal: bool):
    folder = work / case
    folder.mkdir()
    src = folder / "artifacts"
    widths = square_widths(gib * GiB, 4)
    start = time.perf_counter()
    gen = run_once([sys.executable, __file__, "--generate-ort", src, ",".join(map(str, widths))])
    if gen.returncode != 0:
        raise RuntimeError(f"generate_artifacts failed:\n{gen.stderr[-2000:]}")
    size = size_of(src)
    files = {p.name: p.stat().st_size for p in sorted(src.iterdir())}
    bench.info["cases"][case] = {"widths": widths, "input_bytes": size, "files": files,
                                 "generate_s": round(time.perf_counter() - start, 2),
                                 "generate_maxrss_bytes": gen.maxrss}
    print(f"[{case}] {src}: {files}, generate_artifacts {gen.wall:.0f} s, maxRSS {gen.maxrss / GiB:.1f} GiB",
          flush=True)
    out = folder / "rewritten"
    cp, cp_sync = bench.baselines(case, src, folder, "cp -r artifacts")
    rows = [bench.measure(case, "onnx-lookahead inspect", [tool, "inspect", src], size)]
    cmd = [tool, "rewrite", src, "--output", out, "-k", 5, "--alpha", 0.5]
    if expect_refusal:
        row = bench.measure(case, "onnx-lookahead rewrite (refused)", cmd, size, before=lambda: remove(out),
                            expect_ok=False)
        bench.check_refusal(case, row, "2 GiB", folder, out, allowed=(src.name,))
        if row.returncode:
            bench.observe(f"{case}: ORT writes checkpoints of under 1800 MiB of initializers inline, so "
                          f"one of {size / GiB:.2f} GiB has no checkpoint.data and its rewrite (slow copies "
                          "inline too) does not fit one FlatBuffer; the rewrite refuses rather than moving "
                          "the parameters to checkpoint.data")
        rows.append(row)
    else:
        row = bench.measure(case, "onnx-lookahead rewrite", cmd, size, before=lambda: remove(out), output=out)
        out_files = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
        bench.info["cases"][case]["output_files"] = out_files
        row.note = "out: " + ", ".join(f"{k} {v / MiB:.0f} MiB" for k, v in out_files.items() if v > MiB)
        rows.append(row)
        check_ort_output(bench, case, out)
        out_cp, out_cp_sync = bench.baselines(case, out, folder, "cp -r output (write floor)")
        for r in (out_cp, out_cp_sync):
            r.note = "ratio to cp of the input"
        rows += [out_cp, out_cp_sync]
    with_ratios(rows, cp, cp_sync)
    remove(folder)


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def fmt_table(rows: list[Row]) -> str:
    head = ("case", "operation", "in GiB", "out GiB", "wall s", "min s", "x cp", "x cp+sync", "maxRSS MiB",
            "RSS/in", "anon MiB", "anon/in", "written MiB", "rc", "note")
    lines = []
    for r in rows:
        ratio = lambda x: "" if x is None else f"{x:.2f}"  # noqa: E731
        lines.append((r.case, r.operation, f"{r.input_bytes / GiB:.3f}",
                      "" if r.output_bytes is None else f"{r.output_bytes / GiB:.3f}",
                      f"{r.wall_s:.3f}", f"{r.min_s:.3f}", ratio(r.x_cp), ratio(r.x_cp_sync), f"{r.maxrss_bytes / MiB:.0f}",
                      f"{r.maxrss_bytes / r.input_bytes:.3f}", f"{r.anon_bytes / MiB:.1f}",
                      f"{r.anon_bytes / r.input_bytes:.4f}", f"{r.written_bytes / MiB:.0f}", str(r.returncode), r.note))
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    return "\n".join(out)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()),
                    help="a fresh folder is made in here for the big files (default: system temp)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per measurement (median wall)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs before the timed ones")
    ap.add_argument("--bin", type=Path, help="the onnx-lookahead binary")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--inline-gib", type=float, default=0.9)
    ap.add_argument("--limit-gib", type=float, default=1.2)
    ap.add_argument("--external-gib", type=float, default=4.0)
    ap.add_argument("--mixed-gib", type=float, default=1.6)
    ap.add_argument("--ort-gib", type=float, default=0.9)
    ap.add_argument("--ort-limit-gib", type=float, default=1.2)
    ap.add_argument("--ort-external-gib", type=float, default=1.85)
    ap.add_argument("--generate-ort", nargs=2, metavar=("DIR", "WIDTHS"), help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.generate_ort:
        generate_ort(args.generate_ort[0], [int(w) for w in args.generate_ort[1].split(",")])
        return 0
    if args.bin:
        os.environ["ONNX_LOOKAHEAD_BIN"] = str(args.bin)
    tool, problem = cli.find_binary()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    need = max(3 * args.inline_gib, 2 * args.limit_gib, 2.2 * args.external_gib, 2 * args.mixed_gib, 4 * args.ort_gib,
               2 * args.ort_limit_gib, 3.2 * args.ort_external_gib) * GiB
    free = shutil.disk_usage(args.work).free
    print(f"binary {tool}\nwork {args.work}: {free / GiB:.1f} GiB free, peak need ~{need / GiB:.1f} GiB; "
          f"memory available {mem_available() / GiB:.1f} GiB; {os.cpu_count()} CPUs", flush=True)
    if free < need + 2 * GiB:
        print(f"not enough free disk under {args.work}", file=sys.stderr)
        return 2
    bench = Bench(args)
    bench.info.update(binary=str(tool), repeat=args.repeat, cpus=os.cpu_count(),
                      mem_available_bytes=mem_available(), disk_free_bytes=free,
                      command=" ".join(sys.argv))
    work = Path(tempfile.mkdtemp(prefix="onnx-lookahead-large-", dir=args.work))
    try:
        self_check(work)
        for case in args.cases:
            start = time.perf_counter()
            if case == "ti-inline":
                case_ti_inline(bench, tool, work, args.inline_gib)
            elif case == "ti-limit":
                case_ti_limit(bench, tool, work, args.limit_gib)
            elif case == "ti-external":
                case_ti_external(bench, tool, work, args.external_gib)
            elif case == "ti-mixed-limit":
                case_ti_mixed_limit(bench, tool, work, args.mixed_gib)
            elif case == "ort":
                ort_case(bench, tool, work, case, args.ort_gib, expect_refusal=False)
            elif case == "ort-limit":
                ort_case(bench, tool, work, case, args.ort_limit_gib, expect_refusal=False)
            elif case == "ort-external":
                want = 8 * args.ort_external_gib * GiB
                if mem_available() < want:
                    msg = f"skipped: generate_artifacts needs ~{want / GiB:.0f} GiB, {mem_available() / GiB:.1f} available"
                    print(f"[{case}] {msg}")
                    bench.info["cases"][case] = {"skipped": msg}
                    continue
                ort_case(bench, tool, work, case, args.ort_external_gib, expect_refusal=False)
                files = bench.info["cases"][case]
                if "checkpoint.data" not in files["files"]:
                    bench.problem(f"{case}: ORT wrote no checkpoint.data ({files['files']}); not the external case")
                elif "checkpoint.data" not in files.get("output_files", {}):
                    bench.problem(f"{case}: the rewritten artifacts have no checkpoint.data")
            bench.info["cases"].setdefault(case, {})["case_s"] = round(time.perf_counter() - start, 1)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print(fmt_table(bench.rows))
    print("\nx cp = wall / wall of the case's `cp` of its input; RSS/in and anon/in = peak / input bytes.")
    for case, info in bench.info["cases"].items():
        if info.get("error"):
            print(f"{case}: {info['error']}")
    for text in bench.info["observations"]:
        print(f"NOTE: {text}")
    for text in bench.info["problems"]:
        print(f"PROBLEM: {text}")
    if args.json:
        rows = [{k: v for k, v in dataclasses.asdict(r).items() if k != "stderr"} for r in bench.rows]
        args.json.write_text(json.dumps({"rows": rows, **bench.info}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 1 if bench.info["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
