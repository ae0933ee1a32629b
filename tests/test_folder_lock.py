"""`folder_lock`: one writer per run or bundle folder, never a stale lock."""

import os
import signal
import subprocess
import sys
import threading

import pytest

from mmkeras.errors import UserError
from mmkeras.folder_lock import folder_lock, lock_file_of

HOLD_LOCK = (
    "import sys, time\n"
    "from mmkeras.folder_lock import folder_lock\n"
    "with folder_lock(sys.argv[1]):\n"
    "    print('locked', flush=True)\n"
    "    time.sleep(60)\n"
)


def hold_in_another_process(folder) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "locked\n"
    return process


def test_the_lock_file_sits_beside_the_folder_and_goes_away(tmp_path):
    folder = tmp_path / "run"
    with folder_lock(folder) as path:
        assert path == lock_file_of(folder) == tmp_path / ".run.lock"
        assert path.read_text().startswith(f"pid {os.getpid()} host ")
    assert not path.exists() and not folder.exists()


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    folder = tmp_path / "run"
    holder = hold_in_another_process(folder)
    try:
        with pytest.raises(UserError) as caught:
            with folder_lock(folder):
                pass
        assert f"another mmkeras process (pid {holder.pid} host " in str(caught.value)
        assert str(caught.value).startswith(f"{folder}: ")
    finally:
        holder.kill()
        holder.wait()


def test_a_waiting_writer_gets_the_lock_once_the_holder_ends(tmp_path):
    folder = tmp_path / "cache"
    holder = hold_in_another_process(folder)
    killed = threading.Event()

    def end_holder():
        killed.set()  # before the kill, so before the lock can be free
        holder.kill()

    ender = threading.Timer(0.5, end_holder)
    ender.start()
    try:
        with folder_lock(folder, wait=True):
            assert killed.is_set()  # acquired only once the holder was ended, not refused
    finally:
        ender.cancel()
        holder.kill()
        holder.wait()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    folder = tmp_path / "run"
    holder = hold_in_another_process(folder)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert lock_file_of(folder).exists()  # the file stays, the flock went with the process
    with folder_lock(folder):
        pass


def test_a_folder_where_no_lock_file_can_be_made_is_a_user_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="cannot create the lock file .bundle.lock beside it"):
        with folder_lock(tmp_path / "file" / "bundle"):
            pass
