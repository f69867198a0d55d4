"""The ONNX operator schemas of the installed onnx, one JSON object per line (every version of
every operator of ai.onnx, ai.onnx.ml and ai.onnx.preview.training): the input of
probe_release.py and of src/compat/data/onnx-schemas.txt (see make_tables.sh)."""
import json

import onnx
import onnx.defs

OPTION = {0: "single", 1: "optional", 2: "variadic"}
print(f"# onnx {onnx.__version__}")
for s in sorted(onnx.defs.get_all_schemas_with_history(), key=lambda s: (s.domain, s.name, s.since_version)):
    if s.domain not in ("", "ai.onnx.ml", "ai.onnx.preview.training"):
        continue
    print(json.dumps({
        "domain": s.domain, "name": s.name, "since": s.since_version, "deprecated": bool(s.deprecated),
        "inputs": [{"type": i.type_str, "option": OPTION[int(i.option.value)]} for i in s.inputs],
        "outputs": [{"type": o.type_str} for o in s.outputs],
        "constraints": [{"name": c.type_param_str, "types": list(c.allowed_type_strs)} for c in s.type_constraints],
        "attributes": [{"name": n, "type": str(a.type).split(".")[-1], "required": bool(a.required)}
                       for n, a in sorted(s.attributes.items())],
    }))
