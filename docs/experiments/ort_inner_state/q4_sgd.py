"""Q4: does ORT's SGD (SGDOptimizerV2 from generate_artifacts) keep any inner state that affects
training? If not, --inner-state reset and pullback are the same as keep for SGD artifacts.

  Q4a  the optimizer model's SGDOptimizerV2 reads learning_rate, params and gradients only; the
       graph input first_order_moments has no consumer
  Q4b  the checkpoint still carries a 'momentum0' per parameter; overwriting it with 1000.0 changes
       nothing: training is bitwise identical and the saved momentum0 is never written
"""
from common import *  # noqa: F403

SD = artifacts("sgd")
g = onnx.load(SD / "optimizer_model.onnx").graph
consumed = {i for n in g.node for i in n.input}
sgd = [n for n in g.node if n.domain == MS]
check("Q4a SGDOptimizerV2 reads (learning_rate, params, gradients); first_order_moments has no consumer",
      [n.op_type for n in sgd] == ["SGDOptimizerV2"] and list(sgd[0].input) == ["learning_rate", "params", "gradients"]
      and "first_order_moments" not in consumed and "first_order_moments" in [i.name for i in g.input],
      f"inputs {[i.name for i in g.input]}; node {sgd[0].op_type}({', '.join(sgd[0].input)})")

B = batches(4)
base = loop(SD, "sgd")
base.step(B[0])
ck = saved(base)
names = {p: sorted(s) for p, s in ck["groups"][0]["states"].items()}
for s in ck["groups"][0]["states"].values():
    s["momentum0"] = np.full_like(s["momentum0"], 1000.0)
d = copy_artifacts(SD)
write_checkpoint(d / "checkpoint", ck)
garbage, ref = loop(d, "sgd"), loop(copy_artifacts(SD), "sgd")
ref.step(B[0])
for b in B[1:]:
    garbage.step(b); ref.step(b)
same = all(np.array_equal(garbage.parameter(n), ref.parameter(n)) for n in SPEC.trainable)
kept = all(np.all(s["momentum0"] == 1000.0) for s in saved(garbage)["groups"][0]["states"].values())
check("Q4b SGD's checkpoint momentum0 (one per parameter) never affects training and is never written",
      same and kept, f"states {names['W1']} per parameter; weights after 3 more steps bitwise equal: {same}; "
      f"momentum0 still 1000.0 everywhere: {kept}")
finish()
