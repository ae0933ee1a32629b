"""The wheel holds every module, and what the base install runs never imports TensorFlow.

CI also installs the built wheel into fresh venvs (`.ci/wheel_flow`); these
tests catch a missing package in seconds, without an install.
"""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# folder in the repository -> package it installs as (setup.py's PACKAGE_ROOTS)
PACKAGE_FOLDERS = {"mmkeras": "mmkeras", "cli": "mmkeras/cli", "export": "mmkeras/export"}
# What `pip install mmkeras` (no extra) must run: the device runtime and the CLI that drives it.
BASE_INSTALL_MODULES = (
    "mmkeras",
    "mmkeras.cli.app",
    "mmkeras.runtime",
    "mmkeras.runtime.benchmark",
    "mmkeras.runtime.bundle",
    "mmkeras.runtime.interpreter",
    "mmkeras.runtime.predictor",
    "mmkeras.runtime.batch_predict",
    "mmkeras.runtime.bundle_comparison",
    "mmkeras.runtime.bundle_accuracy",
    "mmkeras.runtime.cpu",
    "mmkeras.runtime.chunked_predictions",
    "mmkeras.evaluation.evaluate",
    "mmkeras.evaluation.report",
    "mmkeras.evaluation.explain",
    "mmkeras.evaluation.compare",
    "mmkeras.export.bundle_writer",
    "mmkeras.runs",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    completed = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    (out / BUILD_LOG).write_text(completed.stdout + completed.stderr)
    [built] = out.glob("mmkeras-*.whl")
    return built


# What `python -m build` printed, beside the wheel it built.
BUILD_LOG = "build.log"


@pytest.mark.slow
def test_building_the_wheel_warns_of_no_package_it_would_ignore(wheel):
    # README says to build a wheel with `python -m build`: it printed a block of "Package would be ignored"
    # for mmkeras/web/site (the page's files), which it packed all the same.
    assert "Package would be ignored" not in (wheel.parent / BUILD_LOG).read_text()
    with zipfile.ZipFile(wheel) as archive:
        packed = set(archive.namelist())
    assert {f"mmkeras/web/site/{name}" for name in ("index.html", "app.js", "preprocessing.js", "style.css")} <= packed


@pytest.mark.slow
def test_the_wheel_holds_every_module_of_the_repository(wheel):
    with zipfile.ZipFile(wheel) as archive:
        packed = set(archive.namelist())
    expected = {
        f"{package}/{source.relative_to(ROOT / folder).as_posix()}"
        for folder, package in PACKAGE_FOLDERS.items()
        for source in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in source.parts
    }
    assert expected - packed == set()
    assert "mmkeras/quantization/qat_transform.py" in packed
    assert {"mmkeras/web/package.json", "mmkeras/web/package-lock.json"} <= packed  # what `mmkeras web` installs


@pytest.mark.slow
def test_the_wheel_declares_the_console_script_and_the_extras(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = archive.read(next(name for name in names if name.endswith("entry_points.txt"))).decode()
        metadata = archive.read(next(name for name in names if name.endswith("METADATA"))).decode()
    assert "mmkeras = mmkeras.cli.app:main" in entry_points
    assert "Provides-Extra: train" in metadata
    base = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert not any("tensorflow" in line or "keras" in line for line in base)
    assert "Requires-Dist: ai-edge-litert==2.3.*" in base  # what the runtime accepts (tests/test_dependencies.py)


@pytest.mark.parametrize("module", BASE_INSTALL_MODULES)
def test_base_install_modules_do_not_import_tensorflow(module):
    code = f"import sys, {module}; print(sorted(m for m in ('tensorflow', 'keras', 'keras_hub') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "[]"
