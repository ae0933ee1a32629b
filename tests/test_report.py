import base64
import json
import re

import pytest

from mmkeras.errors import UserError
from mmkeras.evaluation.report import write_report


def test_report_embeds_curves_figures_and_config(tmp_path):
    history = {"loss": [1.2, 0.8, 0.5], "val_loss": [1.3, 0.9, 0.7], "accuracy": [0.3, 0.6, 0.8]}
    (tmp_path / "history.json").write_text(json.dumps(history))
    (tmp_path / "metrics.json").write_text(json.dumps({"val_accuracy": 0.875}))
    (tmp_path / "config.yaml").write_text("fusion: <gated>\n")
    out = write_report(tmp_path, tmp_path / "r.html")
    page = out.read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 2  # loss and accuracy
    assert all(base64.b64decode(image).startswith(b"\x89PNG") for image in images)
    assert "0.875" in page
    assert "fusion: &lt;gated&gt;" in page  # config text is escaped


def test_report_needs_a_history(tmp_path):
    with pytest.raises(UserError, match="history.json"):
        write_report(tmp_path)


def test_a_neighbours_damaged_bundle_does_not_stop_the_report(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "history.json").write_text(json.dumps({"loss": [1.0, 0.5]}))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "bundle.json").write_text('{\n  "format_version": 1,\n  oops\n}')
    assert write_report(run_dir, tmp_path / "r.html").is_file()
