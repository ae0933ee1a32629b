"""The browser runtime: `mmkeras web` sites in headless Chromium give the Python runtime's answers.

Needs Debian's `chromium` and `npm` (skipped, saying which is missing, without them).
"""

import concurrent.futures
import csv
import functools
import http.server
import json
import os
import re
import shutil
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from mmkeras.cli.app import main
from mmkeras.errors import UserError
from mmkeras.export.converter import export_bundle
from mmkeras.runtime.bundle import read_bundle
from mmkeras.runtime.predictor import Predictor
from mmkeras.runtime.test_vectors import read_test_vectors
from mmkeras.web import site_builder
from mmkeras.web.site_builder import build_site
from tests.helpers.cli import SAMPLES
from tests.helpers.headless_chromium import Chromium, find_chromium
from tests.helpers.tiny_runs import save_tiny_run


def needs_browser(test):
    """A test of a built site: in the browser tier, and skipped without chromium and npm."""
    skip = pytest.mark.skipif(
        find_chromium() is None or shutil.which("npm") is None,
        reason="needs chromium and npm: apt-get install -y chromium npm",
    )
    return pytest.mark.browser(skip(test))


def example_rows():
    """Every row of samples/test.csv, the first rows without their image and without their text, and a
    text longer than the sequence, with accents and CJK (truncation and normalisation happen in the page)."""
    with (SAMPLES / "test.csv").open(newline="", encoding="utf-8") as handle:
        rows = [(row["text"], row["image"]) for row in csv.DictReader(handle)]
    long_text = "Crème brûlée, 東京 and ŒUVRES: " + " ".join(text for text, _ in rows[:6])
    return [*rows, *((text, None) for text, _ in rows[:5]), *((None, image) for _, image in rows[:5]),
            (long_text, rows[0][1])]


def as_multilabel(bundle_dir):
    """Make a float bundle multilabel: a sigmoid per label, each threshold in the widest gap between the middle
    half of the example rows' scores (the label sets vary, and no score lies within the logit tolerance of one)."""
    predictor = Predictor(bundle_dir, num_threads=1)
    texts, images = zip(*example_rows())
    logits = predictor.predict_inputs(predictor.preprocessor(list(texts), [SAMPLES / i if i else None for i in images]))
    thresholds = []
    for scores in np.sort(1 / (1 + np.exp(-logits)), axis=0).T:
        middle = scores[len(scores) // 4 : 3 * len(scores) // 4]
        widest = int(np.argmax(np.diff(middle)))
        thresholds.append(float(middle[widest : widest + 2].mean()))
    path = bundle_dir / "bundle.json"
    bundle = json.loads(path.read_text())
    path.write_text(json.dumps({**bundle, "task": "multilabel", "output_activation": "sigmoid",
                                "thresholds": thresholds}))


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    """mode -> (bundle folder, site folder) for a float, an int8 and an int8 `--integer-only` export of one run,
    (`crop`) a float export of that run preprocessing as a timm checkpoint does (bicubic, centre crop), and the
    float bundle read as multilabel."""
    if find_chromium() is None or shutil.which("npm") is None:
        pytest.skip("needs chromium and npm: apt-get install -y chromium npm")
    root = tmp_path_factory.mktemp("web")
    run_dir = save_tiny_run(root / "run")
    shutil.copytree(run_dir, root / "run-crop")
    settings_path = root / "run-crop" / "preprocessor.json"
    settings = json.loads(settings_path.read_text())
    settings["image"].update(resample="bicubic", crop_pct=0.875)
    settings_path.write_text(json.dumps(settings))
    built = {}
    for mode, source, quantize in (("none", run_dir, "none"), ("int8", run_dir, "int8"),
                                   ("crop", root / "run-crop", "none")):
        export_bundle(source, root / mode, quantize=quantize)
        build_site(root / mode, root / "sites" / mode)
        built[mode] = (root / mode, root / "sites" / mode)
    # An --integer-only bundle: uint8 image, modality mask and logits, which the page quantizes and dequantizes.
    export_bundle(run_dir, root / "integer_only", quantize="int8", integer_only=True, calibration_rows=16)
    build_site(root / "integer_only", root / "sites" / "integer_only")
    built["integer_only"] = (root / "integer_only", root / "sites" / "integer_only")
    shutil.copytree(root / "none", root / "multilabel")
    as_multilabel(root / "multilabel")
    build_site(root / "multilabel", root / "sites" / "multilabel")
    built["multilabel"] = (root / "multilabel", root / "sites" / "multilabel")
    # The rows' images, served next to the sites, and the list the page runs.
    shutil.copytree(SAMPLES / "images", root / "sites" / "images")
    examples = [{"text": text, "image": f"../images/{image[len('images/'):]}" if image else None}
                for text, image in example_rows()]
    (root / "sites" / "examples.json").write_text(json.dumps(examples))
    return built


@pytest.fixture(scope="module")
def server(sites):
    """Serves the sites' folder on 127.0.0.1 (a free port) in a thread."""
    folder = next(iter(sites.values()))[1].parent
    handler = functools.partial(QuietHandler, directory=str(folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
        httpd.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    chromium = Chromium()
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def browser_results(sites, server, browser):
    """mode -> the page's results for every row of `example_rows`, in order."""
    return {
        mode: json.loads(browser.page_text(f"{server}/{mode}/index.html?examples=../examples.json", "result"))
        for mode in sites
    }


def python_results(bundle_dir):
    predictor = Predictor(bundle_dir, num_threads=1)
    texts, images = zip(*example_rows())
    inputs = predictor.preprocessor(list(texts), [SAMPLES / image if image else None for image in images])
    logits = predictor.predict_inputs(inputs)
    return inputs, logits, [predictor.labels[index] for index in logits.argmax(axis=1)]


@needs_browser
@pytest.mark.parametrize("mode", ["none", "int8", "crop", "integer_only"])
def test_browser_gives_the_python_runtime_answers_on_every_test_row(sites, browser_results, mode):
    bundle_dir, _ = sites[mode]
    inputs, logits, labels = python_results(bundle_dir)
    results = browser_results[mode]
    assert "error" not in results and len(results) == len(labels)
    assert [result["token_ids"] for result in results] == inputs["token_ids"].tolist()
    # The same decoded, resized (and cropped) pixels: Pillow's resize and compositing are reproduced exactly.
    assert [result["pixel_sum"] for result in results] == inputs["image"].sum(axis=(1, 2, 3)).tolist()
    if mode == "crop":
        assert read_bundle(bundle_dir)["preprocessing"]["image"]["crop_pct"] == 0.875
    assert [result["label"] for result in results] == labels
    # Float: within 1e-4; int8: within one quantization step of the logits.
    tolerance = read_test_vectors(bundle_dir)["logit_tolerance"]
    assert np.max(np.abs(np.array([result["logits"] for result in results]) - logits)) <= tolerance


@needs_browser
def test_browser_gives_the_label_sets_of_a_multilabel_bundle(sites, browser_results):
    bundle_dir, _ = sites["multilabel"]
    predictor = Predictor(bundle_dir, num_threads=1)
    _, logits, _ = python_results(bundle_dir)
    expected = [predictor.predicted_labels(predictor.scores(row)) for row in logits]
    results = browser_results["multilabel"]
    assert [result["labels"] for result in results] == expected
    assert len({tuple(labels) for labels in expected}) > 2  # the thresholds split the rows: a real check
    np.testing.assert_allclose([list(result["scores"].values()) for result in results], predictor.scores(logits),
                               atol=1e-4)


@needs_browser
def test_address_runs_one_example_and_writes_label_scores_and_token_ids(sites, server, browser):
    bundle_dir, _ = sites["none"]
    text, image = example_rows()[0]
    page = f"{server}/none/index.html?text={text}&image=../images/{image[7:]}"
    result = json.loads(browser.page_text(page, "result"))
    prediction = Predictor(bundle_dir).predict(text, SAMPLES / image)
    assert result["label"] == prediction.label
    assert result["scores"].keys() == prediction.scores.keys()
    assert np.allclose(list(result["scores"].values()), list(prediction.scores.values()), atol=1e-5)
    assert result["token_ids"] == Predictor(bundle_dir).preprocessor([text], [None])["token_ids"][0].tolist()


# What the page shows once an example ran: read in the page, returned as one JSON value.
PAGE_PARTS = """JSON.stringify({
  preview: (() => { const image = document.getElementById('preview');
    return !image.hidden && image.complete ? image.naturalWidth : 0; })(),
  text: document.getElementById('text').value,
  picker: document.getElementById('image').accept,
  camera: document.getElementById('camera').getAttribute('capture'),
  drop: Boolean(document.getElementById('drop')),
  label: document.getElementById('label').textContent,
  bars: [...document.querySelectorAll('#bars li')].map((row) => [row.querySelector('.name').textContent,
    parseFloat(row.querySelector('.fill').style.width), row.querySelector('.fill').getBoundingClientRect().width]),
  model: document.getElementById('model').textContent,
  timings: document.getElementById('timings').textContent,
})"""


@needs_browser
def test_the_page_shows_the_photo_score_bars_the_model_in_words_and_timings(sites, server, browser, tmp_path):
    bundle_dir, site = sites["int8"]
    photo = site.parent / "photo.jpg"  # larger than the model's input, as a photo is
    with Image.open(SAMPLES / example_rows()[0][1]) as image:
        image.convert("RGB").resize((1600, 1200), Image.Resampling.LANCZOS).save(photo, quality=92)
    text = "such a serene little card 🐱 东京"
    result, parts = browser.page_state(f"{server}/int8/index.html?text={text}&image=../photo.jpg", "result",
                                       evaluate=PAGE_PARTS, screenshot=str(tmp_path / "page.png"))
    result, parts = json.loads(result), json.loads(parts)
    prediction = Predictor(bundle_dir).predict(text, photo)
    assert result["label"] == prediction.label == parts["label"]
    assert result["scores"].keys() == prediction.scores.keys()
    assert result["latency_ms"]["preprocess"] > 0 and result["latency_ms"]["inference"] > 0
    assert parts["preview"] == 1600 and parts["text"] == text  # the example is shown, not an empty form
    assert parts["picker"] == "image/*" and parts["camera"] == "environment" and parts["drop"]
    best = sorted(prediction.scores.items(), key=lambda item: -item[1])[:5]
    assert [name for name, _, _ in parts["bars"]] == [name for name, _ in best]
    assert [width for _, width, _ in parts["bars"]] == pytest.approx([100 * score for _, score in best], abs=0.1)
    assert all(drawn > 0 for _, _, drawn in parts["bars"])  # the bars are drawn, not only styled
    size = (bundle_dir / "model.tflite").stat().st_size / 2**20
    assert f"6 labels · int8, {size:.1f} MB" in parts["model"]
    assert re.fullmatch(r"preprocessing [\d.]+ ms · inference [\d.]+ ms · int8, [\d.]+ MB", parts["timings"])
    assert Image.open(tmp_path / "page.png").size == (1200, 800)


@needs_browser
def test_without_a_photo_the_preview_takes_no_room(sites, server, browser):
    # `.drop img` is a block: without `[hidden] { display: none }` the empty preview showed its alt text.
    hidden = "getComputedStyle(document.getElementById('preview')).display"
    _, display = browser.page_state(f"{server}/int8/index.html?text=a calm card", "result", evaluate=hidden)
    assert display == "none"


# Chooses a file the browser cannot decode with the page's file input, as a user does after a first photo, and
# returns what the page then shows once the classification failed (or after 20 s).
CHOOSE_A_BROKEN_PHOTO = """(async () => {
  const input = document.getElementById('image');
  const chosen = new DataTransfer();
  chosen.items.add(new File([new Uint8Array([0xff, 0xd8, 0xff, 0x20])], 'IMG_9999.jpg', {type: 'image/jpeg'}));
  input.files = chosen.files;
  input.dispatchEvent(new Event('change'));
  const result = document.getElementById('result');
  for (let waited = 0; waited < 20000 && !result.textContent.includes('error'); waited += 50) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return JSON.stringify({
    result: JSON.parse(result.textContent),
    label: document.getElementById('label').textContent,
    bars: document.querySelectorAll('#bars li').length,
    preview: !document.getElementById('preview').hidden,
    model: document.getElementById('model').textContent,
  });
})()"""


@needs_browser
def test_a_photo_the_browser_cannot_read_is_named_and_the_last_answer_goes(sites, server, browser):
    # The page kept the first photo's label and score bars beside the broken file's empty preview, with
    # "error: cannot read the image" below the form: the old answer read as the new photo's.
    text, image = example_rows()[0]
    _, shown = browser.page_state(f"{server}/int8/index.html?text={text}&image=../images/{image[7:]}", "result",
                                  evaluate=CHOOSE_A_BROKEN_PHOTO)
    shown = json.loads(shown)
    reason = "IMG_9999.jpg: cannot read this photo: not an image file, or a format this browser cannot decode"
    assert shown["result"]["error"].startswith(reason)
    assert shown["label"] == "error: " + shown["result"]["error"]
    assert shown["bars"] == 0 and not shown["preview"]
    assert shown["model"].startswith("6 labels")


@needs_browser
def test_a_broken_photo_in_the_address_is_named_and_the_model_still_loaded(sites, server, browser):
    # The address's photo failing was reported as "the model could not be loaded".
    _, site = sites["int8"]
    (site.parent / "broken.jpg").write_bytes(b"\xff\xd8\xff broken")
    result, model = browser.page_state(f"{server}/int8/index.html?image=../broken.jpg", "result",
                                       evaluate="document.getElementById('model').textContent")
    assert json.loads(result)["error"].startswith("broken.jpg: cannot read this photo")
    assert model.startswith("6 labels")


@needs_browser
def test_opened_as_a_file_the_page_says_how_to_serve_it(sites, browser):
    # A double-clicked index.html (file://) loads no module: the page said "loading the model..." for ever.
    _, site = sites["int8"]
    status, model = browser.page_state((site / "index.html").as_uri(), "status",
                                       evaluate="document.getElementById('model').textContent")
    assert status == f"serve this folder and open its address instead: python3 -m http.server -d {site}/, then " \
                     "open localhost:8000 in this browser"
    assert model == "the model cannot load from a file:// address"


@needs_browser
def test_the_site_runs_its_bundle_test_vectors(sites, server, browser):
    bundle_dir, _ = sites["int8"]
    vectors = read_test_vectors(bundle_dir)["vectors"]
    results = json.loads(browser.page_text(f"{server}/int8/index.html?examples=bundle/test_vectors.json", "result"))
    assert [result["label"] for result in results] == [vector["label"] for vector in vectors]
    assert [result["pixel_sum"] for result in results] == [vector["pixels"]["sum"] for vector in vectors]


@needs_browser
def test_the_site_loads_nothing_from_elsewhere(sites):
    _, site = sites["none"]
    page = "".join((site / name).read_text() for name in ("index.html", "app.js", "preprocessing.js", "style.css"))
    assert "http://" not in page and "https://" not in page
    assert sorted(path.name for path in (site / "wasm").iterdir()) == [
        "litert_wasm_compat_internal.js", "litert_wasm_compat_internal.wasm",
        "litert_wasm_internal.js", "litert_wasm_internal.wasm",
    ]


@needs_browser
def test_cli_web_prints_the_site_and_its_size(sites, tmp_path, capsys):
    bundle_dir, _ = sites["none"]
    code = main(["web", str(bundle_dir), "--out", str(tmp_path / "site"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["size_bytes"] == sum(path.stat().st_size for path in (tmp_path / "site").rglob("*") if path.is_file())
    assert (tmp_path / "site" / "bundle" / "model.tflite").read_bytes() == (bundle_dir / "model.tflite").read_bytes()


@pytest.mark.skipif(shutil.which("npm") is None, reason="needs npm: apt-get install -y npm")
def test_cli_web_says_once_what_it_wrote(tiny_bundle, tmp_path, capsys):
    # The builder's own log line and the command's summary both said it: "wrote site (20 files, 20.2 MB)"
    # then "wrote the web site site (20 files, 20.2 MB); serve it with: ...".
    assert main(["web", str(tiny_bundle["bundle"]), "--out", str(tmp_path / "site")]) == 0
    captured = capsys.readouterr()
    summaries = [line for line in (captured.out + captured.err).splitlines() if " files, " in line]
    assert len(summaries) == 1 and summaries[0].startswith("wrote the web site "), summaries
    assert "serve it with: python3 -m http.server -d " in summaries[0]


def test_without_npm_the_error_says_what_to_install(tmp_path, monkeypatch):
    bundle_dir = tmp_path / "bundle"
    export_bundle(save_tiny_run(tmp_path / "run"), bundle_dir)
    monkeypatch.setenv(site_builder.NPM_CACHE_ENV, str(tmp_path / "empty-cache"))
    monkeypatch.setattr(site_builder.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="needs npm .* apt-get install -y npm"):
        build_site(bundle_dir, tmp_path / "site")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(UserError, match="not an mmkeras site"):
        build_site(bundle_dir, tmp_path / "notes")


FAKE_NPM = """#!{python}
import pathlib, sys, time
prefix = pathlib.Path(sys.argv[sys.argv.index("--prefix") + 1])
with (prefix.parent / "npm_runs").open("a") as runs:
    runs.write("ci\\n")
time.sleep(1)  # long enough for a second install to look while this one runs
for source in {sources!r}:
    (prefix / "node_modules" / source).parent.mkdir(parents=True, exist_ok=True)
    (prefix / "node_modules" / source).write_text("")
"""


def test_two_sites_built_at_once_install_the_packages_once(tmp_path, monkeypatch):
    """`npm ci` deletes node_modules first: a second install racing the first would pull files from its copy."""
    npm = tmp_path / "bin" / "npm"
    npm.parent.mkdir()
    npm.write_text(FAKE_NPM.format(python=sys.executable, sources=list(site_builder.VENDOR_FILES)))
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{npm.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv(site_builder.NPM_CACHE_ENV, str(tmp_path / "npm-cache"))
    cache = site_builder.npm_cache_folder()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        installed = list(pool.map(site_builder.install_packages, [cache, cache]))
    assert installed == [cache / "node_modules"] * 2
    assert (cache.parent / "npm_runs").read_text().splitlines() == ["ci"]  # was: twice


@needs_browser
@needs_browser
def test_export_web_builds_the_site_inside_the_bundle(sites, tmp_path, capsys):
    bundle_dir, _ = sites["none"]
    run_dir = bundle_dir.parent / "run"
    code = main(["export", str(run_dir), "--out", str(tmp_path / "bundle"), "--web", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["web"]["path"] == str(tmp_path / "bundle" / "web")
    site_bundle = tmp_path / "bundle" / "web" / "bundle"
    assert (site_bundle / "model.tflite").read_bytes() == (tmp_path / "bundle" / "model.tflite").read_bytes()
