"""Fuzz the device runtime and the manifest reader: random texts, bytes, images and manifests.

Every input must end in a prediction (or a manifest) or in a typed mmkeras
error (`UserError` and its subclasses); anything else is a crash. Prints one
JSON object with the counts per outcome and target, the slowest input and up
to 5 crashing inputs. `tests/test_fuzz.py` runs the same properties with a few
examples in CI.

    python benchmarks/fuzz_runtime.py --bundle bundles/demo --examples 10000
"""

import argparse
import collections
import csv
import io
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mmkeras.data.manifest import read_manifest
from mmkeras.errors import UserError
from mmkeras.framework_logs import quiet_frameworks
from mmkeras.runtime.predictor import Predictor

IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
IMAGE_MODES = ("RGB", "RGBA", "L", "P", "1", "I;16", "CMYK", "LA")
# Characters that make CSV and JSON lines interesting, beside random unicode.
MANIFEST_PIECES = ("text", "image", "label", ",", '"', "\n", "\r\n", "{", "}", ":", "null", "img.png", "a", "A", " ")

# Any unicode code point, lone surrogates (what argv bytes that are not UTF-8 become) and control characters included.
any_character = st.characters(codec=None, exclude_categories=())
surrogate = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=())
random_text = st.text(any_character, max_size=200)
texts = st.one_of(
    st.none(),
    random_text,
    st.builds(lambda head, middle, tail: head + middle + tail, random_text, surrogate, random_text),
    st.binary(max_size=200),
)


@st.composite
def encoded_images(draw) -> bytes:
    """A small image of a random mode and format, then maybe truncated or with bytes overwritten."""
    mode, image_format = draw(st.sampled_from(IMAGE_MODES)), draw(st.sampled_from(IMAGE_FORMATS))
    size = (draw(st.integers(1, 48)), draw(st.integers(1, 48)))
    buffer = io.BytesIO()
    try:
        Image.new(mode, size).save(buffer, format=image_format)
    except (OSError, ValueError, KeyError):  # a mode this format cannot store
        Image.new("RGB", size).save(buffer, format=image_format)
    data = bytearray(buffer.getvalue())
    for position, value in draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), max_size=8)):
        data[position] = value
    return bytes(data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data)


images = st.one_of(st.none(), st.binary(max_size=3000), encoded_images())
cells = st.one_of(random_text, st.sampled_from(("", " ", "img.png", "a", "A", " a", "b")))
# Mostly the three columns, sometimes a cell too few or too many.
rows = st.lists(
    st.one_of(st.lists(cells, min_size=3, max_size=3), st.lists(cells, min_size=2, max_size=4)), min_size=1, max_size=6
)


def csv_manifest(cell_rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows([["text", "image", "label"], *cell_rows])
    return buffer.getvalue()


def jsonl_manifest(cell_rows: list[list[str]]) -> str:
    keys = ("text", "image", "label", "other")
    return "".join(json.dumps(dict(zip(keys, cells))) + "\n" for cells in cell_rows)


def utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate becomes bytes that are not UTF-8


suffixes = st.sampled_from((".csv", ".jsonl"))
# Well-formed files with random cells (most rows parse, some are bad), random pieces, and random bytes.
manifest_files = st.one_of(
    rows.map(lambda cell_rows: (".csv", utf8(csv_manifest(cell_rows)))),
    rows.map(lambda cell_rows: (".jsonl", utf8(jsonl_manifest(cell_rows)))),
    st.tuples(suffixes, st.lists(st.one_of(st.sampled_from(MANIFEST_PIECES), random_text), max_size=40).map(
        lambda pieces: utf8("".join(pieces)))),
    st.tuples(suffixes, st.binary(max_size=500)),
)
manifests = st.tuples(manifest_files, st.sampled_from(("fail", "skip")), images)


class Outcomes:
    """Counts of what each input ended in; non-mmkeras exceptions are crashes, kept as examples."""

    def __init__(self):
        self.counts = collections.Counter()
        self.crashes = []
        self.slowest = (0.0, None)

    def run(self, call, shown_input):
        started = time.perf_counter()
        try:
            call()
            self.counts["ok"] += 1
        except UserError as error:
            self.counts[type(error).__name__] += 1
        except BaseException as error:  # noqa: BLE001  # a crash is what this counts, whatever its type
            self.counts["crash"] += 1
            if len(self.crashes) < 5:
                self.crashes.append(f"{type(error).__name__}: {error} <- {shown_input!r:.300}")
        seconds = time.perf_counter() - started
        if seconds > self.slowest[0]:
            self.slowest = (seconds, f"{shown_input!r:.120}")

    def report(self) -> dict:
        return {
            "examples": sum(self.counts.values()),
            "outcomes": dict(self.counts.most_common()),
            "crashes": self.counts["crash"],
            "crash_examples": self.crashes,
            "slowest_ms": round(self.slowest[0] * 1000, 1),
            "slowest_input": self.slowest[1],
        }


def predict_property(predictor: Predictor, outcomes: Outcomes):
    """`predictor.predict(text, image)` on any text and any image bytes."""

    def check(text, image):
        outcomes.run(lambda: predictor.predict(text, image), (text, image))

    return given(texts, images)(check)


def manifest_property(folder: Path, outcomes: Outcomes):
    """`read_manifest` then `validate_images` on any bytes, with `img.png` holding any image bytes."""

    def check(case):
        (suffix, content), on_bad_row, image = case
        path = folder / f"manifest{suffix}"
        path.write_bytes(content)
        (folder / "img.png").write_bytes(image or b"")

        def read():
            manifest = read_manifest(path, on_bad_row=on_bad_row)
            manifest.validate_images((8, 8), on_bad_row)

        outcomes.run(read, case)

    return given(manifests)(check)


def fuzz(bundle: Path, examples: int, folder: Path) -> dict:
    """Run `examples` random inputs through each target; the counts per target."""
    predictor = Predictor(bundle, num_threads=1)
    every_input = settings(
        max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    results = {}
    for name, make_property in (("predict", lambda o: predict_property(predictor, o)),
                                ("manifest", lambda o: manifest_property(folder, o))):
        outcomes = Outcomes()
        started = time.perf_counter()
        every_input(make_property(outcomes))()
        results[name] = {**outcomes.report(), "seconds": round(time.perf_counter() - started, 1)}
    return results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="a bundle folder")
    parser.add_argument("--examples", type=int, default=10_000, help="random inputs per target")
    args = parser.parse_args(argv)
    logging.getLogger("mmkeras").setLevel(logging.ERROR)  # each skipped row is a warning: thousands of lines
    quiet_frameworks()  # Pillow's warnings about the damaged images it reads past, as the CLI does
    with tempfile.TemporaryDirectory(prefix="mmkeras-fuzz-") as folder:
        results = fuzz(args.bundle, args.examples, Path(folder))
    print(json.dumps(results, indent=2, ensure_ascii=True))
    return results


if __name__ == "__main__":
    sys.exit(1 if any(target["crashes"] for target in main().values()) else 0)
