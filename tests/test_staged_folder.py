"""`staged_folder`: the one writer of whole folders (bundles of every kind, web sites)."""

import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mmkeras.staged_folder import (
    FOLDER_MODE,
    UNFINISHED_MARKER,
    remove_stale_staging,
    staged_folder,
)

# Writes a folder with `staged_folder` in a fresh interpreter started under a given umask (the module reads
# the umask once, at import), and prints the folder's and its file's permission bits.
WRITE_UNDER_UMASK = """
import os, stat, sys
from pathlib import Path
from mmkeras.staged_folder import staged_folder

out = Path(sys.argv[1])
with staged_folder(out) as staging:
    (staging / "bundle.json").write_text("{}")
print(oct(stat.S_IMODE(out.stat().st_mode)), oct(stat.S_IMODE((out / "bundle.json").stat().st_mode)))
"""


@pytest.mark.parametrize(("umask", "folder_mode", "file_mode"), [(0o022, "0o755", "0o644"), (0o077, "0o700", "0o600")])
def test_written_folder_follows_the_umask(tmp_path, umask, folder_mode, file_mode):
    out = tmp_path / "bundle"
    completed = subprocess.run(
        [sys.executable, "-c", f"import os; os.umask({umask}); exec({WRITE_UNDER_UMASK!r})", str(out)],
        capture_output=True, text=True, check=True,
    )
    assert completed.stdout.split() == [folder_mode, file_mode]


def test_folder_mode_is_set_after_the_writer_copied_into_it(tmp_path):
    """A copytree into the staging folder copies its source's mode onto it: the site builder does that."""
    source = tmp_path / "page"
    source.mkdir()
    source.chmod(0o700)
    out = tmp_path / "site"
    with staged_folder(out) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True)
    assert stat.S_IMODE(out.stat().st_mode) == FOLDER_MODE


def test_the_marker_is_there_while_writing_and_gone_after(tmp_path):
    out = tmp_path / "bundle"
    with staged_folder(out) as staging:
        assert (staging / UNFINISHED_MARKER).is_file()
        assert not out.exists()
    assert out.is_dir() and not (out / UNFINISHED_MARKER).exists()
    assert [path.name for path in tmp_path.iterdir()] == ["bundle"]


def test_a_failed_write_leaves_the_old_folder_whole(tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "bundle.json").write_text("old")
    with pytest.raises(RuntimeError), staged_folder(out) as staging:
        (staging / "bundle.json").write_text("new, half written")
        raise RuntimeError("killed")
    assert (out / "bundle.json").read_text() == "old"
    assert [path.name for path in tmp_path.iterdir()] == ["bundle"]


def test_a_finished_write_replaces_the_old_folder(tmp_path):
    out = tmp_path / "site"
    out.mkdir()
    (out / "old.js").write_text("old")
    with staged_folder(out) as staging:
        (staging / "index.html").write_text("new")
    assert sorted(path.name for path in out.iterdir()) == ["index.html"]
    assert [path.name for path in tmp_path.iterdir()] == ["site"]


def test_stale_staging_of_this_folder_only_is_removed(tmp_path):
    for name in (".bundle.partial-x1", ".bundle.old-x2", ".other.partial-x3"):
        (tmp_path / name).mkdir()
    remove_stale_staging(Path(tmp_path / "bundle"))
    assert [path.name for path in tmp_path.iterdir()] == [".other.partial-x3"]
