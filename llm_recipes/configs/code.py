"""Config fields that name code -- `reward_function: module:function` (or `file.py:function`), a `callable` filter
step of clean-corpus -- are code: a real run imports them, which runs the module with the user's permissions, just as
`trust_remote_code: true` runs a model folder's Python. Checking a config ahead of time (a pipeline's dry run) must
run nothing, so within `code_not_imported()` such a field is only looked up: the file, or the module on the import
path, must exist, and nothing of it is executed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from llm_recipes.configs.parsing import ConfigError

_IMPORT_CODE: ContextVar[bool] = ContextVar("import_code", default=True)


@contextmanager
def code_not_imported() -> Iterator[None]:
    """Within this block, config checks find the code a field names without importing it."""
    token = _IMPORT_CODE.set(False)
    try:
        yield
    finally:
        _IMPORT_CODE.reset(token)


def imports_code() -> bool:
    """Whether config checks may import the code a field names (everywhere but inside `code_not_imported`)."""
    return _IMPORT_CODE.get()


def split_code_spec(spec: str, what: str) -> tuple[str, str]:
    """``"package.module:function"`` or ``"path/file.py:function"`` -> (module or file, function)."""
    module_name, sep, function_name = spec.rpartition(":")
    if not sep or not module_name or not function_name.isidentifier():
        raise ConfigError(f"{what}: '{spec}' must look like package.module:function")
    return module_name, function_name


def _module_exists(name: str) -> bool:
    """Whether `name` can be imported, found the way the import system finds it (sys.meta_path, so editable
    installs count) but package by package without importing any of them: finding runs no module code."""
    if name in sys.modules:
        return True
    search_path = None
    parts = name.split(".")
    for depth in range(1, len(parts) + 1):
        qualified = ".".join(parts[:depth])
        module = sys.modules.get(qualified)
        if module is not None:
            search_path = getattr(module, "__path__", None)
            continue
        spec = None
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(qualified, search_path) if find_spec else None
            if spec is not None:
                break
        if spec is None:
            return False
        search_path = spec.submodule_search_locations
        if search_path is None and depth < len(parts):
            return False  # a module, not a package: it has no submodules
    return True


def check_code_exists(spec: str, what: str) -> None:
    """The file or module `spec` names exists (its function is looked for only when the code is imported)."""
    module_name, _ = split_code_spec(spec, what)
    if module_name.endswith(".py"):
        if not Path(module_name).expanduser().is_file():
            raise ConfigError(f"{what}: file not found: {module_name}")
        return
    if not _module_exists(module_name):
        raise ConfigError(f"{what}: cannot find module '{module_name}'; is it on PYTHONPATH?")
