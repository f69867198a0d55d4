"""Q3: where could pullback's m_cached (the momentum saved at the previous sync) live?

Pullback must compute m <- alpha*m + (1-alpha)*m_cached at each sync; only the optimizer model can
write m (Q1, Q2), so m_cached has to be readable by the optimizer model at the sync step and
survive from one sync to the next (and a save/resume). The optimizer model's inputs are fixed:
learning_rate, step, params, gradients, first_order_moments, second_order_moments. A bool computed
in the optimizer model is observable from outside: the loop's step counter (saved in the
checkpoint) advances only if the model's output flag is true.

  Q3a  frozen checkpoint parameters (where Lookahead keeps its slow weights) are not in the
       optimizer's sequences: they hold exactly the trainable parameters
  Q3b  an extra per-parameter optimizer state ("momentum2") written into the checkpoint is loaded
       and saved back, but no graph ever sees it (the optimizer inputs are fixed)
  Q3c  the gradient buffers: the optimizer model CAN write them (an If-AdamWOptimizer copies m
       into them, visible as Parameter.grad after step()), but the next forward overwrites them
       with the new gradient, and at the sync step they carry that step's gradient: a mailbox from
       the optimizer to the training graph, not a store and not a way back
  Q3d  an optimizer-model initializer written in place keeps its value across steps of one
       session, but it is not in the checkpoint: a resumed run starts again from the file's bytes
  Q3e  an extra TRAINABLE checkpoint parameter does join the sequences, but AdamW then updates it
       (weight decay shrinks it even with a zero gradient) and it becomes a user-visible trainable
       parameter
"""
import onnx_lookahead

from common import *  # noqa: F403

AD = artifacts("adamw")
N = len(SPEC.trainable)
B = batches(4)


def seq_len_is(n):
    """Optimizer-model patch: the output flag is true only if len(params) == n."""
    def build(g, node):
        g.node.extend([helper.make_node("SequenceLength", ["params"], ["len"]),
                       helper.make_node("Equal", ["len", const(g, "n", np.int64(n))], ["len_ok"]),
                       helper.make_node("Unsqueeze", ["len_ok", const(g, "ax", np.array([0]))], ["len_ok1"])])
        return ["len_ok1"]
    return build


# -- Q3a: frozen parameters (the real Lookahead rewrite: slow weights + counter) -------------------
la = tmpdir("q3a_") / "artifacts"
onnx_lookahead.rewrite(AD, la, k=3, alpha=0.5)
frozen = sorted(read_checkpoint(la / "checkpoint")["frozen"])
steps = {}
for n in (N, N + len(frozen)):
    lp = loop(patch_optimizer(copy_artifacts(la), seq_len_is(n)), "adamw")
    lp.step(B[0])
    steps[n] = moments(lp)[1]
check(f"Q3a with {len(frozen)} frozen parameters in the checkpoint ({', '.join(frozen[:2])}, ...), the "
      f"optimizer's params sequence holds exactly the {N} trainable ones",
      steps == {N: 1, N + len(frozen): 0}, f"step counter after one step with the flag 'len == n': {steps}")

# -- Q3b: an extra optimizer state in the checkpoint ------------------------------------------------
base = loop(AD, "adamw")
base.step(B[0])
ck = saved(base)
ck["groups"][0]["states"]["W1"]["momentum2"] = np.full((4, 8), 7.0, np.float32)
d = copy_artifacts(AD)
write_checkpoint(d / "checkpoint", ck)
lp, ref = loop(d, "adamw"), loop(AD, "adamw")
ref.step(B[0])
for b in B[1:]:
    lp.step(b); ref.step(b)
after = saved(lp)["groups"][0]["states"]["W1"]
same_run = all(np.array_equal(lp.parameter(n), ref.parameter(n)) for n in SPEC.trainable)
check("Q3b an extra optimizer state 'momentum2' loads and is saved back unchanged, and training is "
      "bitwise as without it (nothing reads or writes it)",
      "momentum2" in after and np.all(after["momentum2"] == 7.0) and same_run,
      f"saved states for W1: {sorted(after)}; momentum2 still 7.0: {bool(np.all(after.get('momentum2', 0) == 7.0))}; "
      f"weights equal to the run without it: {same_run}")


# -- Q3c: the gradient buffers as a mailbox -----------------------------------------------------------
def m_into_grads(g, node):
    then = helper.make_graph(
        [zeros_like_seq("first_order_moments", "Z"),
         adamw_node(["lr0", "step", "Z", "first_order_moments", "gradients", "Z"], "f2", 0.0, 0.0,
                    correct_bias=0)],
        "copy_m", [], [helper.make_tensor_value_info("f2", TensorProto.BOOL, None)],
        [numpy_helper.from_array(np.zeros(1, np.float32), "lr0")])
    other = helper.make_graph([helper.make_node("Identity", ["flag0"], ["f3"])], "keep", [],
                              [helper.make_tensor_value_info("f3", TensorProto.BOOL, None)])
    g.node.append(helper.make_node("If", ["flag0"], ["fi"], then_branch=then, else_branch=other))
    return ["fi"]


lp = loop(patch_optimizer(copy_artifacts(AD), m_into_grads), "adamw")
ref = loop(AD, "adamw")
grad_is_m = True
for b in B[:2]:
    lp.module(*b[0]); ref.module(*b[0])
    lp.optimizer.step(); ref.optimizer.step()
    m = moments(lp)[0]
    grad_is_m &= all(np.array_equal(np.array(lp.state.parameters[n].grad), m[n]["momentum0"]) for n in SPEC.trainable)
    lp.module.lazy_reset_grad(); ref.module.lazy_reset_grad()
lp.module(*B[2][0]); ref.module(*B[2][0])
fresh = all(np.array_equal(np.array(lp.state.parameters[n].grad), np.array(ref.state.parameters[n].grad))
            for n in SPEC.trainable)
check("Q3c the optimizer model can write m into the gradient buffers (Parameter.grad == m after "
      "step()), but the next forward replaces them with the new gradient",
      grad_is_m and fresh, f"grad == m after step(): {grad_is_m}; grad after the next forward == the "
      f"unmodified run's gradient: {fresh}")


# -- Q3d: an optimizer-model initializer written in place ----------------------------------------------
def counter_initializer(g, node):
    g.node.extend([
        helper.make_node("InPlaceAccumulatorV2", [const(g, "q3d_count", np.zeros(1, np.float32)),
                                                  const(g, "one", np.ones(1, np.float32))],
                         ["q3d_flag", "q3d_value"], domain=MS),
        helper.make_node("Less", ["q3d_value", const(g, "limit", np.array([2.5], np.float32))], ["below"])])
    return ["q3d_flag", "below"]


d = patch_optimizer(copy_artifacts(AD), counter_initializer)
lp = loop(d, "adamw")
for b in B:
    lp.step(b)
step_same_session = moments(lp)[1]  # count = 1, 2, 3, 4 -> flag true only at 1 and 2
lp.save(d / "resumed")
lp2 = loop(d, "adamw", checkpoint=d / "resumed")
lp2.step(B[0])
step_resumed = moments(lp2)[1]  # 3 if the count restarted from the file's 0 (1 < 2.5), else 2
names = set(read_checkpoint(d / "resumed")["frozen"]) | set(read_checkpoint(d / "resumed")["trainable"])
check("Q3d an initializer written in place persists across steps of one session only: it is not "
      "saved, and a resumed session starts from the model file's value",
      step_same_session == 2 and step_resumed == 3 and "q3d_count" not in names,
      f"optimizer step after 4 steps with 'count < 2.5': {step_same_session}; after resuming and one more "
      f"step: {step_resumed}; checkpoint tensors: {sorted(names)}")


# -- Q3e: an extra trainable parameter ------------------------------------------------------------------
def with_cache_param(directory):
    """Training graph takes q3e_cache (4x8, trainable) and writes a zero gradient for it."""
    path = directory / "training_model.onnx"
    m = onnx.load(path)
    g = m.graph
    loss = g.output[0].name
    for node in g.node:
        node.output[:] = [o if o != loss else "q3e_loss0" for o in node.output]
    buf = "q3e_cache_grad.accumulation.buffer"
    g.input.insert(len(g.input) - 1, helper.make_tensor_value_info("q3e_cache", TensorProto.FLOAT, [4, 8]))
    g.input.insert(len(g.input) - 1, helper.make_tensor_value_info(buf, TensorProto.FLOAT, [4, 8]))
    const(g, "q3e_zero", np.zeros((), np.float32))
    const(g, "q3e_zeros", np.zeros((4, 8), np.float32))
    g.node.extend([helper.make_node("ReduceSum", ["q3e_cache"], ["q3e_s"], keepdims=0),
                   helper.make_node("Mul", ["q3e_s", "q3e_zero"], ["q3e_z"]),
                   helper.make_node("Add", ["q3e_loss0", "q3e_z"], [loss]),
                   helper.make_node("InPlaceAccumulatorV2", [buf, "q3e_zeros", "lazy_reset_grad"],
                                    ["q3e_cache_grad.accumulation.out"], domain=MS)])
    g.output.append(helper.make_tensor_value_info("q3e_cache_grad.accumulation.out", TensorProto.BOOL, [1]))
    onnx.save(m, path)
    ck = read_checkpoint(directory / "checkpoint")
    ck["trainable"]["q3e_cache"] = np.ones((4, 8), np.float32)
    write_checkpoint(directory / "checkpoint", ck)
    return directory


d = patch_optimizer(with_cache_param(copy_artifacts(AD)), seq_len_is(N + 1))
lp = loop(d, "adamw")
for b in B[:3]:
    lp.step(b)
cache = lp.parameter("q3e_cache")
size = lp.module.get_parameters_size(trainable_only=True)
check("Q3e an extra trainable parameter joins the sequences (len == N+1) but AdamW changes it "
      "(zero gradient, weight decay) and it counts as a model parameter",
      moments(lp)[1] == 3 and not np.all(cache == 1.0) and size == SPEC.n_params + 32,
      f"optimizer step {moments(lp)[1]} (flag 'len == {N + 1}'); cache after 3 steps {float(cache.flat[0])!r} "
      f"(stored 1.0); trainable parameter size {size} (model: {SPEC.n_params})")
finish()
