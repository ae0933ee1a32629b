import json
import zipfile

import yaml

from tests.helpers.cli import run_cli


def fake_run(folder, fusion, val_accuracy, epoch_seconds, peak_memory_bytes=None):
    """A run folder's files that `compare` reads without --data (the model file is checked, not loaded)."""
    folder.mkdir()
    with zipfile.ZipFile(folder / "model.keras", "w") as archive:
        archive.writestr("config.json", "{}")
    (folder / "labels.json").write_text('["a", "b"]')
    (folder / "config.yaml").write_text(yaml.safe_dump({"fusion": fusion}))
    metrics = {"val_accuracy": val_accuracy, "trainable_params": 1000, "total_params": 1200,
               "epoch_seconds": epoch_seconds, "peak_memory_bytes": peak_memory_bytes}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_compare_without_data_tabulates_the_runs_own_figures(tmp_path, capsys):
    concat = fake_run(tmp_path / "concat", "concat", 0.75, [9.0, 1.0, 3.0], peak_memory_bytes=1_604_000_000)
    gated = fake_run(tmp_path / "gated", "gated", 0.5, [5.0])
    code, out, _ = run_cli(capsys, "compare", concat, gated)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:7] == ["run", "fusion", "trainable", "s/epoch", "peak", "mem", "val"]
    # The first epoch left out of the median; a run trained before the peak memory was recorded has none.
    assert lines[1].split()[:7] == ["concat", "concat", "1000", "2.0000", "1.60", "GB", "0.7500"]
    assert lines[2].split()[:5] == ["gated", "gated", "1000", "5.0000", "-"] and lines[2].split()[5] == "0.5000"
    code, out, _ = run_cli(capsys, "compare", concat, gated, "--json")
    comparison = json.loads(out)
    assert comparison["data"] is None
    assert [run["figures"] for run in comparison["runs"]] == [None, None]


def test_compare_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    code, _, err = run_cli(capsys, "compare", tmp_path)
    assert code == 2
    assert "not a run folder" in err


def test_compare_says_where_it_wrote_the_comparison(tmp_path, capsys):
    concat = fake_run(tmp_path / "concat", "concat", 0.75, [9.0, 1.0])
    gated = fake_run(tmp_path / "gated", "gated", 0.5, [5.0])
    code, out, _ = run_cli(capsys, "compare", concat, gated, "--out", tmp_path / "cmp")
    assert code == 0
    folder = tmp_path / "cmp"
    assert out.splitlines()[-1] == f"wrote {folder / 'comparison.json'} and {folder / 'comparison.png'}"
