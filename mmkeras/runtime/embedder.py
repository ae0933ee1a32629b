"""`Embedder`: texts and images into an align run's shared embedding space on the device, without TensorFlow.

It reads a dual-encoder bundle (`mmkeras export` of an align run: a text and
an image encoder, each a .tflite) and preprocesses exactly as training did.
Embeddings are L2-normalised again after the interpreter (an int8 encoder's
dequantized output is only nearly unit length), so a dot product is a cosine.

Example:
>>> embedder = Embedder("bundles/align")                        # doctest: +SKIP
>>> embedder.match("a red ring", "photo.png")                   # doctest: +SKIP
0.83
>>> embedder.embed_text(["a red ring", "a blue square"]).shape  # doctest: +SKIP
(2, 64)
"""

import json
from pathlib import Path

import numpy as np

from mmkeras.errors import UserError
from mmkeras.preprocessing import MultimodalPreprocessor
from mmkeras.runtime.bundle import BUNDLE_FILE
from mmkeras.runtime.interpreter import LiteRTModel

DUAL_ENCODER_KIND = "dual_encoder"


class Embedder:
    """Embed texts and images with a dual-encoder bundle.

    Args:
        bundle_dir: a folder written by `mmkeras export` from an align run.
        num_threads: CPU threads for the interpreters; `None` lets them pick.

    Attributes:
        bundle: the parsed bundle.json.
        preprocessor: the bundle's `MultimodalPreprocessor`.
    """

    def __init__(self, bundle_dir: str | Path, *, num_threads: int | None = None):
        bundle_dir = Path(bundle_dir)
        self.bundle = read_dual_encoder_bundle(bundle_dir)
        self.preprocessor = MultimodalPreprocessor.load(bundle_dir)
        self.text_encoder = LiteRTModel(bundle_dir / self.bundle["encoders"]["text_encoder"], num_threads=num_threads)
        self.image_encoder = LiteRTModel(
            bundle_dir / self.bundle["encoders"]["image_encoder"], num_threads=num_threads
        )

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Unit-length embeddings [N, D] of `texts`."""
        token_ids, padding_mask, _ = self.preprocessor.encode_texts(list(texts))
        return self.encode_tokens(token_ids, padding_mask)

    def embed_image(self, images: list[str | Path | bytes]) -> np.ndarray:
        """Unit-length embeddings [N, D] of images (paths or encoded bytes)."""
        pixels, _ = self.preprocessor.load_images(list(images))
        return self.encode_pixels(pixels)

    def match(self, text: str, image: str | Path | bytes) -> float:
        """The cosine similarity of a text and an image: higher means a better fit."""
        return float(np.sum(self.embed_text([text])[0] * self.embed_image([image])[0]))

    def encode_tokens(self, token_ids: np.ndarray, padding_mask: np.ndarray) -> np.ndarray:
        """Unit-length embeddings of already tokenized texts."""
        return _unit_rows(self.text_encoder({"token_ids": token_ids, "padding_mask": padding_mask}))

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Unit-length embeddings of already decoded images (0..255 RGB, [N, H, W, 3])."""
        return _unit_rows(self.image_encoder({"image": pixels}))


def read_dual_encoder_bundle(bundle_dir: Path) -> dict:
    """bundle.json of a dual-encoder bundle (`UserError` for a classifier bundle or a missing file)."""
    path = bundle_dir / BUNDLE_FILE
    try:
        bundle = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UserError(f"not a bundle folder: {error.strerror}", path=path) from None
    except json.JSONDecodeError as error:
        raise UserError(f"invalid JSON: {error.msg}", path=path, row=error.lineno) from None
    if bundle.get("kind") != DUAL_ENCODER_KIND:
        raise UserError("not a dual-encoder bundle (export an align run: mmkeras export ALIGN_RUN)", path=path)
    return bundle


def _unit_rows(embeddings: np.ndarray) -> np.ndarray:
    embeddings = np.asarray(embeddings, np.float32)
    return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
