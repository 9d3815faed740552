"""registry.tracking without a server: the software lineage comes from model_core.provenance."""

from model_core.provenance import collect_provenance, version_string
from registry.tracking import PIPELINE_PACKAGES, software_lineage


def test_lineage_of_this_environment():
    lineage = software_lineage()
    here = collect_provenance()
    assert lineage["model_version"] == version_string(here) and lineage["python"] == here["python"]
    assert {**here["packages"], **{p: lineage[p] for p in PIPELINE_PACKAGES}}.items() <= lineage.items()


def test_lineage_prefers_the_model_cards_recorded_provenance():
    recorded = {"python": "3.11.0", "model_core": "0.1.0", "git_commit": "0123456789abcdef", "git_dirty": False,
                "packages": {"torch": "2.0.0"}}
    lineage = software_lineage({"name": "m", "provenance": recorded})
    assert lineage["model_version"] == "0.1.0+0123456" and lineage["git_commit"] == "0123456789abcdef"
    assert lineage["python"] == "3.11.0" and lineage["torch"] == "2.0.0"
    assert set(PIPELINE_PACKAGES) <= set(lineage)
    assert software_lineage({"name": "card without provenance"})["python"] == collect_provenance()["python"]
