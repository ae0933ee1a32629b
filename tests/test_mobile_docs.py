"""docs/mobile.md: its Kotlin and Swift snippets bind exactly the tensors bundle.json defines."""

import json
import re
from pathlib import Path

import pytest

from mmkeras.runtime.bundle import INPUT_NAMES, OUTPUT_NAME, bundle_schema
from mmkeras.runtime.test_vectors import SCHEMA_PATH

MOBILE_DOC = Path(__file__).resolve().parents[1] / "docs" / "mobile.md"
# How each language names a tensor: a map entry `"name" to ...` (Kotlin), `"name": ...` in the
# invoke dictionary or `output(named: "name")` (Swift).
TENSOR_NAME_PATTERNS = {
    "kotlin": r'"(\w+)" to ',
    "swift": r'^\s*"(\w+)": bytes\(|output\(named: "(\w+)"\)',
}


def snippet(language: str) -> str:
    """The language's first block: the whole check (the integer-only section's blocks are the helpers it adds)."""
    return re.findall(rf"```{language}\n(.*?)```", MOBILE_DOC.read_text(encoding="utf-8"), re.DOTALL)[0]


@pytest.mark.parametrize("language", sorted(TENSOR_NAME_PATTERNS))
def test_the_integer_only_helpers_read_the_scale_and_zero_point_bundle_json_has(language):
    blocks = re.findall(rf"```{language}\n(.*?)```", MOBILE_DOC.read_text(encoding="utf-8"), re.DOTALL)
    quantization = bundle_schema()["$defs"]["tensor"]["properties"]["quantization"]["oneOf"][1]["properties"]
    assert len(blocks) == 2 and re.search(r"\bfunc? quantize\(", blocks[1])  # Kotlin fun, Swift func
    assert re.search(r"\bfunc? dequantize\(", blocks[1])
    names = {"scale", "zero_point"} if language == "kotlin" else {"scale", "zeroPoint"}
    assert all(name in blocks[1] for name in names) and set(quantization) == {"scale", "zero_point"}


@pytest.mark.parametrize("language", sorted(TENSOR_NAME_PATTERNS))
def test_snippet_binds_every_tensor_by_its_bundle_name(language):
    code = snippet(language)
    found = re.findall(TENSOR_NAME_PATTERNS[language], code, re.MULTILINE)
    names = [name for match in found for name in ([match] if isinstance(match, str) else match) if name]
    assert sorted(names) == sorted([*INPUT_NAMES, OUTPUT_NAME])
    assert '"serving_default"' in code


def test_kotlin_reads_only_keys_that_test_vectors_json_has():
    schema = json.loads(SCHEMA_PATH.read_text())
    known = {*schema["properties"], *schema["$defs"]["vector"]["properties"], "sum",
             *bundle_schema()["properties"], "image_size"}
    getters = r'(?:getJSONArray|getJSONObject|getString|getDouble|getInt|isNull)\("(\w+)"\)'
    read = set(re.findall(getters, snippet("kotlin")))
    assert read and read <= known, read - known


def test_swift_decodes_the_vector_fields_test_vectors_json_has():
    schema = json.loads(SCHEMA_PATH.read_text())
    fields = re.search(r"struct Vector: Decodable \{(.*?)\n    \}", snippet("swift"), re.DOTALL).group(1)
    camel = re.findall(r"let (\w+):", fields)
    snake = {re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name) for name in camel}
    assert snake <= set(schema["$defs"]["vector"]["properties"]), snake
