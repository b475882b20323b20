"""The OpenAPI document and the API agree: the router, the enums, what is refused, the
answers' shapes; it is valid OpenAPI 3.1."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, get_args
from urllib.parse import quote

import jsonschema_rs
import pytest
from aiohttp import web

from api.openapi import openapi_document
from api.responses import SHAPES, Answer
from api.schemas import PAYLOAD_LIMIT, BatchRequest, DeviceRequest, NotificationRequest
from notifier.models import AttemptOutcome, Lane, Platform, Priority, Status
from notifier.providers.spec import SPECS
from tests.api.conftest import APNS_TOKEN, Api

DOCUMENT = openapi_document()


def _router_operations(app: web.Application) -> set[tuple[str, str]]:
    ops = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        assert path, f"route without a path: {route}"
        ops.add((route.method.lower(), path))
    return ops


async def test_every_route_is_documented_and_every_documented_route_exists(api: Api) -> None:
    r = await api.client.get("/openapi.json")
    assert r.status == 200
    document = await r.json()
    assert document["openapi"].startswith("3.1")
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert documented == _router_operations(api.client.app)


def test_request_schemas_come_from_the_models() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    request = schemas["NotificationRequest"]
    assert request["additionalProperties"] is False
    assert set(request["properties"]) >= {"to", "title", "body", "data", "scheduled_for"}
    assert schemas["BatchRequest"]["properties"]["notifications"]["maxItems"] == 500


def _enums(node: Any) -> list[list[Any]]:
    """Every ``enum`` list in the document."""
    if isinstance(node, dict):
        found = [node["enum"]] if isinstance(node.get("enum"), list) else []
        return found + [e for v in node.values() for e in _enums(v)]
    if isinstance(node, list):
        return [e for v in node for e in _enums(v)]
    return []


def test_every_enum_is_a_model_enum_or_a_subset_of_one() -> None:
    """``Platform``, ``Status`` and the rest drive the document: no list written by hand."""
    schemas = DOCUMENT["components"]["schemas"]
    enums: tuple[tuple[str, type[StrEnum]], ...] = (
        ("Platform", Platform),
        ("Status", Status),
        ("Priority", Priority),
        ("Lane", Lane),
        ("AttemptOutcome", AttemptOutcome),
    )
    for name, model in enums:
        assert schemas[name]["enum"] == [m.value for m in model]
    models = [{m.value for m in e} for e in (Platform, Status, Priority, Lane, AttemptOutcome)]
    for enum in _enums(DOCUMENT):
        assert any(set(enum) <= values for values in models), enum
    # the answers name the enums instead of copying them
    target = schemas["Target"]["properties"]["platform"]
    assert target == {"$ref": "#/components/schemas/Platform"}
    assert schemas["Notification"]["properties"]["status"] == {
        "$ref": "#/components/schemas/Status"
    }
    assert schemas["Notification"]["properties"]["lane"] == {"$ref": "#/components/schemas/Lane"}


def test_the_lane_defaults_are_documented() -> None:
    """A single request defaults to the transactional lane, a batch item to bulk."""
    schemas = DOCUMENT["components"]["schemas"]
    assert schemas["NotificationRequest"]["properties"]["lane"]["default"] == "transactional"
    assert schemas["BatchItem"]["properties"]["lane"]["default"] == "bulk"
    for name in ("AcceptedOne", "AcceptedMany"):
        assert "lane" in schemas[name]["required"]


def test_answer_schemas_are_the_shapes_the_views_build() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    for name, shape in SHAPES.items():
        if isinstance(shape, type):  # a TypedDict; unions are checked through their members
            assert set(schemas[name]["properties"]) == set(shape.__annotations__), name


def test_every_shape_a_view_may_answer_with_is_a_documented_schema() -> None:
    """``json_response`` takes only ``Answer`` (mypy holds the views to it): each of its
    shapes is a component of the document, with the same fields."""
    schemas = DOCUMENT["components"]["schemas"]
    for shape in get_args(Answer):
        assert shape.__name__ in schemas, shape.__name__
        assert set(schemas[shape.__name__]["properties"]) == set(shape.__annotations__)


@pytest.mark.parametrize("model", [NotificationRequest, BatchRequest, DeviceRequest])
def test_the_documented_request_examples_are_accepted(model: Any) -> None:
    """The examples in the document keep the provider rules the API enforces (tokens,
    platforms), so a client copying one gets a 2xx, not a 422."""
    name = model.__name__
    examples = [
        media["example"]
        for item in DOCUMENT["paths"].values()
        for operation in item.values()
        for media in operation.get("requestBody", {}).get("content", {}).values()
        if media["schema"] == {"$ref": f"#/components/schemas/{name}"}
    ]
    assert examples, name
    for example in examples:
        model.model_validate(example)
        assert _validator(DOCUMENT["components"]["schemas"][name]).is_valid(example)


def _validator(schema: dict[str, Any]) -> jsonschema_rs.Validator:
    """A validator for ``schema`` with the document's components in reach of its $refs."""
    return jsonschema_rs.Draft202012Validator(
        {**schema, "components": DOCUMENT["components"]}, validate_formats=True
    )


def _parameter(path: str, method: str, name: str) -> dict[str, Any]:
    for param in DOCUMENT["paths"][path][method]["parameters"]:
        if param["name"] == name:
            found: dict[str, Any] = param
            return found
    raise AssertionError(f"{method} {path} has no parameter {name}")


# (case, operation path, method, parameter, value): each refused by the API (422) and each
# outside the documented parameter schema (issue 13, item 7).
REFUSED_PARAMETERS = [
    ("apns device token 0", "/v1/devices/{token}", "put", "token", "0"),
    ("device token with a space", "/v1/devices/{token}", "put", "token", "a b c d e f g"),
    ("empty after", "/v1/notifications", "get", "after", ""),
    ("empty user_id", "/v1/notifications", "get", "user_id", ""),
    ("NUL in after", "/v1/notifications", "get", "after", "a\x00b"),
    ("user_id past 256", "/v1/users/{user_id}/devices", "get", "user_id", "u" * 257),
]


@pytest.mark.parametrize(
    ("path", "method", "name", "value"),
    [pytest.param(p, m, n, v, id=case) for case, p, m, n, v in REFUSED_PARAMETERS],
)
async def test_a_refused_parameter_is_outside_its_documented_schema(
    api: Api, path: str, method: str, name: str, value: str
) -> None:
    param = _parameter(path, method, name)
    assert not _validator(param["schema"]).is_valid(value)
    assert "422" in DOCUMENT["paths"][path][method]["responses"]
    if param["in"] == "path":
        url = path.replace("{" + name + "}", quote(value, safe=""))
        body = {"platform": "apns"} if method == "put" else None
        r = await api.client.request(method, url, json=body, headers=api.auth)
    else:
        r = await api.client.get(path, params={name: value}, headers=api.auth)
    assert r.status == 422, await r.text()


def test_a_device_token_of_any_platform_fits_the_path_parameter() -> None:
    validator = _validator(_parameter("/v1/devices/{token}", "put", "token")["schema"])
    assert validator.is_valid(APNS_TOKEN)
    assert validator.is_valid("fcm-token-1")


def test_body_tokens_follow_each_platforms_rule() -> None:
    validator = _validator({"$ref": "#/components/schemas/DeviceTarget"})
    assert validator.is_valid({"platform": "apns", "token": APNS_TOKEN})
    assert validator.is_valid({"platform": "fcm", "token": "fcm-token-1"})
    assert not validator.is_valid({"platform": "apns", "token": "fcm-token-1"})
    assert not validator.is_valid({"platform": "fcm", "token": "1e100"})


def test_body_rules_json_schema_can_state_are_in_the_schema() -> None:
    validator = _validator({"$ref": "#/components/schemas/NotificationRequest"})
    base = {"to": {"platform": "apns", "token": APNS_TOKEN}, "title": "Hi"}
    assert validator.is_valid(base)
    refusals: tuple[dict[str, Any], ...] = (
        {"collapse_key": "ü"},
        {"collapse_key": " x"},
        {"data": {"aps": "x"}},
        {"data": {"From": "x"}},
        {"data": {"google.a": "x"}},
        {"data": {"": "x"}},
        {"title": None},  # no content: a title, a body or data is required
        {"title": None, "data": {}},
        {"ttl_seconds": -1},
    )
    for refused in refusals:
        assert not validator.is_valid({**base, **refused}), refused


def test_the_payload_limit_json_schema_cannot_state_is_described_with_its_422() -> None:
    """A 4,132-byte payload fits every field's own limit: the sum is stated in words."""
    body = {"to": {"platform": "apns", "token": APNS_TOKEN}, "title": "t" * 2000}
    body["body"] = "b" * (PAYLOAD_LIMIT - 2000)
    assert _validator({"$ref": "#/components/schemas/NotificationRequest"}).is_valid(body)
    operation = DOCUMENT["paths"]["/v1/notifications"]["post"]
    description = DOCUMENT["components"]["schemas"]["NotificationRequest"]["description"]
    for spec in SPECS.values():
        assert spec.payload_rule in description
        assert spec.payload_rule in operation["description"]
    assert "422" in operation["responses"]


def test_options_is_documented_on_every_path() -> None:
    for path, item in DOCUMENT["paths"].items():
        options = item["options"]
        assert options["security"] == []
        allow = options["responses"]["204"]["headers"]["Allow"]["schema"]["const"]
        assert allow == ", ".join(sorted({m.upper() for m in item})), path
