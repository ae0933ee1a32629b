"""Lazy re-exports: a package names its public API without importing TensorFlow up front."""

import importlib


def lazy_getattr(package: str, public: dict[str, str]):
    """A module `__getattr__` that imports `public[name]` (a module path) on first use.

    Example:
    >>> __getattr__ = lazy_getattr("mypackage", {"Thing": "mypackage.thing"})
    """

    def __getattr__(name):
        if name not in public:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(public[name]), name)

    return __getattr__
