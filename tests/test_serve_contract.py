"""The published API contract, checked by schemathesis against /openapi.json, in-process (ASGI).

Seeded and bounded (at most 100 generated requests per operation, positive and negative): every answer
must be documented (status, content type, body schema), schema-invalid requests must be refused, and a
schema-valid request may only be refused for what each operation documents that JSON Schema cannot
express: a picture that does not decode, is too big, or is blank.
"""

import json
import re
import tempfile
from pathlib import Path

import pytest
import schemathesis
from helpers import FIXTURE_CALIBRATION
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from digits.runtime import load_predictor
from digits.serve import Limits, create_app

# What a 422 for a schema-valid body may say (digits.mnistify and digits.serve word them so).
CONTENT_ERRORS = re.compile(
    r"not valid base64|image is empty|not an image in a format read here|damaged image|more than \d+ pixels|"
    r"the picture is blank|image must be a base64 data URL|picture at least 2x2"
)


# The schema is read at collection (no model needed for /openapi.json); the model is loaded for the test.
# With the fixture bundle's rejection metadata as flags, generated pictures are also refused, so refused
# answers (`accepted` false, a `reason`) are held to the schema too.
# It collects corrections (into a folder removed at the end), so that /api/feedback stores valid ones.
COLLECTED = tempfile.TemporaryDirectory()
app = create_app(
    Path(__file__).parent / "fixtures" / "model-small.keras",
    calibration=FIXTURE_CALIBRATION,
    limits=Limits(feedback_per_minute=1000),
    collect=COLLECTED.name,
)
# A request that breaks the schema must be refused. schemathesis' list of refusals lacks 413, which is how a
# batch over maxItems (or a body over 2 MiB) is refused, before its items are read: documented, so allowed.
REFUSALS = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5xx"]
CONFIG = {"seed": 20261202, "checks": {"negative_data_rejection": {"expected-statuses": REFUSALS}}}
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", app, config=schemathesis.config.SchemathesisConfig.from_dict(CONFIG)
)


@pytest.fixture(scope="module", autouse=True)
def model_loaded(small_model_path):
    app.state.predictor = load_predictor(small_model_path)
    yield
    app.state.predictor = None
    COLLECTED.cleanup()


@schemathesis.check
def only_content_errors_refuse_valid_data(ctx, response, case) -> None:
    """Schema-valid data is answered 2xx, or 422 naming a documented content error."""
    if case.meta is None or not case.meta.generation.mode.is_positive or response.status_code < 400:
        return
    detail = response.json().get("detail", "")
    assert response.status_code == 422 and CONTENT_ERRORS.search(detail), (
        f"schema-valid request refused: {response.status_code} {detail!r}"
    )


@schema.parametrize()
@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
def test_the_api_keeps_its_published_contract(case):
    case.call_and_validate(
        excluded_checks=[positive_data_acceptance], additional_checks=[only_content_errors_refuse_valid_data]
    )


def test_the_openapi_document_is_the_committed_one(small_model_path):
    """Any change to the published document shows up here."""
    # After a deliberate change, regenerate the file from a shell (one line):
    #   python -c "import json; from pathlib import Path; from digits.serve import create_app;
    #   app = create_app(Path('tests/fixtures/model-small.keras'));
    #   print(json.dumps(app.openapi(), indent=2, sort_keys=True))" > tests/fixtures/openapi.json
    committed = json.loads((Path(__file__).parent / "fixtures" / "openapi.json").read_text())
    assert json.loads(json.dumps(create_app(small_model_path).openapi())) == committed
