"""Q2: can the OPTIMIZER model, inputs unchanged, change the moments beyond what its AdamWOptimizer
node computes, so that the change persists in the checkpoint?

Every variant below edits only nodes/initializers/outputs of optimizer_model.onnx (its six inputs
stay as generated) and runs ONE step of the stock loop next to the unmodified artifacts; the
moments are read from the checkpoint saved with include_optimizer_state=True.

  Q2a  standard ops after the optimizer node: SequenceAt(moments, i) -> InPlaceAccumulatorV2
       (overwrite with zeros) for every i, directly and through Identity/SequenceErase (which share
       the element buffers): the write lands in a copy, the saved moments are untouched
  Q2b  a second AdamWOptimizer node:
       b1 in the main graph: ORT refuses the optimizer model (one optimizer node per graph)
       b2 inside If(then), with alpha=beta=0, lr=0, zero weights/gradients, fed the outer-scope
          moment sequences: it writes 0 into the checkpoint's m and v in place, exactly; the weights
          and the step counter are exactly as without it
       b3 the same If with a false condition: moments bitwise equal to the unmodified run
       b4 the same node as a general in-place lerp: m <- a*m + (1-a)*Y (here Y = 0, a = 0.25), with
          a throwaway zero sequence in v's slot so v is untouched: exact
       b5 zeroing without a zero sequence: an If-AdamWOptimizer with alpha=beta=1, lr=1,
          weight_decay=1, correct_bias=0 and m in its WEIGHTS slot ends with m' - 1*1*m' = 0 exactly
          and leaves its moment slots (v, v) as they are: what prototype_reset.py emits
  Q2c  no second node, only the main node's gradient input replaced by g' = -b1*m/(1-b1), which
       makes m' = b1*m + (1-b1)*g' ~ 0: not exact, v' is not zero, and the step's real gradient is lost
"""
from common import *  # noqa: F403

AD = artifacts("adamw")
STEP1 = batches(1)[0]
B1 = 0.9  # generate_artifacts' AdamW alpha (beta1)

base = loop(AD, "adamw")
base.step(STEP1)
M0, STEP0 = moments(base)
W0 = {n: base.parameter(n) for n in SPEC.trainable}


def run(build):
    """One stock-loop step on a copy of AD whose optimizer model `build` patched."""
    lp = loop(patch_optimizer(copy_artifacts(AD), build), "adamw")
    lp.step(STEP1)
    st, step = moments(lp)
    return st, step, {n: lp.parameter(n) for n in SPEC.trainable}


def same(a, b):
    return all(np.array_equal(a[p][s], b[p][s]) for p in a for s in a[p])


def maxabs(st, s):
    return max(float(np.abs(v[s]).max()) for v in st.values())


def branch(name, nodes, out, initializers=()):
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(out, TensorProto.BOOL, None)],
                             list(initializers))


# -- Q2a: in-place writes into elements taken out of the moment sequences -------------------------
def via(share_op):
    def build(g, node):
        src = "first_order_moments"
        if share_op == "Identity":
            g.node.append(helper.make_node("Identity", [src], ["shared"])); src = "shared"
        elif share_op == "SequenceErase":  # insert one tensor at the end and erase it again
            g.node.append(helper.make_node("SequenceInsert", [src, "zeros_sentinel"], ["ins"]))
            g.node.append(helper.make_node("SequenceErase", ["ins"], ["shared"])); src = "shared"
            const(g, "zeros_sentinel", np.zeros(1, np.float32))
        flags = []
        for i in range(len(SPEC.trainable)):
            idx = const(g, f"i{i}", np.int64(i))
            g.node.extend([helper.make_node("SequenceAt", [src, idx], [f"e{i}"]),
                       helper.make_node("Shape", [f"e{i}"], [f"s{i}"]),
                       helper.make_node("ConstantOfShape", [f"s{i}"], [f"z{i}"],
                                        value=numpy_helper.from_array(np.zeros(1, np.float32))),
                       helper.make_node("InPlaceAccumulatorV2", [f"e{i}", f"z{i}", "flag0"], [f"w{i}"],
                                        domain=MS)])
            flags.append(f"w{i}")
        return flags
    return build


for share_op in ("SequenceAt", "Identity", "SequenceErase"):
    st, step, _ = run(via(share_op))
    check(f"Q2a InPlaceAccumulatorV2(overwrite=0) on every SequenceAt element ({share_op} path) "
          "does not reach the saved moments", same(st, M0) and step == STEP0,
          f"saved m bitwise equal to the unmodified run: {same(st, M0)}; max|m| {maxabs(st, 'momentum0'):.3g}")

# -- Q2b1: two optimizer nodes in the main graph ---------------------------------------------------
def second_main(g, node):
    g.node.append(zeros_like_seq("first_order_moments", "Z"))
    g.node.append(adamw_node([const(g, "lr0", np.zeros(1, np.float32)), "step", "Z", "Z",
                              "first_order_moments", "second_order_moments"], "f2", 0.0, 0.0))
    return ["f2"]


err = error_of(lambda: run(second_main))
check("Q2b1 a second AdamWOptimizer in the main graph is refused", err is not None, f"error: {err!r}")


# -- Q2b2/3: the second node inside an If -----------------------------------------------------------
def reset_if(cond_value: bool):
    def build(g, node):
        g.node.append(zeros_like_seq("first_order_moments", "Z"))
        cond = const(g, "cond", np.array([cond_value]))
        g.node.append(helper.make_node("And", ["flag0", cond], ["sync"]))  # after the main node
        then = branch("reset", [adamw_node(["lr0", "step", "Z", "Z", "first_order_moments",
                                            "second_order_moments"], "f2", 0.0, 0.0)], "f2",
                      [numpy_helper.from_array(np.zeros(1, np.float32), "lr0")])
        other = branch("keep", [helper.make_node("Identity", ["flag0"], ["f3"])], "f3")
        g.node.append(helper.make_node("If", ["sync"], ["fi"], then_branch=then, else_branch=other))
        return [_or_not(g, "fi", "sync")]
    return build


def _or_not(g, flag, cond):
    """flag OR NOT cond: true on the else path too (the If's else output is flag0 itself)."""
    g.node.extend([helper.make_node("Not", [cond], [cond + "_n"]),
                   helper.make_node("Or", [flag, cond + "_n"], [flag + "_ok"])])
    return flag + "_ok"


st, step, w = run(reset_if(True))
zero = all(not np.any(v[s]) for v in st.values() for s in v)
check("Q2b2 AdamWOptimizer inside If (alpha=beta=0, lr=0, zero weights/gradients) sets the saved m and v "
      "to exactly 0; weights and step counter bitwise as without it",
      zero and step == STEP0 and all(np.array_equal(w[n], W0[n]) for n in w),
      f"max|m| {maxabs(st, 'momentum0')}, max|v| {maxabs(st, 'momentum1')} (unmodified run: "
      f"{maxabs(M0, 'momentum0'):.3g}, {maxabs(M0, 'momentum1'):.3g}); step {step} (unmodified {STEP0}); "
      f"weights equal: {all(np.array_equal(w[n], W0[n]) for n in w)}")
st, step, w = run(reset_if(False))
check("Q2b3 the same If with a false condition leaves m and v bitwise as the unmodified run",
      same(st, M0) and step == STEP0 and all(np.array_equal(w[n], W0[n]) for n in w))


# -- Q2b4: in-place lerp m <- a*m + (1-a)*Y on the outer moment sequence ----------------------------
A = 0.25


def lerp_if(g, node):
    g.node.append(zeros_like_seq("first_order_moments", "Z"))
    g.node.append(zeros_like_seq("first_order_moments", "Zv"))
    then = branch("lerp", [adamw_node(["lr0", "step", "Z", "Z", "first_order_moments", "Zv"], "f2",
                                      A, 0.0, correct_bias=0)], "f2",
                  [numpy_helper.from_array(np.zeros(1, np.float32), "lr0")])
    other = branch("keep", [helper.make_node("Identity", ["flag0"], ["f3"])], "f3")
    g.node.append(helper.make_node("If", ["flag0"], ["fi"], then_branch=then, else_branch=other))
    return ["fi"]


st, step, w = run(lerp_if)
expect = {p: np.float32(A) * M0[p]["momentum0"] + np.float32(1 - A) * np.float32(0) for p in M0}
check(f"Q2b4 the If-AdamWOptimizer as an in-place lerp: m <- {A}*m + {1 - A}*0 exactly, v untouched",
      all(np.array_equal(st[p]["momentum0"], expect[p]) and np.array_equal(st[p]["momentum1"], M0[p]["momentum1"])
          for p in st) and all(np.array_equal(w[n], W0[n]) for n in w))


# -- Q2b5: zeroing m through the weights slot (no zero sequence, no allocation) --------------------
def zero_via_weights_slot(g, node):
    then = branch("zero_m", [adamw_node(["lr1", "step", "first_order_moments", "gradients",
                                         "second_order_moments", "second_order_moments"], "f2",
                                        1.0, 1.0, weight_decay=1.0, correct_bias=0)], "f2",
                  [numpy_helper.from_array(np.ones(1, np.float32), "lr1")])
    other = branch("keep", [helper.make_node("Identity", ["flag0"], ["f3"])], "f3")
    g.node.append(helper.make_node("If", ["flag0"], ["fi"], then_branch=then, else_branch=other))
    return ["fi"]


st, step, w = run(zero_via_weights_slot)
check("Q2b5 AdamWOptimizer[alpha=beta=1, lr=1, weight_decay=1] with m in its weights slot sets m to "
      "exactly 0 and leaves v and the weights bitwise as without it",
      all(not np.any(st[p]["momentum0"]) and np.array_equal(st[p]["momentum1"], M0[p]["momentum1"]) for p in st)
      and step == STEP0 and all(np.array_equal(w[n], W0[n]) for n in w),
      f"max|m| {maxabs(st, 'momentum0')}; v equal to the unmodified run: "
      f"{all(np.array_equal(st[p]['momentum1'], M0[p]['momentum1']) for p in st)}")


# -- Q2c: zeroing m through the main node's gradient input ------------------------------------------
def fake_grad(g, node):
    body = helper.make_graph([helper.make_node("Mul", ["x", "c"], ["y"])], "neg", 
                             [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                             [numpy_helper.from_array(np.array(-B1 / (1 - B1), np.float32), "c")])
    g.node.append(helper.make_node("SequenceMap", ["first_order_moments"], ["gfake"], body=body))
    node.input[3] = "gfake"
    return []


# Step 2 of the patched run starts from the unmodified step-1 state (saved with the moments).
ck1 = copy_artifacts(AD)
base.save(ck1 / "checkpoint")
m_before = moments(base)[0]
lp = loop(patch_optimizer(ck1, fake_grad), "adamw")
lp.step(batches(2)[1])
st, _ = moments(lp)
resid = max(float(np.abs(st[p]["momentum0"]).max() / np.abs(m_before[p]["momentum0"]).max()) for p in st)
check("Q2c feeding g' = -b1*m/(1-b1) does NOT give an exact reset: m' is only ~0, v' stays > 0, and "
      "the step's real gradient never reaches the optimizer",
      resid > 0 and maxabs(st, "momentum1") > 0,
      f"max |m'|/|m| = {resid:.3g} (not 0), max v' = {maxabs(st, 'momentum1'):.3g}")
finish()
