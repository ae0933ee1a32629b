"""`Predictor`: classify a text + image pair on the device, without TensorFlow.

A single-label bundle (`classify`, `match`) gives one label and softmax
probabilities; a `multilabel` bundle gives a sigmoid score per label and the
set of labels at or above their thresholds (bundle.json's `output_activation`
and `thresholds`).

It reads a bundle (see `mmkeras.runtime.bundle`), preprocesses with the same
TensorFlow-free `MultimodalPreprocessor` and tokenizer file that training used,
and runs `model.tflite` with the LiteRT interpreter. Imports: numpy, pillow,
tokenizers, mmkeras.preprocessing and the export package's TF-free modules.
"""

import dataclasses
from pathlib import Path

import numpy as np

from mmkeras.errors import UserError
from mmkeras.preprocessing import MultimodalPreprocessor
from mmkeras.preprocessing.image import UnreadableImageError
from mmkeras.runtime.bundle import PREPROCESSOR_FILE, read_bundle
from mmkeras.runtime.interpreter import LiteRTModel
from mmkeras.runtime.outputs import output_of


@dataclasses.dataclass
class Prediction:
    """One prediction.

    Args:
        label: the most likely class (the highest score).
        scores: class name -> score, in label order: the softmax probability,
            or for a multilabel bundle the label's own sigmoid.
        logits: the raw model output, float32 [num_classes].
        labels: the predicted labels: `[label]`, or for a multilabel bundle
            every label whose score is at or above its threshold (maybe none),
            in label order.
    """

    label: str
    scores: dict[str, float]
    logits: np.ndarray
    labels: list[str]


class Predictor:
    """Predict labels from a bundle folder.

    Args:
        bundle_dir: a folder written by `mmkeras.export_bundle`.
        num_threads: CPU threads for the interpreter; `None` lets it pick.
        unfinished_ok: accept an export's staging folder (for the exporter's
            own checks; users never need it).

    Attributes:
        bundle: the parsed bundle.json (a dict; see docs/bundle.md).
        labels: class names in logit order.
        output: how its logits become scores and labels (`BundleOutput`, from
            bundle.json's `output_activation`).
        multilabel: whether scores are per-label sigmoids (a `multilabel` bundle).
        thresholds: per label, the score at and above which it is predicted
            (multilabel bundles; `None` otherwise).
        preprocessor: the bundle's `MultimodalPreprocessor`.

    Example:
    >>> predictor = Predictor("bundles/demo")  # doctest: +SKIP
    >>> prediction = predictor.predict("a small red thing", "photo.jpg")  # doctest: +SKIP
    >>> prediction.label, round(prediction.scores[prediction.label], 2)  # doctest: +SKIP
    ('small_red', 0.93)
    >>> predictor.predict(None, "photo.jpg").label  # a missing text  # doctest: +SKIP
    'small_red'
    """

    def __init__(self, bundle_dir: str | Path, *, num_threads: int | None = None, unfinished_ok: bool = False):
        self.path = Path(bundle_dir)
        self.bundle = read_bundle(self.path, unfinished_ok=unfinished_ok)
        self.output = output_of(self.bundle)
        self.preprocessor = MultimodalPreprocessor.load(self.path)
        self.model = _load_model(self.path / self.bundle["model_file"], num_threads)
        self._check_model_matches_bundle()
        self._check_model_matches_preprocessor()

    @property
    def labels(self) -> list[str]:
        return self.bundle["labels"]

    @property
    def multilabel(self) -> bool:
        return self.output.thresholded

    @property
    def thresholds(self) -> list[float] | None:
        return self.bundle.get("thresholds") if self.multilabel else None

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """Scores float64 [..., num_classes] of logits: softmax, or a sigmoid per label for a multilabel bundle."""
        return self.output.scores(logits)

    def predicted_labels(self, scores: np.ndarray) -> list[str]:
        """The labels one example's scores predict: the best one, or those at or above their thresholds."""
        # the schema asks every sigmoid bundle for thresholds
        return self.output.predicted_labels(scores, self.labels, self.thresholds)

    def predict(self, text: str | bytes | None, image: str | Path | bytes | None) -> Prediction:
        """Classify one example; `None` (or "") marks a missing text or image.

        Raises:
            UserError: the image cannot be read (missing, not a regular file,
                not an image, over `max_image_pixels`), or the text is not
                valid UTF-8 (`InvalidTextError`, see `clean_text`).
        """
        try:
            inputs = self.preprocessor([text], [image])
        except UnreadableImageError as error:
            raise UserError(str(error)) from None
        [logits] = self.predict_inputs(inputs)
        scores = self.scores(logits)
        return Prediction(
            label=self.labels[int(np.argmax(logits))],
            scores={label: float(score) for label, score in zip(self.labels, scores)},
            logits=logits,
            labels=self.predicted_labels(scores),
        )

    def predict_inputs(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Logits float32 [B, num_classes] for a batch of preprocessed model inputs."""
        return self.model(inputs)

    def _check_model_matches_preprocessor(self):
        """An edited preprocessor.json must still give the tensors the model takes."""
        shapes = {name: tuple(details["shape"][1:]) for name, details in self.model.input_details.items()}
        expected = {
            "token_ids": (self.preprocessor.sequence_length,),
            "image": (*self.preprocessor.image_size, 3),
        }
        for name, shape in expected.items():
            if name in shapes and shapes[name] != shape:
                raise UserError(
                    f"the preprocessing gives {name} of shape {list(shape)} but the model takes {list(shapes[name])}",
                    path=self.path / PREPROCESSOR_FILE,
                )

    def _check_model_matches_bundle(self):
        """A model.tflite swapped in from another bundle would give silently wrong labels."""
        expected = sorted(tensor["name"] for tensor in self.bundle["inputs"])
        num_classes = int(self.model.output_details["shape"][-1])
        if sorted(self.model.input_names) != expected or num_classes != len(self.labels):
            raise UserError(
                f"{self.bundle['model_file']} does not match bundle.json: the model takes "
                f"{sorted(self.model.input_names)} and gives {num_classes} logits; bundle.json lists "
                f"{expected} and {len(self.labels)} labels",
                path=self.path / self.bundle["model_file"],
            )


def _load_model(path: Path, num_threads: int | None) -> LiteRTModel:
    """The bundle's model; a file the interpreter refuses is the user's file, not a bug."""
    try:
        return LiteRTModel(path, num_threads=num_threads)
    except (ValueError, RuntimeError) as error:
        # The interpreter raises ValueError for a FlatBuffer that fails verification and RuntimeError
        # when tensors cannot be allocated; the first line says which.
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"the LiteRT interpreter cannot load this model: {reason}", path=path) from None
