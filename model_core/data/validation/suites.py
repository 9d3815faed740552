"""The Great Expectations (1.x) suites of the data-validation gate: one per frame, run in an ephemeral context.

Great Expectations runs with in-memory stores, analytics off (`GX_ANALYTICS_ENABLED=false` and
`analytics_enabled=False` in the context config) and progress bars off; nothing is written to disk.
Each expectation carries its check id (`contract.rows`, `images.exists`, `phi.<pattern>`, ...) in
its meta; results are summarised into failure dicts that name rows by CSV line number and uid.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from model_core.data.manifest import MANIFEST_COLUMNS, VIEWS
from model_core.data.validation.report import plain_value, safe_value
from model_core.data.validation.rules import (
    ALLOWED_SPLITS,
    GRAYSCALE_MODES,
    MAX_CHANNEL_SPREAD,
    MAX_EXAMPLES,
    MAX_SATURATED_FRACTION,
    MIN_PIXEL_STD,
    REQUIRED_NON_EMPTY,
    SAFE_VALUE_COLUMNS,
)
from model_core.phi import PHI_PATTERNS


def _gx():
    """Import Great Expectations with analytics off (set before the first import and before any context).

    Imported here, on first use, not at the top: the import takes about 5 s, and the analytics
    switch must be in the environment before it.
    """
    os.environ["GX_ANALYTICS_ENABLED"] = "false"  # no phone-home, whatever the environment said
    import great_expectations as gx

    return gx


def build_suites(frames: dict[str, pd.DataFrame], min_size: int) -> dict[str, list[tuple[str, Any]]]:
    """frame → [(check id, GE expectation)] for the columns that the frame has."""
    E = _gx().expectations
    m = frames["manifest"]
    has = set(m.columns)
    man: list[tuple[str, Any]] = [("contract.rows", E.ExpectTableRowCountToBeBetween(min_value=1))]
    man += [("contract.column_present", E.ExpectColumnToExist(column=c)) for c in MANIFEST_COLUMNS]
    man += [("contract.non_empty", E.ExpectColumnValuesToNotBeNull(column=c)) for c in REQUIRED_NON_EMPTY if c in has]
    if "projection" in has:
        man.append(("labels.projection", E.ExpectColumnValuesToBeInSet(column="projection", value_set=list(VIEWS))))
    if "image_exists" in has:
        man += [
            ("images.unique_path", E.ExpectColumnValuesToBeUnique(column="image")),
            ("images.in_root", E.ExpectColumnValuesToBeInSet(column="image_in_root", value_set=[True])),
            ("images.exists", E.ExpectColumnValuesToBeInSet(column="image_exists", value_set=[True])),
            ("images.decodable", E.ExpectColumnValuesToBeInSet(column="image_decodable", value_set=[True])),
            ("images.mode", E.ExpectColumnValuesToBeInSet(column="image_mode", value_set=list(GRAYSCALE_MODES))),
            ("images.bit_depth", E.ExpectColumnValuesToBeInSet(column="image_bit_depth", value_set=[8, 16])),
            ("images.grayscale", E.ExpectColumnValuesToBeBetween(column="image_channel_spread", min_value=0,
                                                                 max_value=MAX_CHANNEL_SPREAD)),
            ("images.min_size", E.ExpectColumnValuesToBeBetween(column="image_width", min_value=min_size)),
            ("images.min_size", E.ExpectColumnValuesToBeBetween(column="image_height", min_value=min_size)),
            ("images.range", E.ExpectColumnValuesToBeBetween(column="pixel_min", min_value=0, max_value=1)),
            ("images.range", E.ExpectColumnValuesToBeBetween(column="pixel_max", min_value=0, max_value=1)),
            ("images.not_blank", E.ExpectColumnValuesToBeBetween(column="pixel_std", min_value=MIN_PIXEL_STD)),
            ("images.not_saturated", E.ExpectColumnValuesToBeBetween(column="pixel_saturated", min_value=0,
                                                                     max_value=MAX_SATURATED_FRACTION)),
        ]
    suites = {"manifest": man}
    if frames.get("split_rows") is not None:
        sr = frames["split_rows"]
        rows_suite = []
        if "split" in sr:
            rows_suite.append(("labels.split", E.ExpectColumnValuesToBeInSet(column="split",
                                                                             value_set=list(ALLOWED_SPLITS))))
        rows_suite += [
            ("splits.assigned", E.ExpectColumnValuesToNotBeNull(column="effective_split")),
            ("splits.allowed", E.ExpectColumnValuesToBeInSet(column="effective_split", value_set=list(ALLOWED_SPLITS))),
        ]
        suites["split_rows"] = rows_suite
    if "studies" in frames:
        s = frames["studies"]
        st = []
        if "report_present" in s:
            st.append(("contract.report_non_empty", E.ExpectColumnValuesToNotBeNull(column="report_present")))
        if "n_study_variants" in s:
            st.append(("contract.study_consistent", E.ExpectColumnValuesToBeInSet(column="n_study_variants",
                                                                                  value_set=[1])))
        suites["studies"] = st
    if frames.get("labels") is not None:
        suites["labels"] = [("labels.mesh_chexpert", E.ExpectColumnValuesToBeInSet(column="value", value_set=[0, 1]))]
    if frames.get("report_text") is not None:
        suites["report_text"] = [(f"phi.{name}", E.ExpectColumnValuesToNotMatchRegex(column="text", regex=regex))
                                 for name, (regex, _) in PHI_PATTERNS.items()]
    if frames.get("splits") is not None:
        suites["splits"] = [("splits.disjoint", E.ExpectColumnValuesToBeUnique(column="uid"))]
    if frames.get("image_content") is not None:
        suites["image_content"] = [("splits.disjoint_content", E.ExpectColumnValuesToBeUnique(column="image_sha256"))]
    return suites


def _ge_context():
    gx = _gx()
    from great_expectations.data_context.types.base import (  # lazy, as in _gx
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(), analytics_enabled=False,
                               progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
                               data_docs_sites={})
    return gx.get_context(mode="ephemeral", project_config=config)


def ge_version() -> str:
    return _gx().__version__


def run_suites(frames: dict[str, pd.DataFrame], suites: dict[str, list]) -> list[dict]:
    """Run each frame's suite; one summary dict per expectation (check, success, failing rows, examples)."""
    gx = _gx()
    context = _ge_context()
    source = context.data_sources.add_pandas("iu_manifest")
    checks: list[dict] = []
    for frame_name, items in suites.items():
        if not items:
            continue
        df = frames[frame_name]
        asset = source.add_dataframe_asset(frame_name)
        batch_def = asset.add_batch_definition_whole_dataframe(f"{frame_name}_all")
        for check, expectation in items:
            expectation.meta = {"check": check, "frame": frame_name}
        # Build the suite whole before adding it: add_expectation on a stored suite re-serialises it every time.
        suite = context.suites.add(gx.ExpectationSuite(name=f"iu_{frame_name}", expectations=[e for _, e in items]))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"validate_{frame_name}", data=batch_def, suite=suite))
        index_cols = [c for c in ("row", "uid", "section", "label", "source") if c in df.columns]
        run = definition.run(batch_parameters={"dataframe": df}, result_format={
            "result_format": "COMPLETE", "unexpected_index_column_names": index_cols,
            "return_unexpected_index_query": False, "partial_unexpected_count": 0,
        })
        checks += [_summarise(r, frame_name, index_cols) for r in run.results]
    return checks


def _summarise(r, frame: str, index_cols: list[str]) -> dict:
    cfg = r.expectation_config
    kwargs = cfg.kwargs
    column = kwargs.get("column")
    res = r.result or {}
    examples = []
    for item in (res.get("unexpected_index_list") or [])[:MAX_EXAMPLES]:
        if isinstance(item, dict):
            examples.append({k: plain_value(item[k]) for k in index_cols if k in item})
        else:
            examples.append({"index": plain_value(item)})
    out = {
        "check": (cfg.meta or {}).get("check", cfg.type), "expectation": cfg.type, "frame": frame,
        "column": column, "success": bool(r.success),
        "unexpected_count": plain_value(res.get("unexpected_count")),
        "unexpected_percent": (None if res.get("unexpected_percent") is None
                               else round(float(res["unexpected_percent"]), 4)),
        "examples": examples,
    }
    params = {k: plain_value(v) for k, v in kwargs.items() if k in ("value_set", "min_value", "max_value", "regex")}
    if out["check"].startswith("phi."):
        params["pattern"] = out["check"].split(".", 1)[1]
    out["parameters"] = params
    if column in SAFE_VALUE_COLUMNS and not r.success:
        values = res.get("unexpected_list") or []
        out["unexpected_values"] = sorted({safe_value(v) for v in values})[:MAX_EXAMPLES]
    if cfg.type == "expect_column_to_exist" and not r.success:
        out["unexpected_count"] = None
    if r.exception_info and r.exception_info.get("raised_exception"):
        out["exception"] = str(r.exception_info.get("exception_message"))[:300]
    return out
