import pytest

from model_core.config import REPO_ROOT, ConfigError, load_config


def test_shipped_configs_load():
    views = {"smoke": ["Frontal", "Lateral"], "demo": ["Frontal"], "demo_dinov2": ["Frontal", "Lateral"]}
    for name, expected in views.items():
        cfg = load_config(REPO_ROOT / "configs" / f"{name}.yaml")
        assert cfg.name == name and cfg.data.views == expected


def test_overrides_are_typed():
    cfg = load_config(REPO_ROOT / "configs" / "smoke.yaml",
                      ["baseline.epochs=3", "baseline.lr=1e-2", "data.limit_studies=null"])
    assert cfg.baseline.epochs == 3 and cfg.baseline.lr == 0.01 and cfg.data.limit_studies is None


@pytest.mark.parametrize("override, message", [
    ("baseline.epoch=3", "unknown config key.*baseline.epoch"),
    ("baseline.epochs=three", "baseline.epochs: expected int"),
    ("baseline.channels=5", "baseline.channels: expected a list"),
    ("noequals", "must look like section.key=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("data: [1, 2")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
