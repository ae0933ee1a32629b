"""Property-based fuzzing of the runtime and the manifest reader (a bounded run; 10,000+ in benchmarks/).

The strategies and properties live in `benchmarks/fuzz_runtime.py`; here every
outcome other than a result or a typed mmkeras error fails the test, and a
deadline per input catches hangs.
"""

import pytest
from hypothesis import HealthCheck, settings

from benchmarks import fuzz_runtime
from mmkeras.runtime.predictor import Predictor

# A few examples in CI; a second per input is far above the slowest measured (tens of milliseconds).
CI_SETTINGS = settings(
    max_examples=150, deadline=1000, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.fixture(scope="module")
def predictor(tiny_bundle):
    return Predictor(tiny_bundle["bundle"], num_threads=1)


def assert_no_crash(outcomes):
    report = outcomes.report()
    assert report["crashes"] == 0, report["crash_examples"]
    assert report["examples"] >= 100, report


def test_predict_on_any_text_and_image_bytes_gives_a_result_or_a_typed_error(predictor):
    outcomes = fuzz_runtime.Outcomes()
    CI_SETTINGS(fuzz_runtime.predict_property(predictor, outcomes))()
    assert_no_crash(outcomes)


def test_reading_any_manifest_gives_rows_or_a_typed_error(tmp_path):
    outcomes = fuzz_runtime.Outcomes()
    CI_SETTINGS(fuzz_runtime.manifest_property(tmp_path, outcomes))()
    assert_no_crash(outcomes)


def test_a_crash_is_counted_and_kept():
    outcomes = fuzz_runtime.Outcomes()
    outcomes.run(lambda: {}["missing"], "input")
    report = outcomes.report()
    assert report["crashes"] == 1 and report["crash_examples"] == ["KeyError: 'missing' <- 'input'"]
