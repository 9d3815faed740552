"""Run by .venv-infra's Python (python-hcl2 first on PYTHONPATH), not collected by pytest.

    PYTHONPATH=.venv-infra/python-hcl2 .venv-infra/bin/python tests/infra/hcl_parse.py FILE...

Prints one JSON object: {"parsed": {file: HCL as JSON}, "errors": {file: "ExceptionType: message"}}.
Strings lose their quotes; blocks are plain dicts (python-hcl2's SerializationOptions).
"""

import json
import sys

import hcl2

OPTIONS = hcl2.SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)


def main(paths: list[str]) -> None:
    parsed, errors = {}, {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                parsed[path] = hcl2.load(f, serialization_options=OPTIONS)
        except Exception as exc:  # noqa: BLE001 — every parse failure is collected and reported per file
            errors[path] = f"{type(exc).__name__}: {exc}"
    json.dump({"parsed": parsed, "errors": errors}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
