from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import SHARED_FIXTURES


@pytest.fixture
def shared_fixtures() -> Path:
    if not SHARED_FIXTURES.is_dir():
        pytest.skip(f"{SHARED_FIXTURES} is absent (the workshop fixtures live beside the repository)")
    return SHARED_FIXTURES
