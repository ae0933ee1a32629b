"""What the installs pin is what the code accepts: LiteRT for the base install, the npm packages of the web site."""

import json
import shutil
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from mmkeras import compat
from mmkeras.web import site_builder

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "mmkeras" / "web"


def base_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {requirement.name: requirement for requirement in map(Requirement, project["dependencies"])}


def test_the_base_install_pins_the_litert_release_the_runtime_accepts():
    tested = compat.TESTED_VERSIONS["ai-edge-litert"]
    specifier = base_requirements()["ai-edge-litert"].specifier
    assert str(specifier) == f"=={tested}.*"
    # What `check_versions` refuses the pin refuses too: the releases around the tested one.
    major, minor = map(int, tested.split("."))
    assert f"{tested}.0" in specifier and f"{tested}.9" in specifier
    assert f"{major}.{minor + 1}.0" not in specifier and f"{major}.{minor - 1}.0" not in specifier


def test_the_web_packages_are_pinned_exactly_and_locked():
    package = json.loads((WEB / "package.json").read_text(encoding="utf-8"))
    lock = json.loads((WEB / "package-lock.json").read_text(encoding="utf-8"))
    assert site_builder.NPM_PACKAGES == package["dependencies"]
    assert all(version[0].isdigit() for version in package["dependencies"].values()), "no ranges: exact versions"
    assert lock["packages"][""]["dependencies"] == package["dependencies"]
    for name, version in package["dependencies"].items():
        locked = lock["packages"][f"node_modules/{name}"]
        assert locked["version"] == version and locked["integrity"].startswith("sha512-")
    # Every file the site copies comes from a locked package.
    packages = {"/".join(source.split("/")[:2]) for source in site_builder.VENDOR_FILES}
    assert packages <= set(package["dependencies"])


@pytest.mark.skipif(shutil.which("npm") is None, reason="needs npm: apt-get install -y npm")
def test_npm_ci_installs_the_locked_versions(tmp_path):
    """From npm's cache when it holds them (--prefer-offline), else from the registry."""
    modules = site_builder.install_packages(tmp_path / "cache")
    # npm ci installs the committed lock as it is (an `npm install` would resolve and may rewrite it).
    assert (tmp_path / "cache" / "package-lock.json").read_bytes() == (WEB / "package-lock.json").read_bytes()
    for name, version in site_builder.NPM_PACKAGES.items():
        assert json.loads((modules / name / "package.json").read_text(encoding="utf-8"))["version"] == version
    assert all((modules / source).is_file() for source in site_builder.VENDOR_FILES)
