"""Every bundle exported or evaluated from a run is listed by its report and `compare`, wherever it was written.

The README's layout: runs in `runs/`, bundles in `bundles/`. The run's `bundles.json` records each
bundle (`runs.record_bundle`, called by `export_bundle` and `evaluate BUNDLE`); one moved or deleted
since is shown as missing, with the size it had.
"""

import base64
import io
import json
import re
import shutil
from pathlib import Path

import matplotlib
import pytest
from matplotlib import font_manager
from PIL import Image

from mmkeras.data.parquet_manifest import embedded_images_folder
from mmkeras.evaluation import plots
from mmkeras.evaluation.compare import compare_runs, comparison_table
from mmkeras.evaluation.evaluate import evaluate
from mmkeras.evaluation.report import samples_grid, write_report
from mmkeras.export.converter import export_bundle
from mmkeras.runs import BUNDLES_FILE, recorded_bundles
from tests.helpers.cli import SAMPLES
from tests.helpers.tiny_runs import save_tiny_run


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """`root/runs/tiny` and its float and dynamic bundles in `root/bundles/`."""
    root = tmp_path_factory.mktemp("layout")
    run_dir = save_tiny_run(root / "runs" / "tiny")
    (run_dir / "history.json").write_text(json.dumps({"loss": [1.0, 0.5]}))
    for name, quantize in (("float", "none"), ("dynamic", "dynamic")):
        export_bundle(run_dir, root / "bundles" / name, quantize=quantize)
    return root, run_dir


def bundle_rows(page: str) -> list[str]:
    """The rows of the report's bundles table."""
    section = re.search(r'<section id="bundles">(.*?)</section>', page, re.DOTALL).group(1)
    return re.findall(r"<tr>(.*?)</tr>", section)[1:]


def test_the_run_records_every_bundle_exported_to_another_folder(layout):
    root, run_dir = layout
    recorded = recorded_bundles(run_dir)
    assert [entry["path"] for entry in recorded] == [str((root / "bundles" / name).resolve())
                                                    for name in ("float", "dynamic")]
    assert [entry["quantization"] for entry in recorded] == ["none", "dynamic"]
    assert all(entry["size_bytes"] > 0 for entry in recorded)


def test_report_and_compare_list_both_bundles_with_size_and_latency(layout, tmp_path):
    _, run_dir = layout
    rows = bundle_rows(write_report(run_dir, tmp_path / "report.html").read_text())
    assert len(rows) == 2
    assert all("present" in row and " KB" in row for row in rows)
    comparison = compare_runs([run_dir])
    bundles = comparison["runs"][0]["bundles"]
    assert [bundle["name"] for bundle in bundles] == ["dynamic", "float"]
    assert all(bundle["size_bytes"] > 0 and bundle["p50_ms"] > 0 for bundle in bundles)
    assert "dynamic dynamic" in comparison_table(comparison) and " ms" in comparison_table(comparison)


def test_a_deleted_bundle_is_shown_as_missing_with_its_recorded_size(layout, tmp_path):
    root, run_dir = layout
    copy = root / "elsewhere" / "float-copy"
    shutil.copytree(root / "bundles" / "float", copy)
    evaluate(copy, SAMPLES / "test.csv")  # evaluating a bundle records it too
    assert str(copy.resolve()) in [entry["path"] for entry in recorded_bundles(run_dir)]
    shutil.rmtree(copy)
    rows = bundle_rows(write_report(run_dir, tmp_path / "report.html").read_text())
    missing = [row for row in rows if "float-copy" in row]
    assert len(missing) == 1 and "missing: moved or deleted" in missing[0] and " KB" in missing[0]
    gone = [bundle for bundle in compare_runs([run_dir])["runs"][0]["bundles"] if bundle["name"] == "float-copy"]
    assert gone[0]["status"] == "missing" and gone[0]["p50_ms"] is None and gone[0]["size_bytes"] > 0


def test_a_damaged_bundles_json_is_read_as_empty(tmp_path):
    (tmp_path / BUNDLES_FILE).write_text("{oops")
    assert recorded_bundles(tmp_path) == []


def test_sample_cards_show_the_photo_its_file_name_and_line(tmp_path):
    photo = tmp_path / "東京の猫.jpg"
    Image.new("RGB", (1200, 900), (200, 120, 40)).save(photo)
    folder = tmp_path / "results" / "test"
    folder.mkdir(parents=True)
    (folder / "predictions.csv").write_text(
        "line,text,image,label,predicted,score,correct,text_only_predicted,image_only_predicted\n"
        f"7,一只猫 🐱,{photo},cat,cat,0.9,1,cat,dog\n", encoding="utf-8")
    card = samples_grid(folder)
    assert "東京の猫.jpg" in card and "line 7 of test" in card and "一只猫 🐱" in card
    png = base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"', card).group(1))
    assert Image.open(io.BytesIO(png)).size == (320, 240)  # readable, not the model's 32x32 input


def test_sample_cards_name_parquet_bytes_as_given_and_say_when_their_cached_copy_is_gone(tmp_path, monkeypatch):
    monkeypatch.setenv("MMKERAS_CACHE_DIR", str(tmp_path / "cache" / "features"))
    kept = embedded_images_folder() / "ab" / ("ab" + "1" * 62)
    kept.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), (10, 200, 40)).save(kept, format="PNG")
    cleared = embedded_images_folder() / "cd" / ("cd" + "2" * 62)
    folder = tmp_path / "results" / "test"
    folder.mkdir(parents=True)
    (folder / "predictions.csv").write_text(
        "line,text,image,image_file,label,predicted,score,correct,text_only_predicted,image_only_predicted\n"
        f"3,a cat,cats/003.jpg,{kept},cat,cat,0.9,1,cat,cat\n"
        f"4,a dog,<image bytes of row 4>,{cleared},dog,cat,0.8,0,cat,dog\n", encoding="utf-8")
    cards = samples_grid(folder)
    photo = base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"', cards).group(1))
    assert Image.open(io.BytesIO(photo)).size == (64, 48)  # read from image_file
    assert "003.jpg, line 3 of test" in cards and "ab111" not in cards  # named as the manifest names it
    assert "&lt;image bytes of row 4&gt;, line 4 of test" in cards
    assert "photo not shown: its copy in the Parquet image cache was cleared (mmkeras cache clear)" in cards


def test_figures_draw_cjk_class_names_with_a_cjk_font(tmp_path):
    if not any(Path(path).name == plots.FALLBACK_FONT_FILE for path in font_manager.findSystemFonts(fontext="otf")):
        pytest.skip("needs fonts-noto-cjk: apt-get install -y fonts-noto-cjk")
    plots.confusion_png([[1, 0], [0, 1]], ["猫", "犬"])  # the first figure sets the fonts up
    assert plots.FALLBACK_FONT_FAMILY in matplotlib.rcParams["font.family"]
    found = font_manager.findfont(font_manager.FontProperties(family=plots.FALLBACK_FONT_FAMILY))
    assert Path(found).name == plots.FALLBACK_FONT_FILE
