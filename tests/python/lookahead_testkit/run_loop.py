"""Continue training from a saved checkpoint in a fresh process: the "resume" half of the tests.

A resumed run must not inherit anything from the process that saved the checkpoint (Python objects,
ORT sessions, buffers shared with the old state), so the tests start this module as a subprocess:

    python -m lookahead_testkit.run_loop ARTIFACTS CHECKPOINT DATA.npz OUT.npz --lr LR

DATA.npz holds x, target shaped [steps, forwards, batch, ...] plus eval_x, eval_target; OUT.npz
receives losses [steps, forwards] and eval_losses [steps] of the stock loop over those steps.
"""
from __future__ import annotations

import argparse

import numpy as np


def save_schedule(path, schedule, eval_batch) -> None:
    np.savez(path, x=np.array([[b[0] for b in s] for s in schedule]),
             target=np.array([[b[1] for b in s] for s in schedule]),
             eval_x=eval_batch[0], eval_target=eval_batch[1])


def load_schedule(path):
    data = np.load(path)
    schedule = [list(zip(xs, ts)) for xs, ts in zip(data["x"], data["target"])]
    return schedule, (data["eval_x"], data["eval_target"])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts")
    ap.add_argument("checkpoint")
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--lr", type=float, required=True)
    a = ap.parse_args(argv)
    from .ort import StockLoop  # after argparse: --help needs no ORT

    schedule, eval_batch = load_schedule(a.data)
    losses, evals = StockLoop(a.artifacts, a.lr, checkpoint=a.checkpoint).run(schedule, eval_batch)
    np.savez(a.out, losses=np.array(losses), eval_losses=np.array(evals))


if __name__ == "__main__":
    main()
