"""Undecodable bytes and NULs in paths and queries never cause a 5xx."""

from __future__ import annotations

import pytest
from yarl import URL

from tests.api.conftest import Api


@pytest.fixture
def api(rejecting_api: Api) -> Api:
    return rejecting_api


PATHS = [
    ("GET", "/v1/notifications/%ED%A0%80"),
    ("DELETE", "/v1/notifications/%FF%FE"),
    ("GET", "/v1/users/%FF/devices"),
    ("PUT", "/v1/devices/%FF"),
    ("DELETE", "/v1/devices/%00"),
    ("GET", "/v1/notifications?user_id=%FF&after=%00"),
    ("GET", "/v1/notifications?limit=%FF"),
]


@pytest.mark.parametrize(("method", "path"), PATHS)
async def test_undecodable_input_is_never_a_server_error(api: Api, method: str, path: str) -> None:
    url = api.client.make_url("/").join(URL(path, encoded=True))
    async with api.client.session.request(
        method, url, json={"platform": "fcm"}, headers=api.auth
    ) as r:
        assert r.status < 500, await r.text()
        if r.status >= 400:
            assert r.content_type == "application/problem+json"
