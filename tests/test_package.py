"""The top-level package: `import mmkeras` is TensorFlow-free and every public name resolves."""

import subprocess
import sys

import pytest

import mmkeras


def test_import_mmkeras_does_not_import_tensorflow():
    code = "import sys, mmkeras; print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "False"


@pytest.mark.parametrize("name", mmkeras.__all__)
def test_every_public_name_resolves(name):
    assert getattr(mmkeras, name).__name__ == name


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = mmkeras.nope
