"""`explain`: why a model decided what it did on one example, as a PNG and a JSON file.

For any target (a run folder, or a LiteRT bundle without TensorFlow):
occlusion attribution over image patches and words, and the modality
contribution (`occlusion_attribution`). For a run with cross-attention
fusion, also the attention of the text tokens over the image patches and
the attention each token receives (`cross_attention_maps`).

Example:
>>> explanation = explain("runs/demo", "such a serene little card", "photo.png", out="why")  # doctest: +SKIP
>>> explanation["label"], explanation["modality"]  # doctest: +SKIP
('red_calm', {'fused': 0.98, 'text_only': 0.31, 'image_only': 0.45})
"""

import logging
from pathlib import Path

from mmkeras.atomic_files import write_atomically, write_json_atomically
from mmkeras.errors import UserError
from mmkeras.evaluation import plots
from mmkeras.evaluation.occlusion import occlusion_attribution
from mmkeras.evaluation.target_predictions import load_target
from mmkeras.preprocessing.image import UnreadableImageError

EXPLANATION_JSON = "explanation.json"
EXPLANATION_PNG = "explanation.png"

logger = logging.getLogger("mmkeras")


def explain(target, text: str | None, image, *, out=None) -> dict:
    """Explain the prediction of a run or a bundle on one (text, image) example.

    Args:
        target: a run folder or a bundle folder.
        text: the text, or `None`.
        image: the image path, or `None`.
        out: a folder for explanation.json and explanation.png (the figure
            needs matplotlib), or `None`.

    Returns:
        `occlusion_attribution`'s figures plus `label`, and `attention`
        (`{"image": [rows][columns], "tokens": [[token, weight], ...]}`) for
        a cross-attention run given a text and an image (else `None`).
    """
    if text is None and image is None:
        raise UserError("give a text, an image or both")
    predict_logits, preprocessor, labels, run = load_target(target)
    try:
        explanation = occlusion_attribution(predict_logits, preprocessor, text, image)
        explanation["attention"] = None
        # The text's attention over the image needs both: without a text the figure drew a flat map of nothing.
        if run is not None and text is not None and image is not None:
            from mmkeras.evaluation.attention_maps import cross_attention_maps, has_cross_attention

            if has_cross_attention(run.model):
                maps = cross_attention_maps(run, [text], [image])
                explanation["attention"] = {"image": maps["image"][0].tolist(), "tokens": maps["tokens"][0]}
        pixels = None if image is None else preprocessor([None], [image])["image"][0]
    except UnreadableImageError as error:
        raise UserError(str(error)) from None
    explanation = {"label": labels[explanation["class_index"]], **explanation}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomically(out / EXPLANATION_JSON, explanation)
        if plots.can_plot():
            png = plots.explanation_png(pixels, explanation, labels)
            write_atomically(out / EXPLANATION_PNG, lambda partial: partial.write_bytes(png))
        else:  # the device-only install: say why the figure is missing rather than leave the user looking
            logger.info('matplotlib is not installed: no %s in %s (pip install "mmkeras[train]")', EXPLANATION_PNG, out)
    return explanation
