"""Code shared by the test files: sample subsets, CLI runners, tiny runs and checkpoint folders, browsers.

Importable as `tests.helpers.NAME` because the pytest configuration in pyproject.toml puts the
repository root on `sys.path` (`pythonpath = ["."]`). Session-wide fixtures built from these helpers
are in `tests/conftest.py`.
"""
