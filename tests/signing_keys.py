"""One signing key for the whole test session (tests/conftest.py imports the fixture): the development key lives in
a temporary folder shared by the pytest-xdist workers of the run, and no configured or trusted key of the machine
leaks in. One key for every test, whichever worker runs it and in whichever order: a gate record or packet signed
by one test verifies in any other (a per-directory key, changed mid-session, made that depend on test order).
Tests that need keys of their own set $RRG_KEYS_DIR with monkeypatch.
"""

import os

import pytest
from filelock import FileLock

from model_core import signing

_SIGNING_ENV = (signing.ENV_KEY, signing.ENV_KEY_FILE, signing.ENV_TRUSTED, signing.ENV_KEYS_DIR)


@pytest.fixture(scope="session", autouse=True)
def session_keys(tmp_path_factory):
    """$RRG_KEYS_DIR → this run's temporary folder, its development key made once (under a lock, by whichever
    worker comes first); configured keys unset, restored at the end."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent          # this run's directory, common to all workers
    saved = {name: os.environ.pop(name, None) for name in _SIGNING_ENV}
    os.environ[signing.ENV_KEYS_DIR] = str(shared / "signing_keys")
    with FileLock(str(shared / "signing_keys.lock")):
        signing.load_signer()
    yield
    for name, value in saved.items():
        os.environ.pop(name, None)
        if value is not None:
            os.environ[name] = value
