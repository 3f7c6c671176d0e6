"""The one place a boto3 MTurk client is built. Credentials stay where AWS tools keep them: a named
profile in the shared credentials file (``AWS_SHARED_CREDENTIALS_FILE``, default ``~/.aws/credentials``)
or the standard AWS environment; only the profile's name and the endpoint are ever stored by us."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mephisto_dist.errors import ConfigError

REGION = "us-east-1"
PRODUCTION_ENDPOINT = "https://mturk-requester.us-east-1.amazonaws.com"
SANDBOX_ENDPOINT = "https://mturk-requester-sandbox.us-east-1.amazonaws.com"
MTURK_TYPES = ("mturk", "mturk_sandbox")


@dataclass(frozen=True)
class RequesterAccess:
    """How to reach one requester's account; holds no secret."""

    requester_name: str
    provider_type: str
    profile: str | None = None
    endpoint_url: str | None = None

    @property
    def endpoint(self) -> str:
        if self.endpoint_url:
            return self.endpoint_url
        return SANDBOX_ENDPOINT if self.provider_type == "mturk_sandbox" else PRODUCTION_ENDPOINT

    def as_args(self) -> dict[str, str]:
        """What a run's stored provider arguments carry (never a key)."""
        args = {"requester_name": self.requester_name}
        if self.profile:
            args["aws_profile"] = self.profile
        if self.endpoint_url:
            args["endpoint_url"] = self.endpoint_url
        return args

    @classmethod
    def from_args(cls, provider_type: str, args: Mapping[str, Any]) -> RequesterAccess:
        name = args.get("requester_name")
        if not name:
            raise ConfigError(f"provider {provider_type} needs mephisto.provider.requester_name")
        return cls(str(name), provider_type, args.get("aws_profile") or None, args.get("endpoint_url") or None)


def build_client(access: RequesterAccess) -> Any:
    """A boto3 MTurk client for the requester. Throttling is retried by botocore's standard mode."""
    import boto3  # here, not at the top: a tenth of a second of imports only MTurk's calls need
    import botocore.exceptions
    from botocore.config import Config

    try:
        session = boto3.Session(profile_name=access.profile) if access.profile else boto3.Session()
    except botocore.exceptions.ProfileNotFound:
        raise ConfigError(f"requester {access.requester_name!r}: AWS profile {access.profile!r} is not in the "
                          "shared credentials file; register the requester again with its keys") from None
    return session.client("mturk", region_name=REGION, endpoint_url=access.endpoint,
                          config=Config(retries={"mode": "standard", "max_attempts": 6},
                                        connect_timeout=10, read_timeout=30))
