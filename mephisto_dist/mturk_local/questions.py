"""The HIT's ``Question``: ExternalQuestion (a URL opened in a frame) and HTMLQuestion (a page of
HTML), read as MTurk reads them. QuestionForm is refused: mturk-local does not render it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from urllib.parse import urlsplit

from mephisto_dist.mturk_local.faults import RequestFault

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Question:
    kind: str  # "external" or "html"
    content: str  # the ExternalURL, or the HTML
    frame_height: int


def _fault(why: str) -> RequestFault:
    return RequestFault("AWS.MechanicalTurk.XMLParseError",
                        f"There was an error parsing the XML question or answer data in your request. {why}")


def _child(root: ET.Element, name: str) -> str | None:
    for element in root:
        if element.tag.rsplit("}", 1)[-1] == name:
            return (element.text or "").strip()
    return None


def parse_question(xml: str) -> Question:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as error:
        raise _fault(str(error)) from None
    kind = root.tag.rsplit("}", 1)[-1]
    height_text = _child(root, "FrameHeight") or "0"
    if not height_text.isdigit():
        raise _fault(f"FrameHeight {height_text!r} is not a whole number.")
    if kind == "ExternalQuestion":
        url = _child(root, "ExternalURL")
        if not url:
            raise _fault("An ExternalQuestion needs an ExternalURL.")
        _check_external_url(url)
        return Question("external", url, int(height_text))
    if kind == "HTMLQuestion":
        html = _child(root, "HTMLContent")
        if not html:
            raise _fault("An HTMLQuestion needs HTMLContent.")
        return Question("html", html, int(height_text))
    raise _fault(f"mturk-local serves ExternalQuestion and HTMLQuestion, not {kind}.")


def _check_external_url(url: str) -> None:
    parts = urlsplit(url)
    # MTurk requires HTTPS; a rehearsal on this machine may use plain HTTP on a loopback address.
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS):
        return
    raise _fault(f"The ExternalURL {url!r} must use https.")
