from __future__ import annotations

from pathlib import Path

import pytest
from dashboard_helpers import store_file


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return store_file(tmp_path)
