"""The package map: what an installed llm-recipes ships is every package of the checkout."""

from __future__ import annotations

import pytest
from conftest import PROJECT

tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def test_every_package_is_installed():
    """pyproject lists the packages by hand (recipes/ ships as llm_recipes.recipes); a new subpackage left out of
    the list works in an editable install and is missing from a wheel."""
    listed = set(tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(PROJECT).parts)
        for init in (PROJECT / "llm_recipes").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert listed - {"llm_recipes.recipes"} == found
