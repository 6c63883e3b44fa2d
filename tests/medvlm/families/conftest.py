"""Tiny random checkpoints of every supported family, each built and saved once per session (no hub)."""

from __future__ import annotations

import shutil

import pytest
from _tiny_vlms import BUILDERS, save_tiny

FAMILIES = sorted(BUILDERS)


@pytest.fixture(scope="session")
def family_dir(tmp_path_factory):
    """Function: family name -> folder with its tiny model + processor (`save_pretrained`), built once."""
    root = tmp_path_factory.mktemp("families")
    built: dict[str, object] = {}

    def _get(family: str):
        if family not in built:
            built[family] = save_tiny(family, root / family)
        return built[family]

    return _get


@pytest.fixture
def copy_family(family_dir, tmp_path):
    """Function: a private copy of a family's folder, for tests that change files."""

    def _copy(family: str):
        return shutil.copytree(family_dir(family), tmp_path / family)

    return _copy
