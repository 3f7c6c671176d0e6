"""Prolific behind the CrowdProvider contract: a run is one Prolific study.

``credentials`` keeps a requester's API token as Mephisto keeps it (``~/.prolific/credentials``, a JSON
object of name to token, readable by its owner only); ``client`` builds the one httpx client a provider
uses from a requester's access and translates Prolific's errors at that boundary; ``study`` turns a run's
arguments into Prolific's study (pure); ``provider`` makes the calls. The local stand-in for Prolific
(``mephisto_dist.prolific_local``) is never imported here: it is reached over HTTP like Prolific itself.
"""

from typing import Any

__all__ = ["ProlificProvider"]


def __getattr__(name: str) -> Any:
    # The provider (and httpx with it) loads when asked for, not with ``credentials``.
    if name == "ProlificProvider":
        from mephisto_dist.providers.prolific.provider import ProlificProvider

        return ProlificProvider
    raise AttributeError(name)
