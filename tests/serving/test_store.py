"""The report store (SQLite): survives restarts, is shared between processes, honours retention, fails clearly;
and the `serving:` section of the config tree."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from test_api import TOKENS, A, FakePacs, _post, fake_decode_dicom, fake_model

import serving.store as store_mod
from model_core.config import ConfigError, ServingConfig, load_config
from rrg.cli import main
from serving.app import create_app
from serving.settings import parallelism, serving_config
from serving.store import ReportStore, ReportStoreError

REPO = Path(__file__).resolve().parents[2]


def test_put_get_and_reopen(tmp_path):
    path = tmp_path / "sub" / "reports.sqlite3"
    store = ReportStore(path)
    store.put("r1", {"response": {"impression": "No acute disease."}, "study_id": "1.2.3"})
    assert store.get("r1")["response"]["impression"] == "No acute disease."
    assert store.get("unknown") is None and len(store) == 1
    store.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600          # clinical records: owner only
    again = ReportStore(path)
    assert again.get("r1")["study_id"] == "1.2.3"
    again.close()


def test_another_process_sees_the_reports(tmp_path):
    path = tmp_path / "reports.sqlite3"
    store = ReportStore(path)
    store.put("mine", {"n": 1})
    code = ("import sys; from serving.store import ReportStore; s = ReportStore(sys.argv[1]); "
            "assert s.get('mine') == {'n': 1}; s.put('theirs', {'n': 2})")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, cwd=REPO, timeout=60)
    assert store.get("theirs") == {"n": 2}
    store.close()


def test_retention_deletes_old_reports(tmp_path, monkeypatch):
    store = ReportStore(tmp_path / "r.sqlite3", retention_days=1)
    now = store_mod.time.time()
    monkeypatch.setattr(store_mod.time, "time", lambda: now - 2 * 86400)
    store.put("old", {"n": 1})
    monkeypatch.setattr(store_mod.time, "time", lambda: now)
    store.put("new", {"n": 2})
    assert store.get("old") is None                                 # expired even before the next prune
    assert store.prune() == 1 and len(store) == 1 and store.get("new") == {"n": 2}
    with pytest.raises(ValueError, match="retention_days"):
        ReportStore(":memory:", retention_days=0)


def test_unusable_store_paths_fail_with_the_path_named(tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ReportStoreError, match="a-file"):
        ReportStore(tmp_path / "a-file" / "reports.sqlite3")
    (tmp_path / "not-sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(ReportStoreError, match="not-sqlite"):
        ReportStore(tmp_path / "not-sqlite")


def test_reports_survive_a_service_restart(tmp_path):
    def app():
        return create_app(model=fake_model(), pacs_client=FakePacs(), tokens=TOKENS,
                          decode_dicom=fake_decode_dicom, audit_log=tmp_path / "audit.jsonl",
                          report_store=tmp_path / "reports.sqlite3")

    with TestClient(app()) as client:
        report = _post(client).json()
    with TestClient(app()) as client:                               # a new process would see the same
        again = client.get(f"/api/v1/reports/{report['report_id']}", headers=A)
        assert again.status_code == 200 and again.json() == report
        fhir = client.get(f"/api/v1/reports/{report['report_id']}/fhir", headers=A)
        assert fhir.status_code == 200 and fhir.json()["resourceType"] == "DiagnosticReport"
        missing = client.get("/api/v1/reports/00000000-0000-0000-0000-000000000000", headers=A)
        assert missing.status_code == 404 and "30-day retention" in missing.json()["detail"]


def test_serving_section_of_the_config_tree(tmp_path):
    cfg = load_config(REPO / "configs" / "demo.yaml", ["serving.max_batch=4", "serving.backend=torch"])
    assert isinstance(cfg.serving, ServingConfig) and cfg.serving.max_batch == 4
    assert cfg.serving.backend == "torch" and cfg.serving.max_wait_ms == 100.0     # max batch 8, max wait 100 ms
    for override, key in (("serving.max_batch=0", "serving.max_batch"), ("serving.backend=tensorflow",
                                                                          "serving.backend"),
                          ("serving.backend=triton", "serving.triton_url"), ("serving.port=70000", "serving.port"),
                          ("serving.max_wait_ms=-1", "serving.max_wait_ms"), ("serving.bogus=1", "serving.bogus")):
        with pytest.raises(ConfigError, match=key):
            load_config(None, [override])
    assert serving_config(cfg.serving, max_queue=3, host=None).max_queue == 3
    with pytest.raises(ConfigError, match="unknown serving option"):
        serving_config(None, max_bach=3)
    with pytest.raises(ConfigError, match="serving.max_queue"):
        create_app(model=fake_model(), tokens=TOKENS, max_queue=0)


def test_rrg_serve_reports_bad_settings_before_starting(tmp_path, capsys, monkeypatch):
    model_dir = tmp_path / "no-model"
    assert main(["serve", "--model", str(model_dir), "--set", "serving.max_batch=0"]) == 2
    assert "serving.max_batch must be ≥ 1" in capsys.readouterr().err
    monkeypatch.setenv("RRG_API_TOKENS", TOKENS)
    monkeypatch.delenv("RRG_REPORT_STORE")
    assert main(["serve", "--model", str(model_dir), "--report-store", str(tmp_path), "--port", "9"]) == 2
    assert "report store" in capsys.readouterr().err


def test_parallelism_defaults_per_backend(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert parallelism(ServingConfig()) == (4, 2)                        # ONNX Runtime: whole batches per core
    assert parallelism(ServingConfig(), "onnxruntime-fp32") == (4, 2)
    assert parallelism(ServingConfig(), "torch") == (1, 8)              # transformers' loop holds the GIL
    assert parallelism(ServingConfig(backend="torch")) == (1, 8)
    assert parallelism(ServingConfig(workers=3, threads=1), "torch") == (3, 1)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert parallelism(ServingConfig()) == (2, 1)
