"""Q1: can the training (or eval) graph reach the optimizer's moments?

The Module feeds a training/eval graph input only if it names a checkpoint parameter (module
state), a `<param>_grad.accumulation.buffer` or `lazy_reset_grad`; everything else is a user input.
The moments live in the checkpoint's optimizer groups, keyed (group, parameter, state name).

  Q1a  how ORT names the moments in a saved checkpoint (group0 / W1 / momentum0, momentum1)
  Q1b  a training-graph input named after a moment ("W1.momentum0", "momentum0", ...) is a user
       input: the stock loop's module(x, target) fails, ORT never feeds it
  Q1c  the same for the eval graph
  Q1d  a frozen checkpoint parameter whose bytes are the moment's bytes in the file (the format
       allows shared vectors) is a copy after loading: it does not follow the moment while training
"""
from common import *  # noqa: F403

AD = artifacts("adamw")
lp = loop(AD, "adamw")
for b in batches(2):
    lp.step(b)
ck = saved(lp)
group = ck["groups"][0]
check("Q1a moments are saved as optimizer group 'group0', per trainable parameter, states "
      "'momentum0' (m) and 'momentum1' (v); no module-state tensor carries them",
      group["name"] == "group0" and all(set(s) == {"momentum0", "momentum1"} for s in group["states"].values())
      and set(group["states"]) == set(SPEC.trainable) and not (set(ck["frozen"]) & {"momentum0", "momentum1"}),
      f"group {group['name']!r}, step {group['step']}, states {sorted(group['states']['W1'])} for "
      f"{sorted(group['states'])}")


def with_extra_input(path, name, shape, out_dir):
    """Copy of the model at `path` with a float input `name` added to its loss (times 0)."""
    m = onnx.load(path)
    loss = m.graph.output[0].name
    m.graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
    for node in m.graph.node:  # rename the loss's producer output, then loss = loss0 + 0*sum(extra)
        node.output[:] = [o if o != loss else "q1__loss0" for o in node.output]
    zero = numpy_helper.from_array(np.zeros((), np.float32), "q1__zero")
    m.graph.initializer.append(zero)
    m.graph.node.extend([helper.make_node("ReduceSum", [name], ["q1__s"], keepdims=0),
                         helper.make_node("Mul", ["q1__s", "q1__zero"], ["q1__z"]),
                         helper.make_node("Add", ["q1__loss0", "q1__z"], [loss])])
    onnx.checker.check_model(m)
    onnx.save(m, out_dir / Path(path).name)


x, target = batches(1)[0][0]
for which in ("training", "eval"):
    fed = []
    for name in ("W1.momentum0", "momentum0", "W1_momentum0", "group0.W1.momentum0"):
        d = tmpdir("q1_")
        for f in ("training_model.onnx", "eval_model.onnx", "optimizer_model.onnx"):
            if f.startswith(which):
                with_extra_input(AD / f, name, (4, 8), d)
            else:
                onnx.save(onnx.load(AD / f), d / f)
        lp2 = loop(d, "adamw", checkpoint=AD / "checkpoint")
        if which == "eval":
            lp2.module.eval()
        err = error_of(lambda: lp2.module(x, target))
        # Feeding it ourselves works: it is a user input like x and target.
        ok_as_user = error_of(lambda: lp2.module(x, target, np.ones((4, 8), np.float32))) is None
        fed.append((name, err, ok_as_user))
    q = "Q1b" if which == "training" else "Q1c"
    check(f"{q} {which}-graph inputs named after a moment are user inputs, never fed by ORT",
          all(err is not None and ok for _, err, ok in fed),
          "\n        ".join(f"{n!r}: module(x, target) -> {err!r}; module(x, target, extra) ok: {ok}"
                            for n, err, ok in fed))

# Q1d: a frozen parameter sharing the bytes of W1's momentum0 in the checkpoint file.
d = tmpdir("q1d_")
for f in ("training_model.onnx", "eval_model.onnx", "optimizer_model.onnx"):
    onnx.save(onnx.load(AD / f), d / f)
ck["frozen"]["q1__m_W1"] = group["states"]["W1"]["momentum0"]
write_checkpoint(d / "checkpoint", ck, shared={("frozen", "q1__m_W1"): (("state", "W1"), "momentum0")})
raw = (d / "checkpoint").read_bytes()
m_bytes = group["states"]["W1"]["momentum0"].tobytes()
lp3 = loop(d, "adamw")
before = np.array(lp3.state.parameters["q1__m_W1"].data)
for b in batches(3, seed=5):
    lp3.step(b)
m_after = moments(lp3)[0]["W1"]["momentum0"]
alias = np.array(lp3.state.parameters["q1__m_W1"].data)
check("Q1d a frozen parameter stored on the moment's bytes loads as an independent copy: it keeps "
      "its loaded value while the moment changes",
      raw.count(m_bytes) == 1 and np.array_equal(alias, before) and not np.array_equal(alias, m_after),
      f"moment bytes occur {raw.count(m_bytes)}x in the file; after 3 steps: frozen copy unchanged "
      f"{np.array_equal(alias, before)}, max |moment - frozen| = {np.abs(m_after - alias).max():.3g}")
finish()
