"""The one place an httpx client for Prolific is built, and Prolific's errors translated. Only the
requester's name and endpoint are stored by us; the token is read from the credentials file when the
client is built and sent as ``Authorization: Token ...``, never logged or put in an error."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from mephisto_dist.errors import ConfigError, ProviderError, Unreachable
from mephisto_dist.providers.prolific import credentials

PROLIFIC_API = "https://api.prolific.com"
PROLIFIC_APP = "https://app.prolific.com"
API_PATH = "/api/v1/"
TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ProlificAccess:
    """How to reach one requester's account; holds no secret."""

    requester_name: str
    endpoint_url: str | None = None

    @property
    def endpoint(self) -> str:
        return self.endpoint_url or PROLIFIC_API

    @property
    def app_url(self) -> str:
        """Where participants are sent back to with a completion code: Prolific's app, or the local
        stand-in's own address (it serves both)."""
        return self.endpoint_url or PROLIFIC_APP

    def as_args(self) -> dict[str, str]:
        args = {"requester_name": self.requester_name}
        if self.endpoint_url:
            args["endpoint_url"] = self.endpoint_url
        return args

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> ProlificAccess:
        name = args.get("requester_name")
        if not name:
            raise ConfigError("provider prolific needs mephisto.provider.requester_name")
        return cls(str(name), str(args.get("endpoint_url") or "") or None)


class ProlificCallFailed(ProviderError):
    """Prolific refused or failed a call; the message is Prolific's own."""

    def __init__(self, method: str, path: str, status: int, detail: str) -> None:
        super().__init__(f"Prolific {method} {path} failed ({status}): {detail}")
        self.status = status
        self.detail = detail


def build_client(access: ProlificAccess) -> httpx.Client:
    key = credentials.api_key(access.requester_name)
    return httpx.Client(base_url=access.endpoint.rstrip("/") + API_PATH, timeout=TIMEOUT_S,
                        headers={"Authorization": f"Token {key}", "Accept": "application/json"})


ClientFactory = Callable[[ProlificAccess], httpx.Client]


def _detail(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", {})
    except (ValueError, AttributeError):
        return response.text[:300] or response.reason_phrase
    detail = error.get("detail") if isinstance(error, dict) else None
    if isinstance(detail, dict):
        return "; ".join(f"{field}: {' '.join(map(str, v)) if isinstance(v, list) else v}"
                         for field, v in detail.items())
    return str(detail or (error.get("title") if isinstance(error, dict) else "") or response.reason_phrase)


class ProlificApi:
    """Prolific's researcher API over one client: JSON in and out, errors translated."""

    def __init__(self, access: ProlificAccess, client_factory: ClientFactory = build_client) -> None:
        self.access = access
        self._factory = client_factory
        self._client: httpx.Client | None = None

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        if self._client is None:
            self._client = self._factory(self.access)
        try:
            response = self._client.request(method, path, json=dict(body) if body is not None else None)
        except httpx.HTTPError as error:
            raise Unreachable(f"Prolific at {self.access.endpoint} cannot be reached: {type(error).__name__}") \
                from None
        if response.status_code == 401:
            raise ConfigError(f"requester {self.access.requester_name!r}: Prolific refused its API key "
                              f"({_detail(response)}); register it again with a valid key")
        if response.status_code >= 400:
            raise ProlificCallFailed(method, path, response.status_code, _detail(response))
        if response.status_code == 204 or not response.content:
            return None
        return response.json()
