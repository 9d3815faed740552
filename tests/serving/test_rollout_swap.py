"""Serving follows the registry: a hot swap under load (tiny torch models) fails no request, each response names
the version that answered it, the old model is drained, the swap is audited and the prediction log records the
answering version; a version that fails to load leaves the served model in place."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import httpx
import pytest
from fastapi.testclient import TestClient
from test_api import STUDY, TOKENS, FakePacs, W, body, fake_decode_dicom, fake_model

from model_core.config import RolloutConfig
from model_core.prediction_log import PredictionLog
from serving.app import create_app
from serving.backends import load_model
from serving.model_swap import AliasWatcher, ModelSlot, follow_alias, registry_alias


def _versions(tiny_model_dir):
    loaded = load_model(tiny_model_dir, backend="torch")
    return dataclasses.replace(loaded, version="tiny/1"), dataclasses.replace(loaded, version="tiny/2")


def test_hot_swap_under_load_fails_no_request_and_drains_the_old_model(tmp_path, tiny_model_dir):
    v1, v2 = _versions(tiny_model_dir)
    alias = {"version": "1"}
    app = create_app(model=v1, pacs_client=FakePacs(), tokens=TOKENS, decode_dicom=fake_decode_dicom,
                     audit_log=tmp_path / "audit.jsonl")

    async def scenario(service) -> list[tuple[int, str | None]]:
        watcher = AliasWatcher(resolve=lambda: alias["version"], load={"2": v2}.__getitem__,
                               swap=service.swap_model, poll_s=0.05)
        await watcher.start(current_version="1")
        results, stop = [], asyncio.Event()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rrg.test") as client:
            async def user():
                while not stop.is_set():
                    r = await client.post(f"/api/v1/studies/{STUDY}/report", json=body(), headers=W)
                    results.append((r.status_code, r.json().get("model_version")))

            users = [asyncio.create_task(user()) for _ in range(8)]
            while len(results) < 16:                      # load is flowing on version 1
                await asyncio.sleep(0.01)
            alias["version"] = "2"                        # the registry moves the alias
            for _ in range(2000):
                if watcher.swaps:
                    break
                await asyncio.sleep(0.01)
            served_before = len(results)
            while len(results) < served_before + 16:      # and keeps flowing on version 2
                await asyncio.sleep(0.01)
            stop.set()
            await asyncio.gather(*users)
        await watcher.stop()
        assert watcher.swaps == 1 and watcher.version == "2"
        return results

    with TestClient(app) as c:
        service = app.state.service
        results = c.portal.call(scenario, service)
        assert service.model is v2 and service.slot.in_flight(v1) == 0
        assert service.writer.flush()
    assert {status for status, _ in results} == {200}                 # no failed request
    versions = [v for _, v in results]
    assert set(versions) == {"tiny/1", "tiny/2"} and versions[-1] == "tiny/2"
    last_v1 = max(i for i, v in enumerate(versions) if v == "tiny/1")
    assert all(v == "tiny/2" for v in versions[last_v1 + 1:])
    logged = {r.model_version for r in PredictionLog(str(tmp_path / "predictions.sqlite3")).predictions()}
    assert logged == {"tiny/1", "tiny/2"}
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    swap = [e for e in audit if e["event"] == "model.swap"]
    assert len(swap) == 1 and swap[0]["model_version"] == "tiny/2"


def test_a_version_that_fails_to_load_leaves_the_served_model(tmp_path):
    served = fake_model()

    def broken(version):
        raise OSError("download interrupted")

    app = create_app(model=served, pacs_client=FakePacs(), tokens=TOKENS, decode_dicom=fake_decode_dicom,
                     audit_log=tmp_path / "audit.jsonl")
    with TestClient(app) as c:
        service = app.state.service
        watcher = AliasWatcher(resolve=lambda: "9", load=broken, swap=service.swap_model, poll_s=1.0)
        watcher.version = "7"
        assert c.portal.call(watcher.check) is False
        assert service.model is served and "version 9 failed to load" in watcher.last_error
        r = c.post(f"/api/v1/studies/{STUDY}/report", json=body(), headers=W)
        assert r.status_code == 200 and r.json()["model_version"] == "fake-7"


def test_the_slot_counts_in_flight_items_and_drain_waits_for_zero():
    slot, model = ModelSlot(), object()
    slot.hold(model)
    slot.hold(model)
    assert slot.in_flight(model) == 2 and slot.drain(model, timeout_s=0.01) is False
    slot.release(model)
    slot.release(model)
    assert slot.in_flight(model) == 0 and slot.drain(model, timeout_s=0.01) is True


def test_only_an_alias_source_can_be_followed():
    assert registry_alias("models:/rrg-report-generator@champion") == ("rrg-report-generator", "champion")
    for fixed in ("models:/rrg/3", "/models/dir"):
        with pytest.raises(ValueError, match="only a models:/NAME@ALIAS"):
            registry_alias(fixed)


def test_following_a_fixed_source_starts_no_watcher():
    async def never(_):
        raise AssertionError("no swap for a fixed source")

    for fixed in ("/models/dir", "models:/rrg/3"):
        assert asyncio.run(follow_alias(fixed, load=str, swap=never, current_version="rrg/3", poll_s=1.0)) is None


def test_the_app_follows_a_registry_alias_and_stops_following_at_shutdown(tmp_path, tiny_model_dir, monkeypatch):
    """create_app(alias_poll_s=…) (what `rrg serve` passes for a models:/NAME@ALIAS source) starts the alias watcher
    with the served version and the rollout-arms follower with the rollout config's shares and salt, and stops
    both at shutdown; a directory source is not followed."""
    import serving.app

    v1, _ = _versions(tiny_model_dir)
    calls = []

    class Watcher:
        async def stop(self):
            calls.append("stopped")

    async def fake_follow(source, load, swap, current_version, poll_s):
        calls.append((source, current_version, poll_s))
        return Watcher() if source.startswith("models:/") and "@" in source else None

    async def fake_arms(source, load, arms, shadow_share, ab_share, salt, poll_s):
        calls.append(("arms", source, shadow_share, ab_share, salt, poll_s))
        return Watcher() if source.endswith("@champion") else None

    monkeypatch.setattr(serving.app, "follow_alias", fake_follow)
    monkeypatch.setattr(serving.app, "follow_arms", fake_arms)
    rollout = RolloutConfig(shadow_share=0.5, ab_share=0.2, ab_salt="exp-2")
    for source in ("models:/tiny@champion", str(tiny_model_dir)):
        app = create_app(source, model=v1, pacs_client=FakePacs(), tokens=TOKENS, decode_dicom=fake_decode_dicom,
                         audit_log=tmp_path / "audit.jsonl", alias_poll_s=0.5, rollout=rollout)
        with TestClient(app):
            pass
    assert calls == [("models:/tiny@champion", "tiny/1", 0.5),
                     ("arms", "models:/tiny@champion", 0.5, 0.2, "exp-2", 0.5), "stopped", "stopped",
                     (str(tiny_model_dir), "tiny/1", 0.5), ("arms", str(tiny_model_dir), 0.5, 0.2, "exp-2", 0.5)]
