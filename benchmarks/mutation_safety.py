"""Mutation testing of the safety code against its own tests: prints, per module, mutants generated / killed /
survived, each survivor's place and mutation, and the kill ratio. Nothing is asserted (a benchmark).

Tool: mutmut 3 (pinned in the dev extras). mutmut copies the source into `mutants/` beside the config it reads, so
each module runs in a throw-away copy of the working tree under a temporary directory (the checkout itself is never
mutated: others may be running its tests): the copy gets a `[tool.mutmut]` section naming the module's file and
its test files, and `mutmut run` is called there with the module's functions as mutant-name patterns. mutmut
records which of those tests reach each function and runs only them per mutant (`-n 0 -p no:cacheprovider`), one
mutant at a time (`--max-children`, default 1: the machine is shared).

Status words are mutmut's: killed (a test failed), survived (every test passed), no tests (no selected test reaches
the function), timeout, suspicious. Kill ratio = (killed + timeout) / mutants tried.

    .venv/bin/python benchmarks/mutation_safety.py                       # every module (20-40 min on 2 cores)
    .venv/bin/python benchmarks/mutation_safety.py --modules gates qa    # a partial run
    .venv/bin/python benchmarks/mutation_safety.py --modules auth --max-mutants 20
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTMUT = Path(sys.executable).parent / "mutmut"
# Not copied: virtual environments, git, run outputs (large) and caches; `data/` is linked, not copied.
PACKAGES = ("model_core", "registry", "regulatory", "serving", "monitoring", "components", "pipelines", "rrg",
            "auditors")
_SKIP_TOP = {".git", "runs", "mlruns", "data", "mutants", ".ruff_cache", ".import_linter_cache", ".pytest_cache"}


@dataclass(frozen=True)
class SafetyModule:
    file: str                    # the source file mutated (repository-relative)
    functions: tuple[str, ...]   # mutmut function keys: x_<function> or xǁ<Class>ǁ<method>
    tests: tuple[str, ...]       # the test files that guard it


MODULES = {
    "gates": SafetyModule("model_core/evaluation/gates.py", ("x_gate_decision", "x__fmt"),
                          ("tests/model_core/evaluation/test_gates.py",
                           "tests/model_core/evaluation/test_gate_boundaries.py",
                           "tests/model_core/evaluation/test_gates_mutants.py")),
    "critical_detection": SafetyModule("model_core/evaluation/evaluate.py", ("x_critical_detection",),
                                       ("tests/model_core/evaluation/test_critical_detection_mutants.py",)),
    "gate_record": SafetyModule("model_core/evaluation/gate_record.py",
                                ("x_model_file_hashes", "x_write_gate_record", "x_read_verified_record",
                                 "x_verify_gate_record", "x_require_promoted", "x__check_model_files"),
                                ("tests/model_core/evaluation/test_gate_record.py",
                                 "tests/model_core/evaluation/test_gates_mutants.py",
                                 "tests/model_core/evaluation/test_gate_record_mutants.py")),
    "promotion": SafetyModule("registry/models.py",
                              ("x_register", "x__require_signed_pass", "x__move_champion", "x_promote",
                               "x_verify_version_gate", "x_reconcile_aliases"),
                              ("tests/registry/test_gate_enforcement.py",)),
    "qa": SafetyModule("serving/qa.py", ("x_review", "x_unsupported_critical"),
                       ("tests/serving/test_qa_mutants.py",)),
    "auth": SafetyModule("serving/auth.py", ("x_parse_tokens", "x_load_tokens", "x_may_access",
                                             "xǁAuthenticatorǁauthenticate", "x_sha256_hex"),
                         ("tests/serving/test_auth_mutants.py",)),
    "tokens": SafetyModule("model_core/tokens.py", ("x_parse_token_spec", "x__site", "x_token_digest", "x_token_id"),
                           ("tests/serving/test_auth_mutants.py",)),
    "classify": SafetyModule("serving/middleware.py", ("x_classify",), ("tests/serving/test_auth_mutants.py",)),
    "packet": SafetyModule("regulatory/archive.py", ("x_verify_packet", "x__read_sums"),
                           ("tests/regulatory/test_packet_verification_mutants.py",)),
}


def copy_tree(dest: Path) -> None:
    """The working tree (tracked and untracked files) without the heavy or private parts; data/ as a link."""
    def keep(info: tarfile.TarInfo):
        parts = Path(info.name).parts
        top = parts[0] if parts else ""
        if top in _SKIP_TOP or top.startswith(".venv") or "__pycache__" in parts:
            return None
        return info

    archive = dest.with_suffix(".tar")
    with tarfile.open(archive, "w") as tar:
        tar.add(ROOT, arcname=".", filter=keep)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="fully_trusted")
    archive.unlink()
    (dest / "data").symlink_to(ROOT / "data")


def mutmut_section(module: SafetyModule) -> str:
    # Every project package is copied into mutants/ (only the module's file is mutated): a package left out would
    # be imported from the live checkout by the editable install, or shadowed by a tests/ folder of the same name.
    packages = ", ".join(f'"{p}"' for p in PACKAGES)
    quoted = ", ".join(f'"{t}"' for t in module.tests)
    return (f'\n[tool.mutmut]\nsource_paths = [{packages}]\nonly_mutate = ["{module.file}"]\n'
            f"pytest_add_cli_args_test_selection = [{quoted}]\n"
            'pytest_add_cli_args = ["-p", "no:cacheprovider", "-n", "0", "-q", "-x"]\n'
            # torch and the MLflow client are not fork-safe after a test ran: fork from a clean server process
            'process_isolation = "forkserver"\nuse_git_change_detection = false\n')


def mutant_patterns(name: str, module: SafetyModule, max_mutants: int | None) -> list[str]:
    dotted = module.file[:-3].replace("/", ".")
    if max_mutants is None:
        return [f"{dotted}.{fn}__mutmut_*" for fn in module.functions]
    # mutmut numbers each function's mutants from 1; names past the last one match nothing and are ignored
    return [f"{dotted}.{fn}__mutmut_{i}" for fn in module.functions for i in range(1, max_mutants + 1)]


def run_module(name: str, module: SafetyModule, max_mutants: int | None, children: int, keep: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"rrg-mutation-{name}-"))
    tree = work / "tree"
    copy_tree(tree)
    with open(tree / "pyproject.toml", "a") as fh:
        fh.write(mutmut_section(module))
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", "DO_NOT_TRACK": "1"}
    started = time.perf_counter()
    patterns = mutant_patterns(name, module, max_mutants)
    run = subprocess.run([str(MUTMUT), "run", "--max-children", str(children), *patterns],
                         cwd=tree, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if run.returncode != 0:
        tail = (run.stdout + run.stderr)[-3000:]
        print(f"[{name}] mutmut run failed (exit {run.returncode}); last output:\n{tail}", file=sys.stderr)
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
        return {"name": name, "file": module.file, "seconds": seconds, "counts": {}, "survivors": [], "failed": True}
    listing = subprocess.run([str(MUTMUT), "results", "--all", "true"], cwd=tree, env=env,
                             capture_output=True, text=True).stdout
    # `results` lists every mutant of the file; only the module's functions (the patterns) were run
    statuses = {mutant: status for mutant, status in re.findall(r"^\s*(\S+__mutmut_\d+): (.+)$", listing, flags=re.M)
                if any(fnmatch.fnmatchcase(mutant, pattern) for pattern in patterns)}
    source = (ROOT / module.file).read_text().splitlines()
    survivors = []
    for mutant, status in sorted(statuses.items(), key=lambda kv: _mutant_order(kv[0])):
        if status.strip() in ("killed", "timeout"):
            continue
        shown = subprocess.run([str(MUTMUT), "show", mutant], cwd=tree, env=env, capture_output=True,
                               text=True).stdout
        survivors.append({"mutant": mutant, "status": status.strip(), **_describe(mutant, shown, source)})
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status.strip()] = counts.get(status.strip(), 0) + 1
    return {"name": name, "file": module.file, "seconds": seconds, "counts": counts, "survivors": survivors,
            "failed": False}


def _mutant_order(mutant: str) -> tuple[str, int]:
    head, _, number = mutant.rpartition("__mutmut_")
    return head, int(number)


def _describe(mutant: str, diff: str, source: list[str]) -> dict:
    """The survivor's file line and its -/+ lines. mutmut's diff numbers lines from the start of the mutated
    function, so the line is the function's `def` line plus the hunk's offset to the first removed line."""
    lines = diff.splitlines()
    removed = [ln[1:] for ln in lines if ln.startswith("-") and not ln.startswith("---")]
    added = [ln[1:] for ln in lines if ln.startswith("+") and not ln.startswith("+++")]
    key = mutant.rsplit(".", 1)[-1].rsplit("__mutmut_", 1)[0]          # x_name or xǁClassǁmethod
    parts = key.split("ǁ")
    cls, name = (parts[1], parts[2]) if len(parts) == 3 else (None, key[2:])
    start = next((i for i, text in enumerate(source) if cls and text.startswith(f"class {cls}")), 0)
    def_line = next((i + 1 for i in range(start, len(source))
                     if source[i].lstrip().startswith((f"def {name}(", f"async def {name}("))), None)
    line = None
    for i, text in enumerate(lines):
        hunk = re.match(r"^@@ -(\d+)", text)
        if hunk and def_line is not None:
            offset = next((j for j, ln in enumerate(lines[i + 1:]) if ln.startswith("-")), 0)
            line = def_line + int(hunk.group(1)) - 1 + offset
            break
    return {"line": line, "before": " / ".join(r.strip() for r in removed),
            "after": " / ".join(a.strip() for a in added)}


def report(result: dict) -> None:
    if result.get("failed"):
        print(f"{result['name']:<20} {result['file']:<40} mutmut run FAILED (see the output above): no figures")
        return
    counts = result["counts"]
    total = sum(counts.values())
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    tried = total - counts.get("skipped", 0)
    ratio = killed / tried if tried else float("nan")
    others = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k not in ("killed", "timeout", "survived"))
    print(f"{result['name']:<20} {result['file']:<40} generated {total:>4}  killed {killed:>4}  "
          f"survived {counts.get('survived', 0):>3}{'  (' + others + ')' if others else ''}  "
          f"kill ratio {ratio:.3f}  ({result['seconds']:.0f} s)")
    for s in result["survivors"]:
        print(f"    {s['status']:<10} {result['file']}:{s['line']}  {s['mutant'].rsplit('.', 1)[-1]}\n"
              f"               - {s['before'][:160]}\n               + {s['after'][:160]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modules", nargs="+", choices=sorted(MODULES), default=list(MODULES),
                        help="safety modules to mutate (default: all)")
    parser.add_argument("--max-mutants", type=int, default=None,
                        help="at most the first N mutants of each function (a partial run)")
    parser.add_argument("--children", type=int, default=1, help="mutants tested in parallel (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies (to inspect with mutmut)")
    args = parser.parse_args(argv)
    if not MUTMUT.exists():
        print(f"error: mutmut is not installed beside {sys.executable} (pip install -e '.[dev]')", file=sys.stderr)
        return 2
    totals = {"generated": 0, "killed": 0, "survived": 0}
    for name in args.modules:
        result = run_module(name, MODULES[name], args.max_mutants, args.children, args.keep)
        report(result)
        counts = result["counts"]
        totals["generated"] += sum(counts.values())
        totals["killed"] += counts.get("killed", 0) + counts.get("timeout", 0)
        totals["survived"] += sum(counts.values()) - counts.get("killed", 0) - counts.get("timeout", 0)
        sys.stdout.flush()
    if totals["generated"]:
        print(f"{'all':<20} {'':<40} generated {totals['generated']:>4}  killed {totals['killed']:>4}  "
              f"not killed {totals['survived']:>3}  kill ratio {totals['killed'] / totals['generated']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
