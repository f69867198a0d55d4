"""Rewriting an ORT checkpoint: wall time next to the durable floor, and memory by model size.

Why: a rewrite of ONNX Runtime artifacts writes the checkpoint again with one slow copy per
trainable parameter, so it writes about twice the checkpoint's bytes. Nothing can do that faster
than the kernel copying the same bytes and flushing them to disk, so the floor is
`cp -r` of the input artifacts directory twice (the output's bytes) followed by `sync` of the
copies (fsync per file, as the tool fsyncs what it writes). The checkpoint writer should stay close
to that floor, and its memory should not grow with the checkpoint: the input is memory-mapped and
the output streamed.

What it does: generates ONNX Runtime training artifacts (generate_artifacts, AdamW) of a wide MLP
whose inline checkpoint holds --sizes MiB of float32 parameters (default 160 and 320), then, for
each size, in one run, side by side (interleaved, round-robin after a warm-up), measures in fresh
processes:
  floor      sh -c 'cp -r IN A && cp -r IN B && sync A/* B/*'  (the durable floor, as defined above)
  out-floor  sh -c 'cp -r OUT C && sync C/*'   (the same bytes as the rewrite's actual output, which
             is smaller than twice the input when tensors share bytes in the file)
  rewrite    onnx-lookahead rewrite IN --output OUT -k 5 --alpha 0.5   (fsyncs its output)
  [baseline] the same rewrite with --baseline-bin (e.g. the binary of an earlier commit)
Every command runs under GNU time (/usr/bin/time; peak RSS = ru_maxrss of the command alone) with
RssAnon sampled every 2 ms (peak anon = heap), exactly like benches/large_models.py, whose
measuring code this imports. Each run is preceded by an untimed `sync`; inputs are warm in the page
cache. The wall time is the median of --repeat runs.

After the timed runs, the rewritten checkpoint is loaded by onnxruntime.training
(CheckpointState.load_checkpoint, in a child process) and every slow weight compared with its
parameter (skip with --no-check).

Usage: benches/checkpoint_write.sh [--work DIR] [--sizes 160 320] [--repeat 5] [--json out.json]
       [--baseline-bin PATH]    (builds the binary and the pinned venv first), or
       target/py-venv/bin/python benches/checkpoint_write.py --help
The binary is --bin, else ONNX_LOOKAHEAD_BIN, else target/release/onnx-lookahead. Needs about
6 x the largest size of free disk under --work (default: the system temp dir) and ~4 GiB of memory
per GiB of parameters for generate_artifacts.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benches"))
sys.path.insert(0, str(ROOT / "tests" / "python"))

import large_models as lm  # noqa: E402  (run_once, generate_ort, check_ort_output, size_of, ...)
from lookahead_testkit import cli  # noqa: E402

MiB = 1 << 20


@dataclasses.dataclass
class Measured:
    label: str
    walls: list
    maxrss: int
    anon: int
    written: int

    @property
    def median(self) -> float:
        return statistics.median(self.walls)


def measure_round_robin(commands: dict, repeat: int, warmup: int) -> dict:
    """commands: label -> (argv, before); runs each `warmup` times untimed, then `repeat` rounds of
    one run of every command in turn. -> label -> Measured."""
    for _ in range(warmup):
        for argv, before in commands.values():
            before()
            run = lm.run_once(argv)
            if run.returncode != 0:
                raise RuntimeError(f"{argv} failed ({run.returncode}):\n{run.stderr}{run.stdout}")
    runs = {label: [] for label in commands}
    for _ in range(repeat):
        for label, (argv, before) in commands.items():
            before()
            run = lm.run_once(argv)
            if run.returncode != 0:
                raise RuntimeError(f"{argv} failed ({run.returncode}):\n{run.stderr}{run.stdout}")
            runs[label].append(run)
    return {label: Measured(label, [r.wall for r in rs], max(r.maxrss for r in rs), max(r.anon for r in rs),
                            max(r.written for r in rs))
            for label, rs in runs.items()}


SYNC_TREE = 'find "$1" -type f -exec sync {} +'


def case(args, tool: Path, work: Path, mib: int) -> list[dict]:
    folder = work / f"ckpt-{mib}"
    folder.mkdir()
    src = folder / "artifacts"
    widths = lm.square_widths(mib * MiB, 4)
    start = time.perf_counter()
    gen = lm.run_once([sys.executable, ROOT / "benches" / "large_models.py", "--generate-ort", src,
                       ",".join(map(str, widths))])
    if gen.returncode != 0:
        raise RuntimeError(f"generate_artifacts failed:\n{gen.stderr[-2000:]}")
    files = {p.name: p.stat().st_size for p in sorted(src.iterdir())}
    in_bytes = lm.size_of(src)
    print(f"[{mib} MiB] widths {widths}: {', '.join(f'{k} {v / MiB:.1f} MiB' for k, v in files.items())}; "
          f"generate_artifacts {time.perf_counter() - start:.0f} s", flush=True)

    a, b, c = folder / "copy_a", folder / "copy_b", folder / "copy_c"
    out = folder / "rewritten"
    base_out = folder / "rewritten_base"

    def clear(*paths):
        return lambda: [lm.remove(p) for p in paths]

    floor = ["sh", "-c", f'cp -r "$1" "$2" && cp -r "$1" "$3" && {SYNC_TREE.replace("$1", "$2")} && '
             f'{SYNC_TREE.replace("$1", "$3")}', "sh", src, a, b]
    commands = {"floor (cp -r x2 + sync)": (floor, clear(a, b))}
    rewrite = [tool, "rewrite", src, "--output", out, "-k", 5, "--alpha", 0.5]
    commands["rewrite"] = (rewrite, clear(out))
    if args.baseline_bin:
        commands["rewrite (baseline bin)"] = ([args.baseline_bin, *rewrite[1:4], base_out, *rewrite[5:]],
                                              clear(base_out))
    # The output's own floor needs the output: one untimed rewrite first.
    lm.remove(out)
    first = lm.run_once(rewrite)
    if first.returncode != 0:
        raise RuntimeError(f"rewrite failed:\n{first.stderr}")
    out_files = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    out_src = folder / "output_copy_source"
    shutil.copytree(out, out_src)
    commands["out-floor (cp -r output + sync)"] = (
        ["sh", "-c", f'cp -r "$1" "$2" && {SYNC_TREE.replace("$1", "$2")}', "sh", out_src, c], clear(c))
    results = measure_round_robin(commands, args.repeat, args.warmup)
    lm.remove(out_src)
    if not args.no_check:
        lm.remove(out)
        lm.run_once(rewrite)
        bench = lm.Bench(args)
        bench.info["cases"][f"ckpt-{mib}"] = {}
        lm.check_ort_output(bench, f"ckpt-{mib}", out)
        check = bench.info["cases"][f"ckpt-{mib}"].get("ort_load_check")
        if bench.info["problems"]:
            raise RuntimeError("; ".join(bench.info["problems"]))
        print(f"  ORT load check: {check}", flush=True)
    floor_s = results["floor (cp -r x2 + sync)"].median
    rows = []
    for label, m in results.items():
        row = {"size_mib": mib, "checkpoint_bytes": files.get("checkpoint", 0), "input_bytes": in_bytes,
               "output_files": out_files if label.startswith("rewrite") else None,
               "what": label, "wall_s": round(m.median, 4), "walls_s": [round(w, 4) for w in m.walls],
               "x_floor": round(m.median / floor_s, 3), "maxrss_bytes": m.maxrss, "anon_bytes": m.anon,
               "written_bytes": m.written}
        rows.append(row)
        print(f"  {label:<34} {m.median:7.3f} s  x floor {m.median / floor_s:5.2f}  maxRSS {m.maxrss / MiB:7.1f} MiB"
              f"  anon {m.anon / MiB:6.1f} MiB  written {m.written / MiB:7.1f} MiB", flush=True)
    lm.remove(folder)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| checkpoint | command | wall (median) | x floor | peak RSS | peak anon | written |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['checkpoint_bytes'] / MiB:.0f} MiB | {r['what']} | {r['wall_s']:.3f} s | "
                     f"{r['x_floor']:.2f} | {r['maxrss_bytes'] / MiB:.1f} MiB | {r['anon_bytes'] / MiB:.1f} MiB | "
                     f"{r['written_bytes'] / MiB:.0f} MiB |")
    return "\n".join(lines)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()))
    ap.add_argument("--sizes", type=int, nargs="+", default=[160, 320], help="MiB of parameters")
    ap.add_argument("--repeat", type=int, default=5, help="timed rounds (median wall)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    ap.add_argument("--bin", type=Path, help="the onnx-lookahead binary")
    ap.add_argument("--baseline-bin", type=Path, help="another binary to measure side by side")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--no-check", action="store_true", help="skip loading the output in ORT")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.bin:
        os.environ["ONNX_LOOKAHEAD_BIN"] = str(args.bin)
    tool, problem = cli.find_binary()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    need = 6 * max(args.sizes) * MiB
    free = shutil.disk_usage(args.work).free
    print(f"binary {tool}\nwork {args.work}: {free / (1 << 30):.1f} GiB free; {os.cpu_count()} CPUs; "
          f"GNU time: {lm.GNU_TIME or 'missing (VmHWM sampled instead)'}", flush=True)
    if free < need + (1 << 30):
        print(f"not enough free disk under {args.work}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="onnx-lookahead-ckpt-", dir=args.work))
    rows = []
    try:
        for mib in args.sizes:
            rows += case(args, tool, work, mib)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(rows))
    print("\nx floor = median wall / median wall of `cp -r` of the input artifacts twice + sync, same size, same run.")
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), "binary": str(tool),
                                         "baseline_bin": str(args.baseline_bin or ""), "repeat": args.repeat,
                                         "cpus": os.cpu_count(), "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
