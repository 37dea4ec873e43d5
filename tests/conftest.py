"""Shared pytest fixtures for the kmc tests."""

from __future__ import annotations

from pathlib import Path

import pytest

#: The repository root (the directory holding pyproject.toml, configs/ and tests/).
REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root, found relative to this file (never an absolute path)."""
    return REPO_ROOT
