"""`export --integer-only`: a model that keeps float ops is refused in one line naming them, and nothing is written."""

import pytest

from mmkeras.errors import UserError
from mmkeras.export.converter import export_bundle
from tests.helpers.cli import run_cli
from tests.helpers.tiny_runs import save_tiny_run


def test_integer_only_is_refused_without_int8_or_with_keep_float(tmp_path):
    with pytest.raises(UserError, match="--integer-only needs --quantize int8"):
        export_bundle(tmp_path / "no-run", tmp_path / "bundle", quantize="dynamic", integer_only=True)
    with pytest.raises(UserError, match="no --keep-float"):
        export_bundle(tmp_path / "no-run", tmp_path / "bundle", quantize="int8", keep_float=["GELU"],
                      integer_only=True)
    assert not (tmp_path / "bundle").exists()


@pytest.mark.slow
def test_an_integer_only_export_of_a_model_with_float_ops_names_them_in_one_line_and_writes_nothing(tmp_path, capsys):
    """The tiny model's attention keeps float ops (its mask's -1e9, the layer norms' float statistics)."""
    run_dir = save_tiny_run(tmp_path / "run")
    code, _, err = run_cli(capsys, "export", run_dir, "--out", tmp_path / "bundle", "--quantize", "int8",
                             "--integer-only", "--calibration-rows", "8")
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(error_lines) == 1, err
    assert "--integer-only: the int8 model still has float ops: " in error_lines[0]
    assert "Traceback" not in err and not (tmp_path / "bundle").exists()
