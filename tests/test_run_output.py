"""Where `train` and `qat` may write a run: never over or among the user's own files (no TensorFlow)."""

import re

import pytest

from mmkeras.errors import UserError
from mmkeras.runs import check_run_output


def test_a_new_or_empty_folder_may_receive_a_run(tmp_path):
    assert check_run_output(tmp_path / "new") is False
    assert check_run_output(tmp_path) is False


def test_a_folder_holding_a_run_is_replaced_and_said_to_be(tmp_path):
    for name in ("model.keras", "labels.json", "config.yaml", "partial-model.keras"):
        (tmp_path / name).write_text("x")
    (tmp_path / "checkpoints").mkdir()
    assert check_run_output(tmp_path) is True


def test_the_users_files_are_never_mixed_with_a_run(tmp_path):
    (tmp_path / "model.keras").write_text("x")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "photos").mkdir()
    expected = (
        f"{tmp_path}: the folder holds files that are not an mmkeras run (notes.txt, photos); "
        "choose an empty or new folder for --out, nothing there is replaced"
    )
    with pytest.raises(UserError, match=f"^{re.escape(expected)}$"):
        check_run_output(tmp_path)


def test_a_file_is_not_a_run_folder(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(UserError, match="--out must be a folder; a file of that name exists"):
        check_run_output(tmp_path / "out")


def test_a_checkpoints_folder_is_the_runs_only_when_it_holds_mmkeras_checkpoints(tmp_path):
    (tmp_path / "checkpoints" / "ckpt-0001-000000").mkdir(parents=True)
    (tmp_path / "checkpoints" / ".partial-ckpt-0002-000010").mkdir()
    assert check_run_output(tmp_path) is False
    (tmp_path / "checkpoints" / "model_epoch3.pt").write_text("the user's own")
    with pytest.raises(UserError, match=r"not an mmkeras run \(checkpoints\)"):
        check_run_output(tmp_path)
