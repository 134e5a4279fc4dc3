"""Validates docs/openapi/*.json with openapi-spec-validator (an implementation that is not
ours, from PyPI), then checks that it still refuses a broken copy, so a pass means something.
Run by scripts/test.sh in its Python venv."""

import json
import pathlib
import sys

from openapi_spec_validator import validate

docs = sorted((pathlib.Path(__file__).parent.parent / "docs" / "openapi").glob("*.json"))
names = [d.stem for d in docs]
if names != ["core", "hub-control", "hub-data", "relay"]:
    sys.exit(f"docs/openapi holds {names}, expected core, hub-control, hub-data, relay")

for doc in docs:
    spec = json.loads(doc.read_text())
    if spec.get("openapi") != "3.1.0":
        sys.exit(f"{doc.name}: not OpenAPI 3.1.0")
    validate(spec)
    ops = sum(len(item) for item in spec["paths"].values())
    print(f"{doc.name}: valid OpenAPI 3.1 ({ops} operations, {len(spec['components']['schemas'])} schemas)")

# Negative controls: a path parameter no operation declares, a parameter in a place that does
# not exist. (It does not resolve every $ref: the crate's own test checks those.)
for what, breaks in [
    ("an undeclared path parameter", lambda op: op.pop("parameters")),
    ("a parameter in the body", lambda op: op["parameters"][0].update({"in": "body"})),
]:
    broken = json.loads((docs[2]).read_text())
    breaks(broken["paths"]["/v1/jobs/{id}"]["get"])
    try:
        validate(broken)
    except Exception:  # OpenAPIValidationError or the unresolved-parameter error
        continue
    sys.exit(f"openapi-spec-validator accepted {what}")
print("the validator refuses broken documents")
