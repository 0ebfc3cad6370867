"""Suite-wide fixtures.

``vectors_dir``: the independently published vectors (RFC, Wycheproof, CCTV) live outside
the repo, in ``../shared/vectors`` or the folder named by ``SEALPOST_VECTORS``. Where it is
absent the tests that need it skip and say why; under ``CI=true`` its absence fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parent.parent

# No per-example deadline: speed belongs in bench/, and a loaded two-core machine (other
# tests' servers, benchmarks) makes wall-clock deadlines fail at random.
settings.register_profile("sealpost", deadline=None)
settings.load_profile("sealpost")


def _vectors_path() -> Path:
    override = os.environ.get("SEALPOST_VECTORS")
    return Path(override) if override else REPO.parent / "shared" / "vectors"


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    path = _vectors_path()
    if not path.is_dir():
        reason = f"published test vectors not found at {path}; set SEALPOST_VECTORS to their folder"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path
