"""build_model: every fusion and backbone, saving, masking, seeding, presets and HF folders."""

import json
import random

import keras
import keras_hub
import numpy as np
import pytest
from safetensors.numpy import save_file

from mmkeras.config import FUSIONS
from mmkeras.errors import UserError
from mmkeras.models import build_model

TEXTS = ["a red circle", "a blue square", "the green triangle"]


def model_inputs(preprocessor, seed=0, image_present=(1.0, 1.0, 1.0)):
    """Preprocessed texts with random images (so no image files are needed)."""
    inputs = preprocessor(TEXTS, [None] * len(TEXTS))
    rng = np.random.default_rng(seed)
    inputs["image"] = rng.uniform(0, 255, size=inputs["image"].shape).astype("float32")
    inputs["modality_mask"][:, 1] = image_present
    return inputs


def predict(model, inputs):
    return keras.ops.convert_to_numpy(model(inputs, training=False))


@pytest.mark.parametrize("vision_backbone", ["tiny", "tiny-vit", "tiny-mobilenet"])
@pytest.mark.parametrize("fusion", FUSIONS)
def test_every_fusion_and_backbone_predicts_and_survives_saving(fusion, vision_backbone, tmp_path):
    model, preprocessor = build_model(
        vision_backbone=vision_backbone, num_classes=4, fusion=fusion, sequence_length=16, texts=TEXTS, seed=0
    )
    assert preprocessor.image_size == (32, 32) and preprocessor.sequence_length == 16
    assert {"text_backbone", "vision_backbone"} <= {layer.name for layer in model.layers}
    inputs = model_inputs(preprocessor)
    logits = predict(model, inputs)
    assert logits.shape == (3, 4) and logits.dtype == np.float32 and np.all(np.isfinite(logits))
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(predict(loaded, inputs), logits)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_missing_image_logits_do_not_depend_on_the_pixels(fusion):
    model, preprocessor = build_model(num_classes=3, fusion=fusion, texts=TEXTS, seed=1)
    present = (1.0, 0.0, 1.0)
    original = predict(model, model_inputs(preprocessor, seed=0, image_present=present))
    repainted = predict(model, model_inputs(preprocessor, seed=1, image_present=present))
    np.testing.assert_array_equal(original[1], repainted[1])
    assert not np.allclose(original[0], repainted[0])


def test_seed_makes_the_build_reproducible_without_touching_global_random_state():
    state = random.getstate()
    first, _ = build_model(num_classes=2, texts=TEXTS, seed=3)
    assert random.getstate() == state
    again, _ = build_model(num_classes=2, texts=TEXTS, seed=3)
    other, _ = build_model(num_classes=2, texts=TEXTS, seed=4)
    for a, b in zip(first.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first.get_weights(), other.get_weights()))


def test_logits_stay_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model, preprocessor = build_model(num_classes=3, texts=TEXTS, seed=0)
        logits = model(model_inputs(preprocessor, image_present=(1.0, 0.0, 1.0)), training=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("fusion").compute_dtype == "float16"
    assert logits.dtype == "float32" and np.all(np.isfinite(keras.ops.convert_to_numpy(logits)))


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"fusion": "sum"}, "fusion must be one of"),
        ({"fusion_dim": 10, "num_heads": 4}, "divisible by num_heads"),
        ({"num_classes": 1}, "at least 2 classes"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_settings_are_user_errors(settings, message):
    with pytest.raises(UserError, match=message):
        build_model(**{"num_classes": 3, **settings})


def test_model_rebuilt_from_presets_of_its_backbones_predicts_the_same(tmp_path):
    model, preprocessor = build_model(num_classes=3, texts=TEXTS, seed=0)
    model.get_layer("text_backbone").save_to_preset(tmp_path / "text")
    keras_hub.models.BertTokenizer(vocabulary=preprocessor.tokenizer.vocabulary, lowercase=True).save_to_preset(
        tmp_path / "text"
    )
    model.get_layer("vision_backbone").save_to_preset(tmp_path / "vision")
    # Pixels -> [0, 1] per channel instead of the tiny backbone's [-1, 1].
    converter = keras_hub.layers.ViTImageConverter(image_size=(32, 32), scale=[1 / 255] * 3, offset=[0.0] * 3)
    converter.save_to_preset(tmp_path / "vision")

    rebuilt, rebuilt_preprocessor = build_model(
        str(tmp_path / "text"), str(tmp_path / "vision"), num_classes=3, seed=9
    )
    assert rebuilt_preprocessor.tokenizer.vocabulary == preprocessor.tokenizer.vocabulary
    for name in ("fusion", "logits"):  # the only parts not loaded from the presets
        rebuilt.get_layer(name).set_weights(model.get_layer(name).get_weights())
    inputs = model_inputs(preprocessor)
    # The normalisation happens inside the model: 2x - 255 seen as [0, 1] is x seen as [-1, 1].
    rebuilt_inputs = dict(inputs, image=2 * inputs["image"] - 255)
    expected = predict(model, inputs)
    np.testing.assert_allclose(predict(rebuilt, rebuilt_inputs), expected, atol=1e-5)
    rebuilt.save(tmp_path / "rebuilt.keras")
    loaded = keras.models.load_model(tmp_path / "rebuilt.keras")
    np.testing.assert_allclose(predict(loaded, rebuilt_inputs), expected, atol=1e-5)


def write_hugging_face_bert(directory, vocabulary, hidden=8, layers=1, heads=2, intermediate=16, positions=32):
    """A random BERT in Hugging Face format: what keras-hub's converter reads."""
    directory.mkdir()
    config = {
        "model_type": "bert", "architectures": ["BertModel"], "vocab_size": len(vocabulary),
        "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
        "intermediate_size": intermediate, "max_position_embeddings": positions, "type_vocab_size": 2,
    }
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    (directory / "vocab.txt").write_text("\n".join(vocabulary) + "\n")
    rng = np.random.default_rng(0)
    shapes = {
        "embeddings.word_embeddings.weight": (len(vocabulary), hidden),
        "embeddings.position_embeddings.weight": (positions, hidden),
        "embeddings.token_type_embeddings.weight": (2, hidden),
        "embeddings.LayerNorm.weight": (hidden,),
        "embeddings.LayerNorm.bias": (hidden,),
        "pooler.dense.weight": (hidden, hidden),
        "pooler.dense.bias": (hidden,),
    }
    for i in range(layers):
        prefix = f"encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            shapes[f"{prefix}{name}.weight"] = (hidden, hidden)
            shapes[f"{prefix}{name}.bias"] = (hidden,)
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[f"{prefix}{name}.weight"] = (hidden,)
            shapes[f"{prefix}{name}.bias"] = (hidden,)
        shapes.update({
            f"{prefix}intermediate.dense.weight": (intermediate, hidden),
            f"{prefix}intermediate.dense.bias": (intermediate,),
            f"{prefix}output.dense.weight": (hidden, intermediate),
            f"{prefix}output.dense.bias": (hidden,),
        })
    tensors = {name: rng.normal(size=shape).astype("float32") for name, shape in shapes.items()}
    save_file(tensors, str(directory / "model.safetensors"))
    return tensors


def test_hugging_face_bert_folder_loads_through_the_same_code(tmp_path):
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "blue", "circle", "square", "##s"]
    tensors = write_hugging_face_bert(tmp_path / "hf_bert", vocabulary)
    model, preprocessor = build_model(str(tmp_path / "hf_bert"), num_classes=2, sequence_length=12, seed=0)
    assert preprocessor.tokenizer.vocabulary == vocabulary and preprocessor.tokenizer.lowercase
    ids, _ = preprocessor.tokenizer.encode("A RED circle")
    assert [vocabulary[i] for i in ids[:5]] == ["[CLS]", "a", "red", "circle", "[SEP]"]
    backbone = model.get_layer("text_backbone")
    np.testing.assert_array_equal(
        backbone.get_layer("token_embedding").embeddings.numpy(), tensors["embeddings.word_embeddings.weight"]
    )
    intermediate = backbone.get_layer("transformer_layer_0")._feedforward_intermediate_dense.kernel.numpy()
    np.testing.assert_array_equal(intermediate, tensors["encoder.layer.0.intermediate.dense.weight"].T)
    logits = predict(model, model_inputs(preprocessor))
    assert logits.shape == (3, 2) and np.all(np.isfinite(logits))
