"""Registration by import: a package whose modules each register something on import."""

from __future__ import annotations

import functools
import importlib
import pkgutil


@functools.cache
def import_all_modules(package_name: str) -> None:
    """Imports every module of the package once (their import registers them)."""
    package = importlib.import_module(package_name)
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package_name}.{module.name}")
