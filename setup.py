"""Package discovery for setuptools (the metadata is in pyproject.toml).

`cli/` and `export/` are top-level folders in this repository (the layout
shows the pipeline) but install as `mmkeras.cli` and `mmkeras.export`.
setuptools' automatic discovery cannot map folders to other package names,
so each root is searched here with `find_packages`: a new subpackage is
picked up without being listed by hand.
"""

from setuptools import find_packages, setup

# installed package -> its folder in this repository
PACKAGE_ROOTS = {"mmkeras": "mmkeras", "mmkeras.cli": "cli", "mmkeras.export": "export"}


# Folders of data files only (no __init__.py), installed as packages of their own: setuptools warns that it
# would ignore a folder Python can import (as a namespace package) when it is only package data.
DATA_PACKAGES = {"mmkeras.web.site": ["*"]}


def discover(package: str, folder: str) -> list[str]:
    """`package` and every package below `folder`, named under `package`."""
    return [package, *(f"{package}.{name}" for name in find_packages(folder))]


setup(
    package_dir=PACKAGE_ROOTS,
    packages=[name for package, folder in PACKAGE_ROOTS.items() for name in discover(package, folder)]
    + list(DATA_PACKAGES),
    package_data={
        "mmkeras": ["py.typed"],
        "mmkeras.runtime": ["*.json"],
        "mmkeras.web": ["package.json", "package-lock.json"],
        **DATA_PACKAGES,
    },
)
