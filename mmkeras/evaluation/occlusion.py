"""`occlusion_attribution`: what a prediction rests on, found by hiding parts of the input (any model).

Works through `predict_logits(inputs)` alone, so it explains a Keras run
and a LiteRT bundle alike, without TensorFlow: each image patch of a grid
is filled with the image's mean colour in turn, and each word of the text is
removed in turn; the drop of the predicted class's probability is that
part's importance. The modality contribution compares the fused
probability with the text-only and image-only ones (a modality removed as
on the device). Zeiler & Fergus 2014 ("Visualizing and Understanding
Convolutional Networks") introduced occlusion maps.

Example:
>>> figures = occlusion_attribution(predictor.predict_inputs, predictor.preprocessor,
...                                 "a calm card", "photo.png")  # doctest: +SKIP
>>> figures["image_heatmap"]  # grid x grid probability drops  # doctest: +SKIP
"""

import numpy as np

from mmkeras.runtime.outputs import softmax

# Patches per image side.
OCCLUSION_GRID = 8


def occlusion_attribution(predict_logits, preprocessor, text: str | None, image, *, grid: int = OCCLUSION_GRID) -> dict:
    """Image-patch and word importances and the modality contribution of one prediction.

    Args:
        predict_logits: maps a batch of model inputs to logits [B, classes].
        preprocessor: the model's `MultimodalPreprocessor`.
        text: the text, or `None` when missing.
        image: the image (path or bytes), or `None` when missing.
        grid: patches per image side (at most the image's side in pixels).

    Returns:
        `{"class_index", "probability", "image_heatmap": [grid][grid] or
        None, "words": [{"word", "importance"}], "modality": {"fused",
        "text_only", "image_only"}}`: importances are drops of the predicted
        class's probability (negative: hiding it made the class likelier).
    """
    inputs = preprocessor([text], [image])
    probabilities = softmax(predict_logits(inputs))[0]
    predicted = int(probabilities.argmax())

    def probability_of(batch) -> np.ndarray:
        return softmax(predict_logits(batch))[:, predicted]

    heatmap = None
    if inputs["modality_mask"][0, 1]:
        occluded = occluded_images(inputs["image"][0], grid)
        batch = {name: np.repeat(value, len(occluded), axis=0) for name, value in inputs.items()}
        batch["image"] = occluded
        drops = probabilities[predicted] - probability_of(batch)
        heatmap = drops.reshape(grid, grid).tolist()
    words = (text or "").split()
    word_drops = []
    if inputs["modality_mask"][0, 0] and len(words) > 1:
        without_each = [" ".join(words[:i] + words[i + 1 :]) for i in range(len(words))]
        word_drops = (probabilities[predicted] - probability_of(preprocessor(without_each, [image] * len(words))))
    modality = {"fused": float(probabilities[predicted])}
    modality["text_only"] = float(probability_of(preprocessor([text], [None]))[0])
    modality["image_only"] = float(probability_of(preprocessor([None], [image]))[0])
    return {
        "class_index": predicted,
        "probability": float(probabilities[predicted]),
        "image_heatmap": heatmap,
        "words": [{"word": word, "importance": float(drop)} for word, drop in zip(words, word_drops)],
        "modality": modality,
    }


def occluded_images(image: np.ndarray, grid: int) -> np.ndarray:
    """`grid * grid` copies of `image` [H, W, 3], each with one patch (row-major) filled with the mean colour."""
    height, width = image.shape[:2]
    if not 1 <= grid <= min(height, width):
        raise ValueError(f"grid must be between 1 and the image side ({min(height, width)}), got {grid}")
    rows, columns = np.linspace(0, height, grid + 1).astype(int), np.linspace(0, width, grid + 1).astype(int)
    fill = image.reshape(-1, 3).mean(axis=0)
    copies = np.repeat(image[None], grid * grid, axis=0)
    for row in range(grid):
        for column in range(grid):
            copies[row * grid + column, rows[row] : rows[row + 1], columns[column] : columns[column + 1]] = fill
    return copies
