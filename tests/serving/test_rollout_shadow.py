"""Shadow mode and A/B routing in the service: a failing or slow shadow never changes a response, shadow drafts
reach the prediction log with role shadow on the same studies (paired comparison), A/B routing is sticky
and logged per arm, and the arms follow the registry's shadow / ab aliases."""

from __future__ import annotations

import asyncio
import dataclasses

from fastapi.testclient import TestClient
from test_api import TOKENS, FakePacs, W, body, fake_decode_dicom, fake_model
from test_prediction_logging import EmbeddingBackend

from model_core.config import RolloutConfig
from model_core.evaluation.comparison import ab_arm
from model_core.prediction_log import PredictionLog
from monitoring.ab import analyze_shadow
from serving.app import create_app
from serving.model_swap import follow_arms

STUDIES = [f"1.2.840.113619.2.55.3.{i}" for i in range(24)]
OTHER_TEXT = "FINDINGS: Heart size is normal. Lungs are clear. IMPRESSION: No acute disease."


class BrokenBackend(EmbeddingBackend):
    def generate_with_embeddings(self, images, contexts):
        raise RuntimeError("shadow model crashed")


def _app(tmp_path):
    return create_app(model=fake_model(EmbeddingBackend()), pacs_client=FakePacs(), tokens=TOKENS,
                      decode_dicom=fake_decode_dicom, audit_log=tmp_path / "audit.jsonl")


def _post_all(client) -> list[dict]:
    out = []
    for study in STUDIES:
        r = client.post(f"/api/v1/studies/{study}/report", json=body(study_id=study), headers=W)
        assert r.status_code == 200, r.text
        out.append(r.json())
    return out


def _stable(responses: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("report_id", "processing_time_ms")} for r in responses]


def test_a_failing_shadow_never_affects_responses(tmp_path):
    with TestClient(_app(tmp_path)) as c:
        baseline = _post_all(c)
    with TestClient(_app(tmp_path / "shadowed")) as c:
        service = c.app.state.service
        broken = dataclasses.replace(fake_model(BrokenBackend()), version="fake-8")
        c.portal.call(service.start_shadow, broken, 1.0, "shadow-1")
        shadowed = _post_all(c)
        assert service.shadow.flush()
        stats = service.shadow.stats
        assert stats.offered == len(STUDIES) and stats.failed == len(STUDIES) and stats.written == 0
        assert stats.last_error == "RuntimeError"
        assert c.get("/readyz").json()["ready"] is True
    assert _stable(shadowed) == _stable(baseline)


def test_a_slow_shadow_drops_mirrors_instead_of_slowing_responses(tmp_path):
    with TestClient(_app(tmp_path)) as c:
        service = c.app.state.service
        slow = dataclasses.replace(fake_model(EmbeddingBackend(delay=0.3)), version="fake-8")
        c.portal.call(service.start_shadow, slow, 1.0, "shadow-1")
        service.shadow._queue.maxsize = 1                  # a tiny queue: the mirror, not the caller, gives way
        responses = _post_all(c)
        assert all(r["model_version"] == "fake-7" for r in responses)
        assert service.shadow.stats.dropped > 0


def test_shadow_drafts_are_logged_as_shadow_on_the_same_studies(tmp_path):
    with TestClient(_app(tmp_path)) as c:
        service = c.app.state.service
        other = dataclasses.replace(fake_model(EmbeddingBackend(text=OTHER_TEXT, probs={})), version="fake-8")
        c.portal.call(service.start_shadow, other, 1.0, "shadow-1")
        responses = _post_all(c)
        assert service.shadow.flush() and service.writer.flush()
        ready = c.get("/readyz").json()
        assert ready["ready"] and ready["rollout"] == ("shadow: fake-8 mirrors 100% of studies "
                                                       f"({len(STUDIES)} drafted, 0 dropped, 0 failed)")
        c.portal.call(service.stop_shadow)
        assert c.get("/readyz").json()["rollout"] == "served model only"
    assert all(r["impression"] == "Small right pneumothorax." for r in responses)   # the champion answered
    log = PredictionLog(str(tmp_path / "predictions.sqlite3"))
    shadow = log.predictions(role="shadow")
    champion = log.predictions(role="champion")
    assert len(shadow) == len(champion) == len(STUDIES)
    assert {r.study_hash for r in shadow} == {r.study_hash for r in champion}
    assert {r.model_version for r in shadow} == {"fake-8"} and {r.model_version for r in champion} == {"fake-7"}
    paired = analyze_shadow(log, "fake-7", "fake-8", RolloutConfig())
    assert paired["pairs"] == len(STUDIES) and paired["decision"] == "wait"   # no radiologist sign-off yet
    audit = (tmp_path / "audit.jsonl").read_text()
    assert "rollout.shadow.start" in audit and "rollout.shadow.stop" in audit


def test_ab_routing_is_sticky_and_logged_per_arm(tmp_path):
    with TestClient(_app(tmp_path)) as c:
        service = c.app.state.service
        challenger = dataclasses.replace(fake_model(EmbeddingBackend()), version="fake-8")
        c.portal.call(service.start_ab, challenger, 0.5, "exp-1")
        assert c.get("/readyz").json()["rollout"] == "A/B: challenger fake-8 answers 50% of studies"
        first = _post_all(c)
        again = _post_all(c)
        assert service.writer.flush()
    expected = ["fake-8" if ab_arm(s, "exp-1", 0.5) == "challenger" else "fake-7" for s in STUDIES]
    assert [r["model_version"] for r in first] == expected == [r["model_version"] for r in again]
    assert set(expected) == {"fake-7", "fake-8"}
    records = PredictionLog(str(tmp_path / "predictions.sqlite3")).predictions()
    assert {(r.model_version, r.role) for r in records} == {("fake-7", "champion"), ("fake-8", "challenger")}


def test_the_arms_follow_the_registrys_shadow_and_ab_aliases(tmp_path):
    held: dict[str, str] = {}                       # NAME's aliases in the registry, as the follower reads them
    loaded = []

    def load(uri):
        loaded.append(uri)
        if uri.endswith("/9"):
            raise OSError("download interrupted")
        return dataclasses.replace(fake_model(EmbeddingBackend()), version=uri.rsplit("/", 1)[-1])

    with TestClient(_app(tmp_path)) as c:
        service = c.app.state.service
        follower = c.portal.call(follow_arms, "models:/rrg@champion", load, service, 1.0, 0.5, "exp-1", 3600.0,
                                 lambda: dict(held))
        assert service.shadow is None and service.challenger is None
        held["shadow"] = "8"                                        # rrg rollout shadow
        assert c.portal.call(follower.check) == ["shadow 8 started"]
        assert c.get("/readyz").json()["rollout"].startswith("shadow: 8 mirrors 100% of studies")
        assert c.portal.call(follower.check) == []                 # unchanged: nothing loaded again
        del held["shadow"]
        held["ab"] = "8"                                            # rrg rollout ab: shadow → ab
        assert c.portal.call(follower.check) == ["shadow stopped", "ab 8 started"]
        assert c.get("/readyz").json()["rollout"] == "A/B: challenger 8 answers 50% of studies"
        assert {r["model_version"] for r in _post_all(c)} == {"fake-7", "8"}
        held["ab"] = "9"                                            # a version that cannot load
        assert c.portal.call(follower.check) == [] and "ab version 9 failed to load" in follower.last_error
        assert service.challenger.version == "8"                   # the running arm stays
        held["ab"] = "10"                                           # another version takes the alias
        assert c.portal.call(follower.check) == ["ab 10 started"] and service.challenger.version == "10"
        del held["ab"]                                              # promoted or withdrawn
        assert c.portal.call(follower.check) == ["ab stopped"]
        assert service.challenger is None and c.get("/readyz").json()["rollout"] == "served model only"

        def down():
            raise ConnectionError("registry down")

        follower.aliases = down
        assert c.portal.call(follower.check) == [] and "registry unreachable" in follower.last_error
        c.portal.call(follower.stop)
    assert loaded == ["models:/rrg/8", "models:/rrg/8", "models:/rrg/9", "models:/rrg/10"]
    audit = (tmp_path / "audit.jsonl").read_text()
    assert all(event in audit for event in ("rollout.shadow.start", "rollout.shadow.stop", "rollout.ab.start",
                                            "rollout.ab.stop"))
    assert audit.count("rollout.ab.stop") == 2                      # version 8 released before 10, then 10


def test_only_a_champion_source_has_rollout_arms(tmp_path):
    for source in ("models:/rrg@ab", "models:/rrg/3", str(tmp_path)):
        assert asyncio.run(follow_arms(source, str, object(), 1.0, 0.1, "s", 1.0, dict)) is None
