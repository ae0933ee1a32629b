"""`mmkeras benchmark BUNDLE... --image PHOTO --text TEXT`: preprocessing timed on the user's own input."""

import json

import pytest
from test_jpeg_draft import jpeg_bytes, photo

from mmkeras.cli.app import main
from mmkeras.preprocessing import MultimodalPreprocessor
from mmkeras.runtime.benchmark import benchmark_bundle
from mmkeras.runtime.predictor import Predictor


@pytest.fixture(scope="module")
def bundle_dir(tiny_bundle):
    return tiny_bundle["bundle"]


def test_the_photo_and_text_given_are_the_ones_preprocessed(bundle_dir, tmp_path, monkeypatch):
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_bytes(photo(640, 480)))
    seen = []
    original_init = Predictor.__init__

    def recording_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        original = self.preprocessor.load_images
        self.preprocessor.load_images = lambda images: seen.append(list(images)) or original(images)

    monkeypatch.setattr(Predictor, "__init__", recording_init)
    figures = benchmark_bundle(bundle_dir, threads=1, runs=4, warmup=1, image=path, text="a red bike")
    assert figures["input"]["image"] == str(path) and figures["input"]["text"] == "a red bike"
    assert seen and all(images == [path] for images in seen)
    assert 0 < figures["preprocess_ms"]["p50"] <= figures["preprocess_ms"]["p99"]


def test_cli_times_the_users_photo(bundle_dir, tmp_path, capsys):
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_bytes(photo(640, 480)))
    code = main(["benchmark", str(bundle_dir), "--image", str(path), "--text", "a red bike", "--runs", "2", "--json"])
    figures = json.loads(capsys.readouterr().out)
    assert code == 0 and figures["input"]["image"] == str(path) and "latency_ms" in figures


def test_an_unreadable_photo_is_one_line_naming_it(bundle_dir, tmp_path, capsys):
    path = tmp_path / "notes.jpg"
    path.write_text("not a photo")
    code = main(["benchmark", str(bundle_dir), "--image", str(path), "--runs", "2"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.count("\n") == 0 and str(path) in error and "not an image" in error


def test_bundles_side_by_side_preprocess_the_users_photo_and_say_so(bundle_dir, tmp_path, capsys, monkeypatch):
    # Several bundles (and --data) refused --image: their `pre p50` was always a noise image at the model's size,
    # 2 ms where a 12 MP phone photo took 43 ms on a 224 model, though the README promised your own photo.
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_bytes(photo(640, 480)))
    seen = []
    original = MultimodalPreprocessor.load_images
    monkeypatch.setattr(MultimodalPreprocessor, "load_images",
                        lambda self, images: seen.append(list(images)) or original(self, images))
    arguments = ["benchmark", str(bundle_dir), str(bundle_dir), "--image", str(path), "--text", "a red bike",
                 "--runs", "2", "--threads", "1"]
    assert main([*arguments, "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["input"] == {"image": str(path), "text": "a red bike"}
    assert seen and all(images == [path] for images in seen)
    assert main(arguments) == 0
    assert f"pre: {path} and the text 'a red bike'" in capsys.readouterr().out.splitlines()


def test_an_unreadable_photo_stops_a_side_by_side_run_in_one_line(bundle_dir, tmp_path, capsys):
    path = tmp_path / "notes.jpg"
    path.write_text("not a photo")
    code = main(["benchmark", str(bundle_dir), str(bundle_dir), "--image", str(path), "--runs", "2"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.count("\n") == 0 and str(path) in error and "not an image" in error
