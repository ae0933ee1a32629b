"""The feature cache folder: shards round-trip in any order, `cache clear` keeps what is being written."""

import os
import time

import numpy as np
import pytest

from mmkeras.data import feature_shards
from mmkeras.data.feature_cache_folders import clear_caches, default_cache_dir, list_caches
from mmkeras.data.feature_shards import ShardReader, ShardWriter
from mmkeras.folder_lock import folder_lock
from tests.helpers.cli import run_cli


def write_cache(folder, rows=10, shard_bytes=50, **details):
    writer = ShardWriter(folder, target_shard_bytes=shard_bytes)
    tokens = np.arange(rows * 6, dtype=np.float16).reshape(rows, 2, 3)
    labels = np.arange(rows, dtype=np.int32)
    for start in range(0, rows, 4):  # batches that straddle shard boundaries
        writer.append({"tokens": tokens[start : start + 4], "label": labels[start : start + 4]})
    writer.close({"manifest": "train.csv", **details})
    return tokens, labels


@pytest.mark.parametrize("max_open", [256, 2], ids=["descriptors kept open", "opened per read"])
def test_shards_read_back_any_rows_in_any_order(tmp_path, monkeypatch, max_open):
    monkeypatch.setattr(feature_shards, "MAX_OPEN_SHARDS", max_open)
    tokens, labels = write_cache(tmp_path / "a")
    reader = ShardReader(tmp_path / "a")
    assert reader.meta["shards"] == 4 and reader.rows == 10  # 50 bytes hold 3 rows of 16 bytes
    assert (reader.arrays["tokens"].descriptors is None) == (max_open == 2)
    order = [9, 0, 7, 8, 1, 2, 3, 3]
    rows = reader.read(order)
    np.testing.assert_array_equal(rows["tokens"], tokens[order])
    np.testing.assert_array_equal(rows["label"], labels[order])
    reader.close()



def test_an_array_of_empty_rows_reads_back_beside_the_others(tmp_path):
    """An array whose rows hold nothing (a zero-length axis) has no bytes to read, only its shape to keep."""
    writer = ShardWriter(tmp_path / "a", target_shard_bytes=8)
    writer.append({"none": np.zeros((5, 0, 3), np.float32), "label": np.arange(5, dtype=np.int32)})
    writer.close({})
    reader = ShardReader(tmp_path / "a")
    rows = reader.read([4, 0, 2])
    assert rows["none"].shape == (3, 0, 3)
    np.testing.assert_array_equal(rows["label"], [4, 0, 2])
    reader.close()

def test_clear_keeps_recent_and_locked_caches(tmp_path):
    for name in ("old", "new", "busy"):
        write_cache(tmp_path / name)
    month_ago = time.time() - 30 * 86400
    os.utime(tmp_path / "old" / "meta.json", (month_ago, month_ago))
    os.utime(tmp_path / "busy" / "meta.json", (month_ago, month_ago))
    assert [entry.key for entry in list_caches(tmp_path)][-1] in ("old", "busy")
    with folder_lock(tmp_path / "busy"):  # a run writing it
        removed = clear_caches(tmp_path, older_than_days=7)
    assert [entry.key for entry in removed] == ["old"]
    assert sorted(entry.key for entry in list_caches(tmp_path)) == ["busy", "new"]
    assert [entry.key for entry in clear_caches(tmp_path)] and list_caches(tmp_path) == []


def test_a_qat_runs_fake_quantized_features_are_listed_as_such(tmp_path, capsys):
    write_cache(tmp_path / "float")
    write_cache(tmp_path / "qat", quantization={"kind": "fake-quantized", "num_bits": 8})
    entries = {entry.key: entry for entry in list_caches(tmp_path)}
    assert entries["qat"].details["quantization"]["kind"] == "fake-quantized"
    assert "quantization" not in entries["float"].details
    code, out, _ = run_cli(capsys, "cache", "list", "--cache-dir", tmp_path)
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert code == 0 and lines["qat"].endswith("train.csv  (fake-quantized, QAT)")
    assert lines["float"].endswith("train.csv")


def test_an_incomplete_cache_is_listed_as_such(tmp_path):
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "tokens-00000.npy").write_bytes(b"x" * 10)
    (entry,) = list_caches(tmp_path)
    assert not entry.complete and entry.rows is None and entry.bytes == 10


def test_the_default_folder_follows_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.delenv("MMKERAS_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "mmkeras" / "features"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir().parts[-3:] == (".cache", "mmkeras", "features")
