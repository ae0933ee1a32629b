"""The ten-row manifest and preprocessor that the dataset tests share (tests/conftest.py's `manifest` and
`preprocessor` fixtures build them)."""

import numpy as np
from PIL import Image

from mmkeras.data.manifest import Manifest, read_manifest
from mmkeras.preprocessing import MultimodalPreprocessor, TextTokenizer

IMAGE_SIZE = (12, 20)
SEQUENCE_LENGTH = 8


def ten_row_manifest(folder) -> Manifest:
    """Ten rows, each its own label (`r0`..`r9`), with varied images and missing modalities, in `folder`."""
    rng = np.random.default_rng(0)
    lines = ["text,image,label"]
    for index in range(10):
        image = ""
        if index % 3 != 1:  # rows 1, 4, 7 have no image
            image = f"images/{index}.{['png', 'jpg', 'webp'][index % 3]}"
            (folder / "images").mkdir(exist_ok=True)
            pixels = rng.integers(0, 256, (30 + index, 25, 3), dtype=np.uint8)
            Image.fromarray(pixels).convert("RGBA" if index == 5 else "RGB").save(folder / image)
        text = "" if index % 4 == 2 else f"row {index} a red circle café"  # rows 2, 6 have no text
        lines.append(f"{text},{image},r{index}")
    (folder / "m.csv").write_text("\n".join(lines) + "\n")
    return read_manifest(folder / "m.csv")


def ten_row_preprocessor(manifest: Manifest) -> MultimodalPreprocessor:
    """A preprocessor whose tokenizer is trained on `manifest`'s texts, resizing images to `IMAGE_SIZE`."""
    tokenizer = TextTokenizer.train_from_texts(
        [row.text for row in manifest.rows], vocabulary_size=60, sequence_length=SEQUENCE_LENGTH
    )
    return MultimodalPreprocessor(tokenizer, IMAGE_SIZE)


def labels_of(manifest: Manifest) -> list[str]:
    return [row.label for row in manifest.rows]
