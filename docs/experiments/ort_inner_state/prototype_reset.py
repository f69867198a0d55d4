"""Prototype: Lookahead with --inner-state reset around ORT AdamW, verified against NumPy.

The tool's current rewrite (onnx_lookahead.rewrite: checkpoint, training and eval graphs) plus the
optimizer-model patch `reset_optimizer` below, the one thing --inner-state reset adds. Inputs of the
optimizer model stay exactly as generated:

    sync  = Equal(Mod(step - step0, k), 0)            # the optimizer's own clock (its `step` input)
    local = Mod(step - step0 - 1, k) + 1                # only with restart_count: the AdamW step
    AdamWOptimizer(learning_rate, local|step, params, gradients, m, v) -> flag0   # the original node
    If(And(flag0, sync)):
        then: AdamWOptimizer[alpha=1, beta=1, weight_decay=1, correct_bias=0](1, step, m, gradients, v, v) -> z1
              AdamWOptimizer[same](1, step, v, gradients, m, m, update_signal=z1)           -> z2
              # the "weights" slot (m, then v) ends as w' - 1*1*w' = 0 exactly; the moment slots
              # are left as they are (1*x + 0*g); in place in the checkpoint's buffers (q2, Q2b2);
              # z1 orders the second node after the first. No allocation, standard ops of opset 10+.
        else: Identity(flag0)
    output (original name) = And(flag0, If's output)

restart_count=True is optax's lookahead(reset_state=True): the whole inner state restarts, so the
bias correction counts from 1 after each sync (AdamW sees steps 1..k in every cycle).
restart_count=False zeroes m and v only; bias correction keeps the global step.

Run: 13 steps, k=3, alpha=0.5, a save (include_optimizer_state=True) and resume into a fresh
Module/Optimizer after step 7. Checked every step: training loss, eval loss, m and v (exactly zero
after each sync step), the raw weights after non-sync steps, and that the run differs from keep.
"""
import onnx_lookahead

from common import *  # noqa: F403

K, ALPHA, STEPS, RESUME_AFTER = 3, 0.5, 13, 7
TOL = 1e-5     # losses and weights, as the end-to-end tests
RTOL_M = 1e-4  # moments, relative to the tensor's largest entry (v is ~1e-5)


def zeroing_adamw(inputs, out):
    """AdamWOptimizer that sets its weights slot to exactly 0 (lr=1, weight_decay=1: w - 1*1*w) and
    leaves its moment slots as they are (alpha=beta=1: 1*x + 0*g); no bias correction (1 - 1^t = 0)."""
    return adamw_node(inputs, out, 1.0, 1.0, weight_decay=1.0, correct_bias=0)


def reset_optimizer(directory, k: int, restart_count: bool, step0: int = 0) -> Path:
    def build(g, node):
        s = "step"
        if step0:
            g.node.append(helper.make_node("Sub", ["step", const(g, "la_step0", np.array([step0]))], ["la_s"]))
            s = "la_s"
        kk, one = const(g, "la_k", np.array([k], np.int64)), const(g, "la_one", np.array([1], np.int64))
        g.node.extend([helper.make_node("Mod", [s, kk], ["la_r"]),
                       helper.make_node("Equal", ["la_r", const(g, "la_zero", np.array([0], np.int64))], ["la_sync"]),
                       helper.make_node("And", ["flag0", "la_sync"], ["la_cond"])])
        if restart_count:
            g.node.extend([helper.make_node("Sub", [s, one], ["la_s1"]),
                           helper.make_node("Mod", ["la_s1", kk], ["la_r1"]),
                           helper.make_node("Add", ["la_r1", one], ["la_local"])])
            node.input[1] = "la_local"
        then = helper.make_graph(
            [zeroing_adamw(["la_lr1", "step", "first_order_moments", "gradients", "second_order_moments",
                            "second_order_moments"], "la_z1"),
             zeroing_adamw(["la_lr1", "step", "second_order_moments", "gradients", "first_order_moments",
                            "first_order_moments", "la_z1"], "la_z2")],
            "la_reset", [], [helper.make_tensor_value_info("la_z2", TensorProto.BOOL, None)],
            [numpy_helper.from_array(np.ones(1, np.float32), "la_lr1")])
        other = helper.make_graph([helper.make_node("Identity", ["flag0"], ["la_f3"])], "la_keep", [],
                                  [helper.make_tensor_value_info("la_f3", TensorProto.BOOL, None)])
        g.node.append(helper.make_node("If", ["la_cond"], ["la_done"], then_branch=then, else_branch=other))
        return ["la_done"]
    return patch_optimizer(directory, build)


def reference(schedule, eval_batch, reset: bool, restart_count: bool):
    """Lookahead reference loop (README) with AdamW; reset: zero m, v after each sync step."""
    inner = ADAMW.make()
    p = SPEC.init_params()
    slow = {n: p[n].copy() for n in SPEC.trainable}
    out = []
    for t, batches_t in enumerate(schedule, 1):
        losses, total = [], None
        for x, target in batches_t:
            loss, g = SPEC.loss_and_grads(p, x, target)
            losses.append(float(loss))
            total = g if total is None else {n: total[n] + g[n] for n in g}
        inner.step(p, total, (t - 1) % K + 1 if reset and restart_count else t)
        if t % K == 0:
            for n in SPEC.trainable:
                slow[n] = slow[n] + np.float32(ALPHA) * (p[n] - slow[n])
                p[n] = slow[n].copy()
            if reset:
                inner.m.clear(); inner.v.clear()
        z = {n: np.zeros_like(p[n]) for n in SPEC.trainable}
        out.append({"losses": losses, "eval": float(SPEC.compute_loss(SPEC.forward(p, eval_batch[0]), eval_batch[1])),
                    "m": {n: inner.m.get(n, z[n]).copy() for n in SPEC.trainable},
                    "v": {n: inner.v.get(n, z[n]).copy() for n in SPEC.trainable},
                    "p": {n: p[n].copy() for n in SPEC.trainable}})
    return out


def ort_run(directory, schedule, eval_batch):
    lp, out = loop(directory, "adamw"), []
    for t, batches_t in enumerate(schedule, 1):
        losses = lp.step(batches_t)
        st, step = moments(lp)
        out.append({"losses": losses, "eval": lp.eval_loss(eval_batch), "step": step,
                    "m": {n: st[n]["momentum0"] for n in SPEC.trainable},
                    "v": {n: st[n]["momentum1"] for n in SPEC.trainable},
                    "p": {n: lp.parameter(n) for n in SPEC.trainable}})
        if t == RESUME_AFTER:  # save with the optimizer state and continue in a fresh Module/Optimizer
            lp.save(directory / "resume_checkpoint")
            lp = loop(directory, "adamw", checkpoint=directory / "resume_checkpoint")
    return out


def rel(a, b):
    return max(float(np.abs(a[n] - b[n]).max() / max(np.abs(b[n]).max(), 1e-30)) for n in b)


schedule, eval_batch = batches(STEPS), SPEC.eval_batch()
AD = artifacts("adamw")
keep_ref = reference(schedule, eval_batch, reset=False, restart_count=False)
for restart in (True, False):
    label = "restart_count" if restart else "moments_only"
    la = tmpdir(f"proto_{label}_") / "artifacts"
    onnx_lookahead.rewrite(AD, la, k=K, alpha=ALPHA)
    reset_optimizer(la, K, restart)
    got, ref = ort_run(la, schedule, eval_batch), reference(schedule, eval_batch, True, restart)
    print(f"\n[{label}] step  loss(ort)    loss(ref)    eval(ort)    eval(ref)    m rel.err  v rel.err  max|m|")
    worst = {"loss": 0.0, "m": 0.0, "v": 0.0, "p": 0.0}
    zero_after_sync = True
    for t, (o, r) in enumerate(zip(got, ref), 1):
        dl = max(abs(o["losses"][0] - r["losses"][0]), abs(o["eval"] - r["eval"]))
        dm, dv = rel(o["m"], r["m"]) if t % K else 0.0, rel(o["v"], r["v"]) if t % K else 0.0
        mx = max(float(np.abs(o["m"][n]).max()) for n in SPEC.trainable)
        if t % K == 0:
            zero_after_sync &= not any(np.any(o["m"][n]) or np.any(o["v"][n]) for n in SPEC.trainable)
        else:  # raw checkpoint weights hold the synced value only after the next forward (README)
            worst["p"] = max(worst["p"], max(float(np.abs(o["p"][n] - r["p"][n]).max()) for n in SPEC.trainable))
        worst.update(loss=max(worst["loss"], dl), m=max(worst["m"], dm), v=max(worst["v"], dv))
        errs = f"{dm:9.2e}  {dv:9.2e}" if t % K else f"{'exact 0' if mx == 0 else 'NOT 0':>9}  {'':9}"
        print(f"    {t:>4}{'*' if t % K == 0 else ' '} {o['losses'][0]:.9f}  {r['losses'][0]:.9f}  {o['eval']:.9f}  "
              f"{r['eval']:.9f}  {errs}  {mx:.3g}{'  (resumed after)' if t == RESUME_AFTER else ''}")
    away = max(max(abs(o["losses"][0] - r["losses"][0]), abs(o["eval"] - r["eval"])) for o, r in zip(got, keep_ref))
    check(f"prototype reset ({label}): losses, eval losses, m, v and weights match the NumPy reference over "
          f"{STEPS} steps, k={K}, with a save/resume after step {RESUME_AFTER}",
          worst["loss"] <= TOL and worst["p"] <= TOL and worst["m"] <= RTOL_M and worst["v"] <= RTOL_M,
          f"max |loss diff| {worst['loss']:.2g}, max |weight diff| {worst['p']:.2g}, max rel. m/v error "
          f"{worst['m']:.2g}/{worst['v']:.2g}")
    check(f"prototype reset ({label}): m and v are exactly 0 in the checkpoint right after every sync step "
          f"({', '.join(str(t) for t in range(K, STEPS + 1, K))}); the optimizer step keeps counting",
          zero_after_sync and [o["step"] for o in got] == list(range(1, STEPS + 1)))
    check(f"prototype reset ({label}): the run differs from --inner-state keep (plain Lookahead reference)",
          away > 1e-4, f"max loss difference to keep: {away:.3g}")


def zero_pattern(directory, steps, schedule_):
    """Run `steps` steps; -> [t for which m and v are all exactly 0 after step t]."""
    lp, zeros = loop(directory, "adamw"), []
    for t, b in enumerate(schedule_[:steps], 1):
        lp.step(b)
        st = moments(lp)[0]
        if not any(np.any(x) for s_ in st.values() for x in s_.values()):
            zeros.append(t)
    return zeros


# An input checkpoint that already holds optimizer state (step s0 = 2): the rewrite bakes step0 = s0
# so that the optimizer's clock and the Lookahead counter (which starts at 0) agree.
d = copy_artifacts(AD)
lp = loop(d, "adamw")
for b in schedule[:2]:
    lp.step(b)
lp.save(d / "checkpoint")
la = tmpdir("proto_step0_") / "artifacts"
onnx_lookahead.rewrite(d, la, k=K, alpha=ALPHA)
s0 = read_checkpoint(la / "checkpoint")["groups"][0]["step"]
reset_optimizer(la, K, True, step0=s0)
zeros = zero_pattern(la, 7, schedule[2:])
check(f"prototype reset: a checkpoint with optimizer step {s0} (baked in as step0) resets after the "
      "3rd and 6th step after the rewrite, with the Lookahead syncs", zeros == [3, 6], f"zero after {zeros}")

# The emitted nodes need no particular opset: artifacts of an opset-13 model.
import lookahead_testkit.model as testkit_model  # noqa: E402
testkit_model.OPSET = 13
AD13 = artifacts("adamw")
la = tmpdir("proto_opset13_") / "artifacts"
onnx_lookahead.rewrite(AD13, la, k=K, alpha=ALPHA)
reset_optimizer(la, K, True)
opset = {o.domain: o.version for o in onnx.load(la / "optimizer_model.onnx").opset_import}[""]
zeros = zero_pattern(la, 7, schedule)
check("prototype reset: the same patch works on opset-13 artifacts (optimizer model's default opset "
      f"{opset}, unchanged)", zeros == [3, 6], f"zero after {zeros}")
finish()
