"""`zero_shot_evaluate`: classify images by their classes' names alone, with an align run.

Each class name is written into a prompt (`"a photo of {label}"`), embedded
by the run's text tower, and every image goes to the class whose prompt
embedding is the most similar to its own: no classifier is trained.

Example:
>>> figures = zero_shot_evaluate("runs/align", "samples/matching/concepts.csv", prompt="a {label}")  # doctest: +SKIP
>>> figures["accuracy"]                                                                              # doctest: +SKIP
0.93
"""

import numpy as np

from mmkeras.data.manifest import decoded_as, read_manifest
from mmkeras.errors import UserError
from mmkeras.evaluation.metrics import classification_figures
from mmkeras.progress import step_progress

DEFAULT_PROMPT = "{label}"
CHUNK_ROWS = 64


def zero_shot_evaluate(
    run_dir, data, prompt: str = DEFAULT_PROMPT, *, columns: dict[str, str] | None = None
) -> dict:
    """Zero-shot figures of an align run on a labelled manifest (its images; texts are ignored).

    Args:
        run_dir: a run folder written by `mmkeras align`.
        data: a labelled manifest; its label names are the classes.
        prompt: the text each class name is written into, with `{label}`.
        columns: `{role: column name}` where the manifest's differ from the run's.

    Returns:
        The figures of `classification_figures` plus `prompt` and `labels`.

    Raises:
        UserError: not an align run, a prompt without `{label}`, or a row without an image.
    """
    from mmkeras.models.dual_encoder import encoders, is_dual_encoder
    from mmkeras.quantization.run_loading import load_run
    from mmkeras.runs import manifest_columns

    if "{label}" not in prompt:
        raise UserError(f"--prompt must contain {{label}}, got {prompt!r}")
    run = load_run(run_dir)
    if not is_dual_encoder(run.model):
        raise UserError("--zero-shot needs an align run (mmkeras align)", path=run_dir)
    manifest = read_manifest(data, columns=manifest_columns(run_dir, columns))
    manifest, _ = manifest.validate_images(run.preprocessor.image_size, "fail", **decoded_as(run.preprocessor))
    for row in manifest.rows:
        if row.image is None:
            raise UserError("zero-shot classifies images: the row has none", path=manifest.path, row=row.line)
    labels = manifest.labels()
    text_encoder, image_encoder = encoders(run.model)
    token_ids, padding_mask, _ = run.preprocessor.encode_texts([prompt.format(label=label) for label in labels])
    class_embeddings = np.asarray(text_encoder({"token_ids": token_ids, "padding_mask": padding_mask}))
    predicted = []
    with step_progress("classifying images zero-shot", len(manifest.rows)) as progress:
        for start in range(0, len(manifest.rows), CHUNK_ROWS):
            pixels, _ = run.preprocessor.load_images([row.image for row in manifest.rows[start : start + CHUNK_ROWS]])
            similarity = np.asarray(image_encoder(pixels)) @ class_embeddings.T
            predicted.append(np.argmax(similarity, axis=-1))
            progress.update(min(start + CHUNK_ROWS, len(manifest.rows)))
    figures = classification_figures(manifest.encode_labels(labels), np.concatenate(predicted), labels)
    return {**figures, "prompt": prompt, "labels": labels}
