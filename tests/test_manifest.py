"""read_manifest: CSV/JSONL rows, missing modalities, and errors that name file and line."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmkeras.data.manifest import ManifestRow, read_manifest
from mmkeras.errors import UserError


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def write_jsonl(path: Path, records: list) -> Path:
    return write(path, "\n".join(json.dumps(record) for record in records) + "\n")


def red_png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), (255, 0, 0)).save(path)
    return path


def test_csv_rows_with_missing_modalities_and_resolved_image_paths(tmp_path):
    absolute = tmp_path / "elsewhere" / "b.png"
    (tmp_path / "data").mkdir()
    path = write(
        tmp_path / "data" / "train.csv",
        "id,text,image,label,note\n"
        "1,a red circle,images/a.png,red,x\n"
        f"2,,{absolute},blue,\n"
        "3,  only text  ,,red,\n"
        '4,"multi\nline, text", ,blue,\n',
    )
    manifest = read_manifest(path)
    assert manifest.path == path
    assert manifest.rows == [
        ManifestRow("a red circle", tmp_path / "data" / "images" / "a.png", "red", 2),
        ManifestRow(None, absolute, "blue", 3),
        ManifestRow("  only text  ", None, "red", 4),
        ManifestRow("multi\nline, text", None, "blue", 5),
    ]
    assert manifest.labels() == ["blue", "red"]


def test_csv_line_numbers_follow_multiline_cells_and_blank_lines(tmp_path):
    path = write(tmp_path / "m.csv", 'text,image,label\n"one\ntwo\nthree",,a\n\n"four",,\n')
    with pytest.raises(UserError) as caught:
        read_manifest(path)
    assert str(caught.value) == f"{path}: line 6: empty label"


def test_csv_with_bom_and_crlf_and_spaced_header(tmp_path):
    path = write(tmp_path / "m.csv", "\ufefftext , image,label\r\ncafé,,x\r\n".encode("utf-8"))
    manifest = read_manifest(path)
    assert manifest.rows == [ManifestRow("café", None, "x", 2)]


def test_jsonl_rows_nulls_blank_lines_and_numeric_labels(tmp_path):
    path = write(
        tmp_path / "m.jsonl",
        '{"text": "a red circle", "image": "a.png", "label": "red", "extra": [1]}\n'
        "\n"
        '{"text": null, "image": "b.png", "label": 3}\n'
        '{"text": "line\u2028separator inside", "image": "", "label": "red"}\n',
    )
    manifest = read_manifest(path)
    assert manifest.rows == [
        ManifestRow("a red circle", tmp_path / "a.png", "red", 1),
        ManifestRow(None, tmp_path / "b.png", "3", 3),
        ManifestRow("line\u2028separator inside", None, "red", 4),
    ]
    assert manifest.labels() == ["3", "red"]


def test_unlabelled_manifest_is_allowed_when_labels_are_not_required(tmp_path):
    csv_path = write(tmp_path / "m.csv", "text,image\nhello,\n")
    assert read_manifest(csv_path, require_labels=False).rows == [ManifestRow("hello", None, None, 2)]
    jsonl_path = write_jsonl(tmp_path / "m.jsonl", [{"text": "hi", "image": None}])
    assert read_manifest(jsonl_path, require_labels=False).rows[0].label is None
    with pytest.raises(UserError, match="missing column"):
        read_manifest(csv_path)


@pytest.mark.parametrize(
    "file_name, content, message",
    [
        ("m.csv", "text,label\nhi,a\n", "line 1: missing column(s) image (the header has: text, label)"),
        ("m.csv", "caption,picture\nhi,a\n", "line 1: missing column(s) text, image, label"),
        ("m.csv", "text,image,label,text\n", "line 1: the header repeats the column(s) text"),
        ("m.csv", "", "empty file: expected a header row"),
        ("m.csv", "text,image,label\n", "the manifest has no rows"),
        ("m.csv", "text,image,label\nhi,,a\n,,b\n", "line 3: the row has neither a text nor an image"),
        ("m.csv", "text,image,label\nhi,,a\n  , ,b\n", "line 3: the row has neither a text nor an image"),
        ("m.csv", "text,image,label\nhi,,a\nhi,, \n", "line 3: empty label"),
        ("m.csv", "text,image,label\nhi,a\n", "line 2: expected 3 cells like the header, found 2"),
        ("m.jsonl", '{"text": "a", "image": null, "label": "x"}\n{"text": "b",\n', "line 2: invalid JSON"),
        ("m.jsonl", '["a", "b", "c"]\n', "line 1: expected a JSON object, found an array"),
        ("m.jsonl", '{"text": "a", "label": "x"}\n', "line 1: missing key(s) image"),
        ("m.jsonl", '{"text": 5, "image": null, "label": "x"}\n', "line 1: 'text' must be a string or null"),
        ("m.jsonl", '{"text": "a", "image": null, "label": true}\n', "found a boolean"),
        (
            "m.jsonl",
            '{"text": "\\ud800", "image": null, "label": "x"}\n',
            "line 1: the text cell is not valid UTF-8 (a lone surrogate U+D800",
        ),
        ("m.txt", "text,image,label\n", "unknown manifest format"),
    ],
)
def test_mistakes_are_user_errors_naming_file_and_line(tmp_path, file_name, content, message):
    path = write(tmp_path / file_name, content)
    with pytest.raises(UserError) as caught:
        read_manifest(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_missing_file_and_non_utf8_bytes(tmp_path):
    with pytest.raises(UserError, match="manifest not found"):
        read_manifest(tmp_path / "missing.csv")
    path = write(tmp_path / "latin1.csv", "text,image,label\nok,,a\ncaf\xe9,,b\n".encode("latin-1"))
    with pytest.raises(UserError) as caught:
        read_manifest(path)
    assert str(caught.value) == f"{path}: line 3: not UTF-8 text (byte 0xe9); save the manifest as UTF-8"


def test_encode_labels_gives_int32_indices_in_label_order(tmp_path):
    path = write(tmp_path / "m.csv", "text,image,label\na,,cat\nb,,dog\nc,,cat\n")
    manifest = read_manifest(path)
    encoded = manifest.encode_labels(["dog", "cat"])
    assert encoded.dtype == np.int32 and encoded.tolist() == [1, 0, 1]


def test_unknown_label_names_file_line_label_and_known_labels_briefly(tmp_path):
    path = write(tmp_path / "val.csv", "text,image,label\na,,c0\nb,,zebra\n")
    known = [f"c{index}" for index in range(20)]
    with pytest.raises(UserError) as caught:
        read_manifest(path).encode_labels(known)
    assert str(caught.value) == (
        f"{path}: line 3: unknown label 'zebra' (known labels: c0, c1, c2, c3, c4, c5, c6, c7, ... (20 in all))"
    )
    unlabelled = read_manifest(write(tmp_path / "u.csv", "text,image\na,\n"), require_labels=False)
    with pytest.raises(UserError, match="line 2: the row has no label"):
        unlabelled.encode_labels(["a"])


def test_validation_rows_of_an_untrained_class_fail_or_are_skipped_and_kept(tmp_path):
    path = write(tmp_path / "val.csv", "text,image,label\na,,cat\nb,,zebra\nc,,dog\nd,,lion\n")
    with pytest.raises(UserError) as caught:
        read_manifest(path).with_known_labels(["cat", "dog"], "fail")
    assert str(caught.value).startswith(f"{path}: 2 bad rows: line 3: unknown label")
    kept = read_manifest(path).with_known_labels(["cat", "dog"], "skip")
    assert [row.label for row in kept.rows] == ["cat", "dog"]
    assert [(row.line, row.reason) for row in kept.skipped] == [
        (3, "unknown label 'zebra' (known labels: cat, dog)"),
        (5, "unknown label 'lion' (known labels: cat, dog)"),
    ]
    with pytest.raises(UserError, match="no rows left: all 4 rows are bad"):
        read_manifest(path).with_known_labels(["owl"], "skip")


@pytest.fixture
def manifest_with_bad_images(tmp_path):
    red_png(tmp_path / "images" / "good.png")
    write(tmp_path / "images" / "broken.png", b"\x89PNG\r\n\x1a\n not really")
    return write(
        tmp_path / "m.csv",
        "text,image,label\n"
        "one,images/good.png,a\n"
        "two,images/missing.png,b\n"
        "three,,a\n"
        "four,images/broken.png,b\n"
        "five,images/good.png,b\n",
    )


def test_validate_images_fail_names_every_bad_row_and_image(manifest_with_bad_images):
    with pytest.raises(UserError) as caught:
        read_manifest(manifest_with_bad_images).validate_images((16, 16), "fail")
    message = str(caught.value)
    assert message.startswith(f"{manifest_with_bad_images}: 2 bad rows: ")
    assert "line 3: cannot read image 'images/missing.png': file not found; line 5: cannot read image" in message


def test_validate_images_skip_drops_and_counts_bad_rows(manifest_with_bad_images, caplog):
    manifest = read_manifest(manifest_with_bad_images)
    with caplog.at_level(logging.WARNING, logger="mmkeras.data.manifest"):
        kept, skipped = manifest.validate_images((16, 16), "skip")
    assert skipped == 2
    assert [row.text for row in kept.rows] == ["one", "three", "five"]
    assert kept.path == manifest.path and len(manifest.rows) == 5  # the original is unchanged
    assert "line 5: cannot read image 'images/broken.png'" in caplog.text


def test_validate_images_decodes_each_image_once(manifest_with_bad_images, monkeypatch):
    import mmkeras.data.manifest as manifest_module

    decoded = []

    def counting_load_image(source, image_size, **decoding):
        decoded.append(Path(source).name)
        return np.zeros((*image_size, 3), np.float32)

    monkeypatch.setattr(manifest_module, "load_image", counting_load_image)
    read_manifest(manifest_with_bad_images).validate_images((16, 16), "fail")
    assert sorted(decoded) == ["broken.png", "good.png", "missing.png"]


def test_skipping_every_row_is_a_user_error(tmp_path):
    path = write(tmp_path / "m.csv", "text,image,label\nx,nope.png,a\n")
    with pytest.raises(UserError, match="no rows left: all 1 rows are bad"):
        read_manifest(path).validate_images((8, 8), "skip")
    with pytest.raises(ValueError, match="on_bad_row"):
        read_manifest(path).validate_images((8, 8), "ignore")


def test_manifest_reading_never_imports_tensorflow():
    code = (
        "import sys, mmkeras.data, mmkeras.data.manifest; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'keras_hub'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"



def test_fail_lists_the_first_twenty_bad_rows_and_counts_the_rest(tmp_path):
    path = write(tmp_path / "m.csv", "text,image,label\n" + "ok,,a\n" + "x,,\n" * 25)
    with pytest.raises(UserError) as caught:
        read_manifest(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: 25 bad rows: line 3: empty label; ")
    assert "line 22: empty label; and 5 more" in message and "line 23" not in message


def test_skip_drops_every_kind_of_bad_row_and_keeps_them(tmp_path):
    lines = [
        '{"text": "good", "image": null, "label": "a"}',
        '{"text": "broken",',
        '["not", "an", "object"]',
        '{"text": "no image key", "label": "a"}',
        '{"text": 5, "image": null, "label": "a"}',
        '{"text": "\\udcff", "image": null, "label": "a"}',
        '{"text": "", "image": null, "label": "a"}',
        '{"text": "no label", "image": null, "label": ""}',
    ]
    manifest = read_manifest(write(tmp_path / "m.jsonl", "\n".join(lines) + "\n"), on_bad_row="skip")
    assert [row.text for row in manifest.rows] == ["good"]
    assert [bad.line for bad in manifest.skipped] == [2, 3, 4, 5, 6, 7, 8]
    assert str(manifest.skipped[0]).startswith(f"{tmp_path / 'm.jsonl'}: line 2: invalid JSON")


def test_skipped_rows_accumulate_over_image_checks(manifest_with_bad_images, tmp_path):
    content = manifest_with_bad_images.read_text(encoding="utf-8") + "six,images/good.png\n"
    path = write(tmp_path / "more.csv", content)
    manifest = read_manifest(path, on_bad_row="skip")
    kept, skipped = manifest.validate_images((16, 16), "skip")
    assert skipped == 2 and [bad.line for bad in kept.skipped] == [7, 3, 5]


@pytest.mark.parametrize("second", ["Cat", " cat", "CAT "])
def test_labels_differing_only_in_case_or_spaces_are_an_error_naming_both(tmp_path, second):
    path = write(tmp_path / "m.csv", f'text,image,label\na,,cat\nb,,"{second}"\n')
    with pytest.raises(UserError) as caught:
        read_manifest(path)
    assert str(caught.value) == (
        f"{path}: line 3: the labels 'cat' (line 2) and {second!r} differ only in case or surrounding spaces; "
        "write every label of a class the same way"
    )


def test_a_folder_and_an_unterminated_quote_are_named(tmp_path):
    folder = tmp_path / "data.csv"
    folder.mkdir()
    with pytest.raises(UserError, match="this is a folder; give a manifest file .* with mmkeras manifest FOLDER"):
        read_manifest(folder)
    path = write(tmp_path / "m.csv", 'text,image,label\nok,,a\n"unclosed,,a\nmore,,b\n')
    with pytest.raises(UserError, match=r"line 3: invalid CSV: unexpected end of data \(an unclosed or stray quote"):
        read_manifest(path)


def test_control_characters_in_a_text_become_spaces(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"text": "a\x00b\x1bc\td", "image": None, "label": "x"}])
    assert read_manifest(path).rows[0].text == "a b c\td"


def test_an_image_over_the_pixel_limit_or_not_a_regular_file_is_a_bad_row(tmp_path):
    red_png(tmp_path / "big.png")  # 8x6 = 48 pixels
    os.mkfifo(tmp_path / "pipe.png")
    path = write(tmp_path / "m.csv", "text,image,label\na,big.png,x\nb,pipe.png,x\nc,,x\n")
    kept, skipped = read_manifest(path).validate_images((4, 4), "skip", max_pixels=47)
    assert skipped == 2 and [row.text for row in kept.rows] == ["c"]
    reasons = [bad.reason for bad in kept.skipped]
    assert reasons[0] == "cannot read image 'big.png': 8x6 pixels is more than the limit of 47 (max_image_pixels)"
    assert reasons[1] == "cannot read image 'pipe.png': not a regular file (a pipe, socket or device)"
