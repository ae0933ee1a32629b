"""MultimodalPreprocessor: texts + images -> the four model inputs, saved as two JSON files."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mmkeras.errors import UserError
from mmkeras.preprocessing import MultimodalPreprocessor, TextTokenizer, UnreadableImageError, load_image

IMAGE_SIZE = (16, 24)


@pytest.fixture
def preprocessor():
    tokenizer = TextTokenizer.train_from_texts(
        ["a red circle", "a blue square", "Café crème"], vocabulary_size=64, sequence_length=10
    )
    return MultimodalPreprocessor(tokenizer, IMAGE_SIZE)


@pytest.fixture
def image_path(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (255, 0, 0)).save(path)
    return path


def test_batch_has_the_contract_names_shapes_and_dtypes(preprocessor, image_path):
    inputs = preprocessor(["a red circle", "a blue square"], [image_path, str(image_path)])
    assert list(inputs) == ["token_ids", "padding_mask", "image", "modality_mask"]
    assert inputs["token_ids"].shape == inputs["padding_mask"].shape == (2, 10)
    assert inputs["token_ids"].dtype == inputs["padding_mask"].dtype == np.int32
    assert inputs["image"].shape == (2, 16, 24, 3) and inputs["image"].dtype == np.float32
    assert inputs["modality_mask"].dtype == np.float32
    assert inputs["modality_mask"].tolist() == [[1, 1], [1, 1]]


def test_parts_equal_the_tokenizer_and_load_image(preprocessor, image_path):
    inputs = preprocessor(["a blue square"], [image_path.read_bytes()])
    token_ids, padding_mask = preprocessor.tokenizer.encode("a blue square")
    np.testing.assert_array_equal(inputs["token_ids"][0], token_ids)
    np.testing.assert_array_equal(inputs["padding_mask"][0], padding_mask)
    np.testing.assert_array_equal(inputs["image"][0], load_image(image_path, IMAGE_SIZE))


def test_missing_modalities_are_masked(preprocessor, image_path):
    inputs = preprocessor(["a red circle", None, "", "   ", None], [None, image_path, "", image_path, None])
    assert inputs["modality_mask"].tolist() == [[1, 0], [0, 1], [0, 0], [0, 1], [0, 0]]
    empty_ids, empty_mask = preprocessor.tokenizer.encode("")
    for row in (1, 2, 3, 4):
        np.testing.assert_array_equal(inputs["token_ids"][row], empty_ids)
        np.testing.assert_array_equal(inputs["padding_mask"][row], empty_mask)
    assert not inputs["image"][[0, 2, 4]].any()
    assert inputs["image"][1].max() == 255


def test_empty_batch_and_mismatched_lengths(preprocessor):
    inputs = preprocessor([], [])
    assert inputs["token_ids"].shape == (0, 10) and inputs["image"].shape == (0, 16, 24, 3)
    assert inputs["modality_mask"].shape == (0, 2)
    with pytest.raises(ValueError, match="2 texts but 1 images"):
        preprocessor(["a", "b"], [None])


def test_an_unreadable_image_raises(preprocessor, tmp_path):
    with pytest.raises(UnreadableImageError, match="file not found"):
        preprocessor(["a red circle"], [tmp_path / "missing.png"])


def test_save_writes_settings_a_mobile_developer_can_read(preprocessor, tmp_path):
    preprocessor.save(tmp_path / "run")
    config = json.loads((tmp_path / "run" / "preprocessor.json").read_text())
    assert config["format"] == 1
    assert config["sequence_length"] == 10
    assert config["image_size"] == [16, 24]
    assert config["image"]["resample"] == "bilinear"
    assert config["image"]["value_range"] == [0, 255]
    assert config["image"]["alpha_background"] == [255, 255, 255]
    assert config["tokenizer"]["file"] == "tokenizer.json"
    assert (config["tokenizer"]["lowercase"], config["tokenizer"]["strip_accents"]) == (True, True)
    assert (tmp_path / "run" / "tokenizer.json").is_file()


def test_save_load_round_trip_gives_identical_inputs(preprocessor, image_path, tmp_path):
    preprocessor.save(tmp_path)
    loaded = MultimodalPreprocessor.load(tmp_path)
    assert loaded.image_size == IMAGE_SIZE and loaded.sequence_length == 10
    texts, images = ["Café CRÈME 東京", None, "a red circle"], [image_path, image_path, None]
    before, after = preprocessor(texts, images), loaded(texts, images)
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])


def test_the_centre_crop_is_saved_and_older_files_read_without_one(preprocessor, tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 60, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    assert json.loads(json.dumps(preprocessor.get_config()))["image"]["crop_pct"] is None
    cropping = MultimodalPreprocessor(preprocessor.tokenizer, IMAGE_SIZE, "bicubic", crop_pct=0.875)
    cropping.save(tmp_path / "run")
    config_path = tmp_path / "run" / "preprocessor.json"
    assert json.loads(config_path.read_text())["image"]["crop_pct"] == 0.875
    loaded = MultimodalPreprocessor.load(tmp_path / "run")
    expected = load_image(tmp_path / "a.png", IMAGE_SIZE, "bicubic", crop_pct=0.875)
    np.testing.assert_array_equal(loaded.load_images([tmp_path / "a.png"])[0][0], expected)
    config = json.loads(config_path.read_text())
    del config["image"]["crop_pct"]
    config_path.write_text(json.dumps(config))
    assert MultimodalPreprocessor.load(tmp_path / "run").crop_pct is None
    config["image"]["crop_pct"] = 0
    config_path.write_text(json.dumps(config))
    with pytest.raises(UserError, match="image crop_pct must be null or a number in"):
        MultimodalPreprocessor.load(tmp_path / "run")


def test_loading_a_bad_folder_is_a_user_error(preprocessor, tmp_path):
    with pytest.raises(UserError, match="cannot read preprocessor"):
        MultimodalPreprocessor.load(tmp_path)
    preprocessor.save(tmp_path)
    config_path = tmp_path / "preprocessor.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "format": 99}))
    with pytest.raises(UserError, match="unsupported preprocessor format 99"):
        MultimodalPreprocessor.load(tmp_path)
    config_path.write_text(json.dumps({**config, "sequence_length": 11}))
    with pytest.raises(UserError, match="sequence_length 11 differs"):
        MultimodalPreprocessor.load(tmp_path)
    config_path.write_text(json.dumps({"format": 1, "sequence_length": 10}))
    with pytest.raises(UserError, match="incomplete preprocessor settings"):
        MultimodalPreprocessor.load(tmp_path)
    config_path.write_text("{not json")
    with pytest.raises(UserError, match="preprocessor.json: line 1: invalid JSON"):
        MultimodalPreprocessor.load(tmp_path)


def test_preprocessing_never_imports_tensorflow():
    code = (
        "import sys, mmkeras.preprocessing; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'keras_hub'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
