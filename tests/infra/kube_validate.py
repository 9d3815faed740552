"""Run by .venv-infra's Python, not collected by pytest: validates Kubernetes objects against the OpenAPI schemas
that kubernetes-validate ships (offline, strict: unknown fields are errors).

    .venv-infra/bin/python tests/infra/kube_validate.py < {"version": "1.33.0", "objects": [...]}

Prints a JSON list, one entry per object: {"kind", "name", "status": "ok" | "invalid" | "no-schema", "message"}.
"""

import json
import sys

import kubernetes_validate


def main() -> None:
    request = json.load(sys.stdin)
    results = []
    for obj in request["objects"]:
        entry = {"kind": obj.get("kind"), "name": obj.get("metadata", {}).get("name"), "status": "ok", "message": ""}
        try:
            kubernetes_validate.validate(obj, request["version"], strict=True)
        except kubernetes_validate.SchemaNotFoundError as exc:
            entry.update(status="no-schema", message=str(exc))
        except kubernetes_validate.ValidationError as exc:
            entry.update(status="invalid", message=f"{'/'.join(map(str, exc.path))}: {exc.message}")
        results.append(entry)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
