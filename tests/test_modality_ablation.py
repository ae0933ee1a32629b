"""The modality ablation from one pass per image equals the model run on rows with a modality removed."""

import keras
import numpy as np
import pytest
from PIL import Image

from mmkeras.evaluation.modality_ablation import ModalityLogits
from mmkeras.models import build_model


@pytest.fixture
def rows(tmp_path):
    rng = np.random.default_rng(0)
    images = []
    for index in range(6):
        path = tmp_path / f"{index}.png"
        Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(path)
        images.append(None if index == 2 else path)
    texts = [None if index == 4 else f"a {'red' if index % 2 else 'blue'} ring {index}" for index in range(6)]
    return texts, images


@pytest.mark.parametrize("split", [True, False], ids=["run model split at the backbones", "one graph (bundle)"])
def test_ablated_logits_equal_the_model_on_rows_without_a_modality(rows, split):
    texts, images = rows
    model, preprocessor = build_model(num_classes=3, texts=[text for text in texts if text], seed=0)

    def predict_logits(inputs):
        return keras.ops.convert_to_numpy(model(inputs))

    model_logits = ModalityLogits(predict_logits, preprocessor, model if split else None)
    assert (model_logits.split is not None) == split
    logits = model_logits(preprocessor(texts, images))
    missing = [None] * len(texts)
    expected = {
        "fused": predict_logits(preprocessor(texts, images)),
        "text_only": predict_logits(preprocessor(texts, missing)),
        "image_only": predict_logits(preprocessor(missing, images)),
    }
    for name, values in expected.items():
        np.testing.assert_allclose(logits[name], values, atol=1e-5, err_msg=name)
    assert not np.allclose(logits["text_only"], logits["image_only"])  # the ablations differ


def test_the_backbones_run_once_per_row(rows, monkeypatch):
    texts, images = rows
    model, preprocessor = build_model(num_classes=3, texts=[text for text in texts if text], seed=0)
    model_logits = ModalityLogits(None, preprocessor, model)
    seen = []
    feature_step = model_logits._feature_step
    monkeypatch.setattr(model_logits, "_feature_step", lambda inputs: seen.append(1) or feature_step(inputs))
    model_logits(preprocessor(texts, images))
    assert len(seen) == 1  # three predictions, one backbone pass
