#!/usr/bin/env bash
# Validates every shipped policy document against policies/schema.json with check-jsonschema.
# check-jsonschema reads one document per file, so multi-document files are split first.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work" <<'PY'
import pathlib, re, sys
out = pathlib.Path(sys.argv[1])
n = 0
for f in sorted(pathlib.Path("policies").rglob("*.y*ml")):
    for i, doc in enumerate(re.split(r"(?m)^---\s*$", f.read_text())):
        if any(l.strip() and not l.strip().startswith("#") for l in doc.splitlines()):
            (out / f"{f.stem}-{i}.yaml").write_text(doc)
            n += 1
print(f"check-schema: {n} documents")
PY
check-jsonschema --schemafile policies/schema.json "$work"/*.yaml
