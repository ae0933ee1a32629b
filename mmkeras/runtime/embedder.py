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

from pathlib import Path

import numpy as np

from mmkeras.preprocessing import MultimodalPreprocessor
from mmkeras.runtime.bundle import DUAL_ENCODER_KIND, read_bundle
from mmkeras.runtime.interpreter import LiteRTModel


class Embedder:
    """Embed texts and images with a dual-encoder bundle.

    Args:
        bundle_dir: a folder written by `mmkeras export` from an align run.
        num_threads: CPU threads for the interpreters; `None` lets them pick.
        unfinished_ok: accept an export's staging folder (for the exporter's
            own parity check; see `read_bundle`).

    Attributes:
        bundle: the parsed bundle.json.
        preprocessor: the bundle's `MultimodalPreprocessor`.
    """

    def __init__(self, bundle_dir: str | Path, *, num_threads: int | None = None, unfinished_ok: bool = False):
        bundle_dir = Path(bundle_dir)
        self.bundle = read_bundle(bundle_dir, kinds=(DUAL_ENCODER_KIND,), unfinished_ok=unfinished_ok)
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


def _unit_rows(embeddings: np.ndarray) -> np.ndarray:
    embeddings = np.asarray(embeddings, np.float32)
    return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
