import pytest
from monitoring_data import write_reference_model_dir


@pytest.fixture(scope="session")
def reference_model_dir(tmp_path_factory):
    """A model directory with a model card and synthetic reference statistics (shared: read-only)."""
    return write_reference_model_dir(tmp_path_factory.mktemp("model"))
