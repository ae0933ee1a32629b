"""Image checks are remembered by (path, size, mtime): a second run opens only the files that changed."""

import os

import numpy as np
import pytest
from PIL import Image

from mmkeras.data import manifest as manifest_module
from mmkeras.data.manifest import read_manifest
from mmkeras.errors import UserError


@pytest.fixture
def counted_checks(monkeypatch, tmp_path):
    monkeypatch.setenv("MMKERAS_CACHE_DIR", str(tmp_path / "cache" / "features"))
    opened = []
    check = manifest_module._image_problem

    def counting(image, **kwargs):
        opened.append(image.name)
        return check(image, **kwargs)

    monkeypatch.setattr(manifest_module, "_image_problem", counting)
    return opened


@pytest.fixture
def manifest_path(tmp_path):
    rng = np.random.default_rng(0)
    lines = ["text,image,label"]
    for index in range(5):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(tmp_path / f"{index}.png")
        lines.append(f"row {index},{index}.png,a")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    lines.append("row 5,broken.png,a")
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "train.csv"


def validate(path):
    return read_manifest(path).validate_images((16, 16), "skip")


def test_a_second_check_opens_only_changed_files_and_remembers_bad_ones(manifest_path, counted_checks, tmp_path):
    first, dropped = validate(manifest_path)
    assert dropped == 1 and len(counted_checks) == 6
    counted_checks.clear()
    second, dropped = validate(manifest_path)
    assert counted_checks == [] and dropped == 1 and second.rows == first.rows
    assert "cannot read image 'broken.png'" in str(second.skipped[0])
    stat = (tmp_path / "2.png").stat()
    os.utime(tmp_path / "2.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    (tmp_path / "broken.png").unlink()
    Image.new("RGB", (20, 20)).save(tmp_path / "broken.png")  # fixed
    _, dropped = validate(manifest_path)
    assert sorted(counted_checks) == ["2.png", "broken.png"] and dropped == 0
    assert (tmp_path / "cache" / "image_checks.sqlite3").is_file()


def test_without_remember_every_image_is_opened(manifest_path, counted_checks):
    validate(manifest_path)
    counted_checks.clear()
    with pytest.raises(UserError, match="broken.png"):
        read_manifest(manifest_path).validate_images((16, 16), "fail", remember=False)
    assert len(counted_checks) == 6


def test_another_target_size_is_checked_again(manifest_path, counted_checks):
    validate(manifest_path)
    counted_checks.clear()
    read_manifest(manifest_path).validate_images((8, 8), "skip")
    assert len(counted_checks) == 6
