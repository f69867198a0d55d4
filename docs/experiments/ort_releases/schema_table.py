"""dump_schemas.py's JSON lines (stdin) as src/compat/data/onnx-schemas.txt: per operator, the
opset versions at which its schema changed (`!V`: deprecated from V on), which is what resolving a
node to its schema version at a given opset needs."""
import json
import sys

versions: dict[tuple[str, str], list[str]] = {}
for line in sys.stdin:
    if line.startswith("#"):
        print(line.rstrip())
        continue
    s = json.loads(line)
    key = (s["domain"] or "ai.onnx", s["name"])
    versions.setdefault(key, []).append(("!" if s["deprecated"] else "") + str(s["since"]))
print("# <domain> <operator> <opset versions where its schema changed; !V: deprecated from V>")
for (domain, name), vs in sorted(versions.items()):
    print(domain, name, " ".join(vs))
