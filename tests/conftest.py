import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def schema():
    from seminfo.config import load_schema

    return load_schema(SCHEMA)
