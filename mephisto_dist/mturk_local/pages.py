"""The worker's HTML pages: the HIT list, a HIT's preview with Accept, the accepted HIT in a frame with
Return, and the page ``/mturk/externalSubmit`` answers with."""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote

STYLE = ("body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:.3em .6em}iframe{width:100%;border:1px solid #888}"
         ".bar{display:flex;gap:1em;align-items:center;margin-bottom:1em}")


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)} - mturk-local</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>")


def _worker_form(worker_id: str | None) -> str:
    return ("<form method='get' action='/' class='bar'><label>Worker id <input name='workerId' "
            f"value='{escape(worker_id or '')}' placeholder='A1EXAMPLE'></label><button>Sign in</button></form>")


def hit_list(hits: list[dict[str, Any]], worker_id: str | None, notice: str | None) -> str:
    who = f"&workerId={quote(worker_id)}" if worker_id else ""
    rows = "".join(
        f"<tr><td>{escape(h['Title'])}</td><td>{escape(h['Description'])}</td><td>${escape(h['Reward'])}</td>"
        f"<td>{h['Available']}</td><td><a href='/projects/{h['HITId']}?x=1{who}'>Preview</a></td></tr>"
        for h in hits)
    table = (f"<table id='hits'><tr><th>Title</th><th>Description</th><th>Reward</th><th>Available</th><th></th>"
             f"</tr>{rows}</table>") if hits else "<p id='hits'>No HITs are available.</p>"
    note = f"<p id='notice'>{escape(notice)}</p>" if notice else ""
    return _page("HITs", f"<h1>mturk-local: available HITs</h1>{_worker_form(worker_id)}{note}{table}")


def _frame(view: dict[str, Any]) -> str:
    height = int(view.get("FrameHeight") or 0) or 600
    if "url" in view:
        return f"<iframe id='task' src='{escape(view['url'])}' style='height:{height}px'></iframe>"
    return f"<iframe id='task' srcdoc='{escape(view['html'])}' style='height:{height}px'></iframe>"


def preview(view: dict[str, Any], worker_id: str | None) -> str:
    accept = (f"<form method='post' action='/projects/{view['HITId']}/accept'><input type='hidden' name='workerId' "
              f"value='{escape(worker_id)}'><button id='accept'>Accept</button></form>") if worker_id else \
        "<span>Sign in with a worker id to accept.</span>"
    bar = f"<div class='bar'><b>{escape(view['Title'])}</b><span>${escape(view['Reward'])}</span>{accept}</div>"
    return _page(view["Title"], bar + _frame(view))


def work(view: dict[str, Any], worker_id: str) -> str:
    back = (f"<form method='post' action='/assignments/{view['AssignmentId']}/return'><input type='hidden' "
            f"name='workerId' value='{escape(worker_id)}'><button id='return'>Return</button></form>")
    bar = f"<div class='bar'><b>Assignment {view['AssignmentId']}</b>{back}</div>"
    return _page("Working", bar + _frame(view))


def submitted(worker_id: str, assignment_id: str) -> str:
    target = f"/?workerId={quote(worker_id)}&submitted={quote(assignment_id)}"
    # The frame now shows a page of our own origin, so it may send the worker's window back to the list.
    return _page("Submitted", f"<p id='submitted'>Assignment {escape(assignment_id)} submitted.</p>"
                 f"<script>window.top.location.href = {target!r};</script>")


def refusal(message: str) -> str:
    return _page("Not possible", f"<p id='refusal'>{escape(message)}</p><p><a href='/'>Back to the HITs</a></p>")
