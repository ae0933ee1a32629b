"""`MultimodalPreprocessor`: texts and images to the four model inputs.

It pairs a `TextTokenizer` with an image size and produces, for a batch, the
dict every mmkeras model takes:

- `token_ids`: int32 `[B, sequence_length]`
- `padding_mask`: int32 `[B, sequence_length]` (1 = real token, 0 = padding)
- `image`: float32 `[B, height, width, 3]`, RGB in 0..255
- `modality_mask`: float32 `[B, 2]`, column 0 = text present, column 1 = image present

A missing text (`None`, or only whitespace) is tokenized as the empty string
with text mask 0; a missing image (`None` or `""`) is an all-zero image with
image mask 0. It saves as `preprocessor.json` (the settings, readable by a
mobile developer rebuilding the preprocessing) next to `tokenizer.json`.
"""

import json
from pathlib import Path
from typing import TypeGuard, TypeVar

import numpy as np

from mmkeras.errors import UserError
from mmkeras.preprocessing.image import (
    BACKGROUND,
    DEFAULT_RESAMPLE,
    JPEG_DRAFT_FACTOR,
    MAX_IMAGE_PIXELS,
    RESAMPLE_FILTERS,
    load_image,
)
from mmkeras.preprocessing.text import TextTokenizer
from mmkeras.preprocessing.text_cleaning import clean_text

FORMAT_VERSION = 1
CONFIG_FILE = "preprocessor.json"
TOKENIZER_FILE = "tokenizer.json"


class MultimodalPreprocessor:
    """Turns (text, image) pairs into model inputs.

    Args:
        tokenizer: the `TextTokenizer` whose ids the text backbone reads.
        image_size: `(height, width)` the vision backbone takes.
        resample: how images are resized: `bilinear` (default), `bicubic`
            or `nearest`, as the vision checkpoint was trained.
        crop_pct: `None` (default) resizes whole images; a share in (0, 1]
            resizes them to cover `image_size / crop_pct` and keeps the
            centre, as timm evaluates the checkpoint (`load_image`).
        max_image_pixels: images with more pixels are refused (before decoding).
        jpeg_draft_factor: JPEGs are decoded at the smallest DCT scale that
            keeps this many times the resize size (`load_image`); `None`
            decodes every pixel, as `preprocessor.json` files without the
            key (written before it existed) do.

    Example:
    >>> tokenizer = TextTokenizer.train_from_texts(
    ...     ["a red circle", "a blue square"], vocabulary_size=64, sequence_length=8)
    >>> preprocessor = MultimodalPreprocessor(tokenizer, image_size=(32, 32))
    >>> inputs = preprocessor(["a red circle", None], [None, None])
    >>> {name: value.shape for name, value in inputs.items()}
    {'token_ids': (2, 8), 'padding_mask': (2, 8), 'image': (2, 32, 32, 3), 'modality_mask': (2, 2)}
    >>> inputs["modality_mask"].tolist()
    [[1.0, 0.0], [0.0, 0.0]]
    """

    def __init__(
        self,
        tokenizer: TextTokenizer,
        image_size: tuple[int, int],
        resample: str = DEFAULT_RESAMPLE,
        *,
        crop_pct: float | None = None,
        max_image_pixels: int = MAX_IMAGE_PIXELS,
        jpeg_draft_factor: int | None = JPEG_DRAFT_FACTOR,
    ):
        height, width = (int(side) for side in image_size)
        if height < 1 or width < 1:
            raise ValueError(f"image_size must be positive (height, width), got {image_size}")
        if resample not in RESAMPLE_FILTERS:
            raise ValueError(f"resample must be one of {', '.join(RESAMPLE_FILTERS)}, got {resample!r}")
        if crop_pct is not None and not 0.0 < crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
        if max_image_pixels < 1:
            raise ValueError(f"max_image_pixels must be positive, got {max_image_pixels}")
        if jpeg_draft_factor is not None and not _is_count(jpeg_draft_factor):
            raise ValueError(f"jpeg_draft_factor must be None or a positive integer, got {jpeg_draft_factor!r}")
        self.tokenizer = tokenizer
        self.image_size = (height, width)
        self.resample = resample
        self.crop_pct = None if crop_pct is None else float(crop_pct)
        self.max_image_pixels = int(max_image_pixels)
        self.jpeg_draft_factor = jpeg_draft_factor

    @property
    def sequence_length(self) -> int:
        return self.tokenizer.sequence_length

    def __call__(
        self, texts: list[str | bytes | None], images: list[str | Path | bytes | None]
    ) -> dict[str, np.ndarray]:
        """The four model inputs for a batch of (text, image) pairs.

        Args:
            texts: one text per example, `None` when missing.
            images: one image path or encoded bytes per example, `None` when missing.

        Raises:
            UnreadableImageError: an image cannot be read.
            InvalidTextError: a text is not valid UTF-8 (`clean_text`).
        """
        if len(texts) != len(images):
            raise ValueError(f"got {len(texts)} texts but {len(images)} images")
        token_ids, padding_mask, text_present = self.encode_texts(texts)
        pixels, image_present = self.load_images(images)
        return {
            "token_ids": token_ids,
            "padding_mask": padding_mask,
            "image": pixels,
            "modality_mask": np.stack([text_present, image_present], axis=1),
        }

    def encode_texts(self, texts: list[str | bytes | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Token ids, padding masks (int32 `[N, L]`) and text presence (float32 `[N]`)."""
        cleaned = [None if text is None else clean_text(text) for text in texts]
        token_ids, padding_mask = self.tokenizer.encode_batch([text if is_present(text) else "" for text in cleaned])
        return token_ids, padding_mask, np.asarray([is_present(text) for text in cleaned], np.float32)

    def load_images(self, images: list[str | Path | bytes | None]) -> tuple[np.ndarray, np.ndarray]:
        """Pixels (float32 `[N, H, W, 3]`, zeros where missing) and image presence (float32 `[N]`)."""
        pixels = np.zeros((len(images), *self.image_size, 3), np.float32)
        present = np.zeros(len(images), np.float32)
        for index, image in enumerate(images):
            if is_present(image):
                pixels[index] = load_image(
                    image,
                    self.image_size,
                    self.resample,
                    crop_pct=self.crop_pct,
                    max_pixels=self.max_image_pixels,
                    jpeg_draft_factor=self.jpeg_draft_factor,
                )
                present[index] = 1.0
        return pixels, present

    def get_config(self) -> dict:
        """The settings saved in `preprocessor.json`."""
        return {
            "format": FORMAT_VERSION,
            "sequence_length": self.sequence_length,
            "tokenizer": {
                "file": TOKENIZER_FILE,
                "type": self.tokenizer.model_type,
                "pad_id": self.tokenizer.pad_id,
                "lowercase": self.tokenizer.lowercase,
                "strip_accents": self.tokenizer.strip_accents,
                "vocabulary_size": self.tokenizer.vocabulary_size,
            },
            "image_size": list(self.image_size),
            "max_image_pixels": self.max_image_pixels,
            "image": {
                "layout": "height, width, RGB",
                "resample": self.resample,
                "crop_pct": self.crop_pct,
                "value_range": [0, 255],
                "alpha_background": list(BACKGROUND),
                "exif_orientation": True,
                # JPEG DCT scale: the smallest of 1/2, 1/4, 1/8 keeping this factor x the resize size; null: full
                "jpeg_draft_factor": self.jpeg_draft_factor,
            },
            "missing_text": "empty string, modality_mask[:, 0] = 0",
            "missing_image": "all-zero image, modality_mask[:, 1] = 0",
        }

    def save(self, directory: str | Path):
        """Write `preprocessor.json` and `tokenizer.json` into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(json.dumps(self.get_config(), indent=2) + "\n", encoding="utf-8")
        self.tokenizer.save(directory / TOKENIZER_FILE)

    @classmethod
    def load(cls, directory: str | Path) -> "MultimodalPreprocessor":
        """Read a preprocessor written by `save` (`UserError` naming the file when it is not one)."""
        path = Path(directory) / CONFIG_FILE
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or error
            raise UserError(f"cannot read preprocessor: {reason}", path=path) from None
        except json.JSONDecodeError as error:
            raise UserError(f"invalid JSON: {error.msg}", path=path, row=error.lineno) from None
        version = config.get("format") if isinstance(config, dict) else None
        if version != FORMAT_VERSION:
            raise UserError(
                f"unsupported preprocessor format {version!r} (this mmkeras reads {FORMAT_VERSION})", path=path
            )
        try:
            tokenizer_file, sequence_length, image_size = (
                config["tokenizer"]["file"], config["sequence_length"], config["image_size"]
            )
        except (KeyError, TypeError) as error:
            raise UserError(f"incomplete preprocessor settings (no {error})", path=path) from None
        _check_settings(tokenizer_file, sequence_length, image_size, config.get("max_image_pixels"), path)
        tokenizer = TextTokenizer.load(Path(directory) / tokenizer_file)
        if tokenizer.sequence_length != sequence_length:
            raise UserError(
                f"sequence_length {sequence_length} differs from the tokenizer's {tokenizer.sequence_length}", path=path
            )
        image = config.get("image", {})
        if not isinstance(image, dict):
            raise UserError(f"image must be an object of image settings, got {image!r}", path=path)
        resample = image.get("resample", DEFAULT_RESAMPLE)
        if resample not in RESAMPLE_FILTERS:
            raise UserError(f"unknown image resample {resample!r} (known: {', '.join(RESAMPLE_FILTERS)})", path=path)
        crop_pct = image.get("crop_pct")  # files from before the centre crop have none
        if crop_pct is not None and not (_is_number(crop_pct) and 0.0 < crop_pct <= 1.0):
            raise UserError(f"image crop_pct must be null or a number in (0, 1], got {crop_pct!r}", path=path)
        jpeg_draft_factor = image.get("jpeg_draft_factor")  # files from before reduced decoding have none
        if jpeg_draft_factor is not None and not _is_count(jpeg_draft_factor):
            raise UserError(
                f"image jpeg_draft_factor must be null or a positive integer, got {jpeg_draft_factor!r}", path=path
            )
        max_image_pixels = config.get("max_image_pixels") or MAX_IMAGE_PIXELS
        return cls(
            tokenizer,
            tuple(image_size),
            resample,
            crop_pct=crop_pct,
            max_image_pixels=max_image_pixels,
            jpeg_draft_factor=jpeg_draft_factor,
        )

    def __repr__(self):
        return (
            f"MultimodalPreprocessor({self.tokenizer!r}, image_size={self.image_size}, resample={self.resample!r}, "
            f"crop_pct={self.crop_pct}, jpeg_draft_factor={self.jpeg_draft_factor})"
        )


def _check_settings(tokenizer_file, sequence_length, image_size, max_image_pixels, path: Path):
    """The values `load` uses, checked so that an edited file is reported, not a crash later."""
    in_folder = isinstance(tokenizer_file, str) and Path(tokenizer_file).name == tokenizer_file
    if not in_folder or tokenizer_file in ("", ".", ".."):
        raise UserError(f"tokenizer.file must be a file name in the same folder, got {tokenizer_file!r}", path=path)
    if not _is_count(sequence_length):
        raise UserError(f"sequence_length must be a positive integer, got {sequence_length!r}", path=path)
    if not (isinstance(image_size, list) and len(image_size) == 2 and all(map(_is_count, image_size))):
        raise UserError(f"image_size must be [height, width] of positive integers, got {image_size!r}", path=path)
    if max_image_pixels is not None and not _is_count(max_image_pixels):
        raise UserError(f"max_image_pixels must be a positive integer, got {max_image_pixels!r}", path=path)


# A text or image cell's value: `is_present` narrows `str | None` to `str`, `str | Path | None` to `str | Path`.
_Cell = TypeVar("_Cell", bound=str | Path | bytes)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_present(value: _Cell | None) -> TypeGuard[_Cell]:
    """Whether a text or image cell holds something (`None` and blank strings are missing)."""
    if value is None:
        return False
    return not (isinstance(value, str) and not value.strip())
