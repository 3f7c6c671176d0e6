"""The review app's pages, rendered on the server as plain HTML (every value escaped here, once); the only
script is ``static/app.js``, which refreshes a run's live part and asks before a bulk decision."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import quote

from mephisto_dist.domain.status import UnitStatus
from mephisto_dist.domain.unit_history import StatusHistory
from mephisto_dist.review.batches import BatchProgress
from mephisto_dist.review.decisions import WorkerHistory
from mephisto_dist.review.tips import FEEDBACK, PendingNote
from mephisto_dist.review.workers import WorkerDetail
from mephisto_dist.runs.status import RunRow, RunStatus

ORDER = [s for s in UnitStatus if s != UnitStatus.MIXED]
DONE_VERBS = {"approve": "approved", "soft_reject": "soft-rejected", "reject": "rejected"}


def e(value: object) -> str:
    return escape(str(value), quote=True)


def layout(title: str, body: str, *, reviewer: str | None = None, csrf: str = "", said: str = "") -> str:
    nav = ""
    if reviewer is not None:
        nav = (f'<nav><a href="/">Runs</a> <a href="/workers">Workers</a> <a href="/tips">Tips and feedback</a>'
               f'<form method="post" action="/logout" class="inline">{csrf_field(csrf)}'
               f'<button class="link">Sign out {e(reviewer)}</button></form></nav>')
    note = f'<p class="said" role="status">{e(said)}</p>' if said else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{e(title)} · mephisto-dist</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="stylesheet" href="/static/app.css"><script src="/static/app.js" defer></script></head>'
            f'<body><header><strong>mephisto-dist review</strong>{nav}</header><main><h1>{e(title)}</h1>'
            f'{note}{body}</main></body></html>')


def csrf_field(csrf: str) -> str:
    return f'<input type="hidden" name="csrf" value="{e(csrf)}">'


def login_page(*, error: str = "", next_url: str = "/") -> str:
    message = f'<p class="error" role="alert">{e(error)}</p>' if error else ""
    return layout("Sign in", f'{message}<form method="post" action="/login" class="login">'
                  f'<input type="hidden" name="next" value="{e(next_url)}">'
                  '<label>Reviewer <input name="reviewer" autocomplete="username" required autofocus></label>'
                  '<label>Password <input name="password" type="password" autocomplete="current-password" required>'
                  '</label><button>Sign in</button></form>')


def _counts(counts: Mapping[UnitStatus, int]) -> str:
    return " · ".join(f"{s.value} {counts[s]}" for s in ORDER if counts.get(s)) or "no units"


def runs_page(rows: Sequence[RunRow], *, reviewer: str, csrf: str) -> str:
    if not rows:
        return layout("Runs", "<p>No task runs yet: <code>mephisto-dist run TASK_DIR</code> starts one.</p>",
                      reviewer=reviewer, csrf=csrf)
    parts: list[str] = []
    by_task: dict[str, list[RunRow]] = {}
    for row in rows:
        by_task.setdefault(row.task_name, []).append(row)
    for task_name, task_rows in by_task.items():
        lines = "".join(
            f'<tr><td><a href="/runs/{row.run_id}">run {row.run_id}</a></td><td>{e(row.provider)}</td>'
            f'<td>{row.created_at:%Y-%m-%d %H:%M}</td><td>{e(_counts(row.counts))}</td><td>{e(row.done)}</td>'
            f'<td>{_review_link(row)}</td></tr>' for row in task_rows)
        parts.append(f'<section><h2>{e(task_name)}</h2><table><thead><tr><th>run</th><th>provider</th>'
                     f'<th>created</th><th>units</th><th>done</th><th></th></tr></thead><tbody>{lines}</tbody>'
                     f'</table></section>')
    return layout("Runs", "".join(parts), reviewer=reviewer, csrf=csrf)


def _review_link(row: RunRow) -> str:
    waiting = row.counts.get(UnitStatus.COMPLETED, 0)
    return f'<a href="/runs/{row.run_id}/review">review {waiting} completed</a>' if waiting else ""


def run_page(run_id: int, live: str, *, reviewer: str, csrf: str, said: str = "") -> str:
    body = (f'<p><a href="/runs/{run_id}/review">Review its completed units</a></p>'
            f'<div id="live" data-src="/runs/{run_id}/live">{live}</div>'
            f'<form method="post" action="/runs/{run_id}/resend">{csrf_field(csrf)}'
            '<button>Send again what failed (provider calls, launches, TaskRunner events)</button></form>')
    return layout(f"Task run {run_id}", body, reviewer=reviewer, csrf=csrf, said=said)


def run_live(status: RunStatus, diagnosis: Sequence[str], *, calls_failed: int, call_error: str | None,
             processes: Sequence[str], findings: Iterable[str], now: datetime,
             review_batches: Sequence[BatchProgress] = (), history: StatusHistory | None = None) -> str:
    """The part of a run's page that refreshes itself."""
    state = ("finished" if status.is_completed else
             f"stopping ({status.stopping_reason})" if status.stopping_reason is not None else "running")
    pool = ("released (finished)" if status.is_completed else
            f"unknown (Redis does not answer), cap {status.cap or 'unlimited'}" if status.held is None else
            f"{status.held} held of {status.cap or 'unlimited'}")
    rows = "".join(f"<tr><th>{e(s.value)}</th><td>{status.counts.get(s, 0)}</td></tr>" for s in ORDER)
    bars = _bars(status.counts)
    said = "".join(f"<li>{e(sentence)}</li>" for sentence in diagnosis) or "<li>nothing holds it up</li>"
    failed = (f'<p class="error">{calls_failed} provider call(s) failed every attempt: {e(call_error or "")}</p>'
              if calls_failed else "")
    flight = "".join(
        f"<li>unit {unit.unit_id}: {e(unit.worker_name)}, for "
        f"{int((now - unit.assigned_at).total_seconds()) // 60 if unit.assigned_at else 0} min</li>"
        for unit in status.in_flight)
    found = "".join(f"<li>{e(line)}</li>" for line in findings)
    return (f'<p>{e(status.provider_type)} · {e(status.blueprint_type)} · <strong>{e(state)}</strong> · '
            f'concurrency pool {e(pool)} · server {e(status.server_url or "none")} · '
            f'{status.recent_submissions / 10:.1f} submissions/min</p>'
            f'<div class="units">{bars}<table class="counts">{rows}</table></div>'
            + (history_plot(history) if history is not None else "") +
            f'<h2>Why it is where it is</h2><ul>{said}</ul>{failed}'
            + (f"<h2>In flight</h2><ul>{flight}</ul>" if flight else "")
            + "<h2>Processes</h2><ul>" + "".join(f"<li>{e(p)}</li>" for p in processes) + "</ul>"
            + (f"<h2>What the reconcilers did</h2><ul>{found}</ul>" if found else "")
            + ("<h2>Bulk decisions</h2><ul>" + "".join(
                f'<li><a href="/batches/{b.batch_id}">batch {b.batch_id}</a>: {b.worked} of {b.total} worked, '
                f'{b.decided} {DONE_VERBS[b.decision.value]}, {b.skipped} skipped'
                f'{"" if b.finished else " (working)"}</li>' for b in review_batches) + "</ul>"
               if review_batches else ""))


def _bars(counts: Mapping[UnitStatus, int]) -> str:
    """Units per status as one stacked bar (an inline SVG: no script, no library)."""
    total = sum(counts.values())
    if not total:
        return ""
    x = 0.0
    parts: list[str] = []
    for status in ORDER:
        count = counts.get(status, 0)
        if not count:
            continue
        width = 600 * count / total
        parts.append(f'<rect x="{x:.1f}" y="0" width="{width:.1f}" height="24" class="s-{status.name.lower()}">'
                     f'<title>{e(status.value)}: {count}</title></rect>')
        x += width
    return f'<svg class="bar" viewBox="0 0 600 24" role="img" aria-label="units per status">{"".join(parts)}</svg>'


PLOT_W, PLOT_H, PLOT_LEFT, PLOT_TOP = 600, 160, 44, 8


def history_plot(history: StatusHistory) -> str:
    """Units per status over time as stacked areas (an inline SVG: no script, no library); the first
    status of :data:`ORDER` at the bottom."""
    if len(history.times) < 2 or not history.peak:
        return ""
    start, end = history.times[0], history.times[-1]
    span_s = max((end - start).total_seconds(), 1e-9)
    xs = [PLOT_LEFT + PLOT_W * (t - start).total_seconds() / span_s for t in history.times]
    peak = history.peak
    below = [0] * len(xs)
    areas: list[str] = []
    legend: list[str] = []
    for status in ORDER:
        counts = history.counts.get(status)
        if counts is None:
            continue
        above = [b + c for b, c in zip(below, counts, strict=True)]
        top = " ".join(f"{x:.1f},{PLOT_TOP + PLOT_H * (1 - v / peak):.1f}" for x, v in zip(xs, above, strict=True))
        bottom = " ".join(f"{x:.1f},{PLOT_TOP + PLOT_H * (1 - v / peak):.1f}"
                          for x, v in reversed(list(zip(xs, below, strict=True))))
        areas.append(f'<polygon points="{top} {bottom}" class="s-{status.name.lower()}">'
                     f'<title>{e(status.value)}: now {counts[-1]}, at most {max(counts)}</title></polygon>')
        legend.append(f'<span><svg viewBox="0 0 10 10" class="key"><rect width="10" height="10" '
                      f'class="s-{status.name.lower()}"/></svg>{e(status.value)}</span>')
        below = above
    fmt = "%H:%M:%S" if span_s < 86_400 else "%Y-%m-%d %H:%M"
    base = PLOT_TOP + PLOT_H
    axes = (f'<line x1="{PLOT_LEFT}" y1="{base}" x2="{PLOT_LEFT + PLOT_W}" y2="{base}" class="axis"/>'
            f'<line x1="{PLOT_LEFT}" y1="{PLOT_TOP}" x2="{PLOT_LEFT}" y2="{base}" class="axis"/>'
            f'<text x="{PLOT_LEFT - 4}" y="{PLOT_TOP + 10}" class="tick end">{peak}</text>'
            f'<text x="{PLOT_LEFT - 4}" y="{base}" class="tick end">0</text>'
            f'<text x="{PLOT_LEFT}" y="{base + 16}" class="tick">{start:{fmt}}</text>'
            f'<text x="{PLOT_LEFT + PLOT_W}" y="{base + 16}" class="tick end">{end:{fmt}} UTC</text>')
    return (f'<figure class="history"><svg viewBox="0 0 {PLOT_LEFT + PLOT_W + 8} {base + 22}" role="img" '
            f'aria-label="units per status over time">{"".join(areas)}{axes}</svg>'
            f'<figcaption>Units per status over time (from each unit\'s timestamps). '
            f'{"".join(legend)}</figcaption></figure>')


def review_page(run_id: int, groups: Sequence[tuple[str, int, Sequence[dict[str, Any]]]], *, reviewer: str,
                csrf: str, said: str = "", shown: int, total: int, review_bundle: bool = False,
                next_after: int | None = None) -> str:
    """One page of completed units, by worker: (worker name, worker id, its records), each record its
    export record; with ``review_bundle``, each submission as the task's review bundle renders it;
    ``next_after``: the last unit shown, when more follow."""
    if not groups:
        return layout(f"Review run {run_id}", f'<p>No completed unit waits for a decision. '
                      f'<a href="/runs/{run_id}">Back to the run</a></p>', reviewer=reviewer, csrf=csrf, said=said)
    parts = [(f'<p>{shown} of {total} completed unit(s), by worker. Decisions pay through the same ledger as '
             f'<code>mephisto-dist review</code>: nothing is paid twice.</p>'
             f'<p><a href="/runs/{run_id}/approve">Approve all {total} completed unit(s) of the run…</a></p>')]
    more = (f'<p class="more"><a href="/runs/{run_id}/review?after={next_after}">The next completed units…</a></p>'
            if next_after is not None else "")
    for worker_name, worker_id, records in groups:
        units = "".join(_unit(record, f"/runs/{run_id}/review", csrf, review_bundle) for record in records)
        parts.append(
            f'<section class="worker"><h2>{e(worker_name)}</h2>'
            f'<p><a href="/runs/{run_id}/workers/{worker_id}/approve">Approve all of {e(worker_name)}\'s completed '
            f'units…</a> · <a href="/workers#w{worker_id}">history</a></p>'
            f'<form method="post" action="/workers/{worker_id}/block" class="inline">{csrf_field(csrf)}'
            f'<input type="hidden" name="next" value="/runs/{run_id}/review">'
            f'<input name="reason" placeholder="why block" required aria-label="reason to block">'
            f'<button class="danger">Block {e(worker_name)}</button></form>{units}</section>')
    return layout(f"Review run {run_id}", "".join(parts) + more, reviewer=reviewer, csrf=csrf, said=said)


def unit_page(record: dict[str, Any], *, reviewer: str, csrf: str, said: str = "", review_bundle: bool = False,
              ) -> str:
    """One unit, whatever its status: its submission (as the task's review bundle renders it, when the run
    has one), its data, and the decision forms while it waits for one."""
    run_id = record["task_run_id"]
    back = (f'<p><a href="/runs/{e(run_id)}">run {e(run_id)}</a> · <a href="/runs/{e(run_id)}/review">its '
            f'completed units</a> · worker {e(record.get("worker_name") or "none")}</p>')
    return layout(f"Unit {record['unit_id']}", back + _unit(record, f"/units/{record['unit_id']}", csrf,
                                                            review_bundle),
                  reviewer=reviewer, csrf=csrf, said=said)


def review_outputs(data: dict[str, Any]) -> Any:
    """What a review bundle receives as ``outputs`` (Mephisto unwraps an old task's ``final_submission``)."""
    outputs = data.get("outputs") or {}
    return outputs["final_submission"] if isinstance(outputs, dict) and "final_submission" in outputs else outputs


def _unit(record: dict[str, Any], back: str, csrf: str, review_bundle: bool = False) -> str:
    unit_id = record["unit_id"]
    data = record.get("data") or {}
    outputs = data.get("outputs") or {}
    files = "".join(_file(unit_id, name, item) for name, value in outputs.items()
                    for item in (value if isinstance(value, list) else [value])
                    if isinstance(item, dict) and isinstance(item.get("storage_key"), str))
    metadata = record.get("metadata") or {}
    raw = (f'<div class="data"><div><h4>inputs</h4><pre>{e(_json(data.get("inputs")))}</pre></div>'
           f'<div><h4>outputs</h4><pre>{e(_json(outputs))}</pre>{files}</div></div>')
    if review_bundle and data.get("outputs") is not None:
        # Mephisto's contract: the frame loads the bundle, then gets {"REVIEW_DATA": {inputs, outputs}} as a
        # JSON message and answers with its height ({"IFRAME_DATA": {"height"}}); app.js carries both.
        review_data = json.dumps({"REVIEW_DATA": {"inputs": data.get("inputs") or {},
                                                  "outputs": review_outputs(data)}}, default=str)
        raw = (f'<iframe class="review-bundle" src="/api/units/{e(unit_id)}/review.html" height="100" '
               f'title="unit {e(unit_id)} as the task\'s review bundle shows it" data-review="{e(review_data)}">'
               f'</iframe><details><summary>inputs and outputs</summary>{raw}</details>')
    elif data.get("outputs") is None:
        raw = '<p class="meta">nothing submitted yet</p>'
    decide = "" if record["status"] != UnitStatus.COMPLETED.value else (
        f'<form method="post" action="/units/decide" class="decide">{csrf_field(csrf)}'
        f'<input type="hidden" name="unit_id" value="{e(unit_id)}">'
        f'<input type="hidden" name="next" value="{e(back)}">'
        '<input name="reason" placeholder="feedback (required to reject)" aria-label="feedback">'
        '<input name="bonus" placeholder="bonus $" inputmode="decimal" size="7" aria-label="bonus in dollars">'
        '<button name="decision" value="approve">Approve</button>'
        '<button name="decision" value="soft_reject">Soft-reject</button>'
        '<button name="decision" value="reject" class="danger">Reject</button></form>')
    return (f'<article class="unit" id="u{e(unit_id)}"><h3><a href="/units/{e(unit_id)}">unit {e(unit_id)}</a> · '
            f'{e(record["status"])} · ${record["pay_amount"]:.2f}</h3>{raw}'
            + (f'<p class="meta">tips and feedback: {e(_json(metadata))}</p>' if metadata else "")
            + decide + '</article>')


def review_frame(bundle_url: str) -> str:
    """The page a review bundle is loaded in (Mephisto's ``review.html``): an ``#app`` element and the
    bundle, nothing else of ours."""
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1"><title>Review</title></head>'
            f'<body><noscript>The review bundle needs JavaScript.</noscript><div id="app"></div>'
            f'<script src="{e(bundle_url)}"></script></body></html>')


def _file(unit_id: str, name: str, item: dict[str, Any]) -> str:
    url = f"/units/{quote(unit_id)}/files/{quote(item['storage_key'])}"
    label = e(item.get("filename") or name)
    if str(item.get("content_type") or item.get("type") or "").startswith("image/"):
        return f'<figure><img src="{url}" alt="{label}"><figcaption><a href="{url}">{label}</a></figcaption></figure>'
    return f'<p><a href="{url}" download>{label}</a></p>'


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def approve_preview(run_id: int, whose: str, count: int, reward: float, *, reviewer: str, csrf: str) -> str:
    """``whose``: "ann's", "the run's"."""
    body = (f'<p>Approve {e(whose)} {count} completed unit(s) in run {run_id}: '
            f'<strong>${reward:.2f}</strong> in rewards (before the provider\'s fee), plus any bonus below. '
            'The Celery workers decide them in the background; the next page shows how far they got.</p>'
            f'<form method="post">{csrf_field(csrf)}'
            '<label>Bonus per unit $ <input name="bonus" inputmode="decimal" size="7"></label> '
            '<label>Reason <input name="reason"></label> '
            f'<button data-confirm="Approve {count} unit(s)?">Approve {count} unit(s)</button> '
            f'<a href="/runs/{run_id}/review">Cancel</a></form>')
    return layout(f"Approve {whose} units", body, reviewer=reviewer, csrf=csrf)


def batch_page(progress: BatchProgress, *, reviewer: str, csrf: str) -> str:
    """A bulk decision's progress; its live part refreshes itself until the batch is finished."""
    back = f'<p><a href="/runs/{progress.run_id}/review">Back to the review</a></p>' if progress.run_id else ""
    live = batch_live(progress)
    source = "" if progress.finished else f' data-src="/batches/{progress.batch_id}/live" data-every="1000"'
    return layout(f"Review batch {progress.batch_id}", f'<div id="live"{source}>{live}</div>{back}',
                  reviewer=reviewer, csrf=csrf)


def batch_live(progress: BatchProgress) -> str:
    verb = DONE_VERBS[progress.decision.value]
    state = ("finished" if progress.finished else
             "waiting for a Celery worker" if not progress.worked else "working")
    skipped = (f", {progress.skipped} skipped (decided meanwhile or no longer reviewable: "
               f"{e(progress.last_skip or '')})" if progress.skipped else "")
    return (f'<p class="batch" data-finished="{str(progress.finished).lower()}"><strong>{e(state)}</strong>: '
            f'{progress.worked} of {progress.total} unit(s) worked, {progress.decided} {verb}{skipped}; '
            f'by {e(progress.decided_by or "?")}, started {progress.created_at:%Y-%m-%d %H:%M:%S} UTC.</p>'
            f'<progress max="{progress.total}" value="{progress.worked}">{progress.worked}/{progress.total}'
            '</progress>')


def workers_page(histories: Sequence[WorkerHistory], *, reviewer: str, csrf: str) -> str:
    if not histories:
        return layout("Workers", "<p>No worker has submitted a unit yet.</p>", reviewer=reviewer, csrf=csrf)
    rows = "".join(
        f'<tr id="w{h.worker_id}"><td><a href="/workers/{h.worker_id}">{e(h.worker_name)}</a></td><td>{e(h.provider_type)}</td><td>{h.submitted}</td>'
        f'<td>{h.accepted}</td><td>{h.soft_rejected}</td><td>{h.rejected}</td>'
        f'<td>{_rate(h)}</td><td>{"blocked: " + e(h.block_reason or "") if h.is_blocked else ""}</td></tr>'
        for h in histories)
    return layout("Workers", '<table><thead><tr><th>worker</th><th>provider</th><th>submitted</th><th>accepted</th>'
                  '<th>soft-rejected</th><th>rejected</th><th>approval rate</th><th></th></tr></thead>'
                  f'<tbody>{rows}</tbody></table>', reviewer=reviewer, csrf=csrf)


def tips_page(notes: Sequence[PendingNote], *, reviewer: str, csrf: str, said: str = "") -> str:
    """Tips and feedback answers to decide: a tip accepted goes into its run's tips file (the page's Tips
    widget of later launches), a rejected one is kept out; a feedback answer is marked reviewed."""
    if not notes:
        return layout("Tips and feedback", "<p>No tip or feedback answer is waiting for a decision.</p>",
                      reviewer=reviewer, csrf=csrf, said=said)

    def actions(note: PendingNote) -> str:
        hidden = (f'{csrf_field(csrf)}<input type="hidden" name="unit_id" value="{note.unit_id}">'
                  f'<input type="hidden" name="note_id" value="{e(note.note_id)}">'
                  '<input type="hidden" name="next" value="/tips">')
        if note.kind == FEEDBACK:
            return (f'<form method="post" action="/tips/decide" class="inline">{hidden}'
                    '<button name="action" value="reviewed">Mark reviewed</button></form>')
        where = (f'<span class="meta">into {e(note.tips_location)}</span>' if note.tips_location
                 else '<span class="meta">no tips_location: it can only be rejected</span>')
        accept = ('<button name="action" value="accept">Accept</button>' if note.tips_location else "")
        return (f'<form method="post" action="/tips/decide" class="inline">{hidden}{accept}'
                f'<button name="action" value="reject">Reject</button></form> {where}')

    rows = "".join(
        f'<tr id="{e(note.kind)}-{e(note.note_id)}"><td>{e(note.kind)}</td>'
        f'<td><a href="/units/{note.unit_id}">{note.unit_id}</a></td>'
        f'<td><a href="/runs/{note.run_id}">{note.run_id}</a> {e(note.task_name)}</td><td>{e(note.worker_name)}</td>'
        f'<td>{e(note.header)}</td><td>{e(note.text)}</td><td>{actions(note)}</td></tr>'
        for note in notes)
    return layout("Tips and feedback", '<table><thead><tr><th>kind</th><th>unit</th><th>run</th><th>worker</th>'
                  '<th>header / question</th><th>text</th><th></th></tr></thead>'
                  f'<tbody>{rows}</tbody></table>', reviewer=reviewer, csrf=csrf, said=said)


def worker_page(detail: WorkerDetail, *, reviewer: str, csrf: str, said: str = "") -> str:
    h = detail.history
    median = f"{detail.median_seconds:.0f} s" if detail.median_seconds is not None else "-"
    blocked = f'<p class="error">blocked: {e(h.block_reason or "")}</p>' if h.is_blocked else ""
    summary = (f'<p>{e(h.provider_type)} · {h.submitted} submitted · {h.accepted} accepted · {h.soft_rejected} '
               f'soft-rejected · {h.rejected} rejected · approval rate {_rate(h)} · median time per unit {median}'
               f'</p>{blocked}')
    runs = "".join(
        f'<tr><td><a href="/runs/{t.run_id}">{t.run_id}</a></td><td>{e(t.task_name)}</td><td>{t.submitted}</td>'
        f'<td>{t.accepted}</td><td>{t.soft_rejected}</td><td>{t.rejected}</td></tr>' for t in detail.runs)
    units = "".join(
        f'<tr><td><a href="/units/{u.unit_id}">{u.unit_id}</a></td><td><a href="/runs/{u.run_id}">{u.run_id}</a></td>'
        f'<td>{e(u.status)}</td><td>{f"{u.seconds:.0f} s" if u.seconds is not None else "-"}</td>'
        f'<td>{e(u.submitted_at.strftime("%Y-%m-%d %H:%M") if u.submitted_at else "")}</td></tr>'
        for u in detail.units)
    shown = (f'<p class="meta">the newest {len(detail.units)} of {h.submitted}</p>'
             if len(detail.units) < h.submitted else "")
    held = "".join(
        f'<li>{e(name)} = {value} <form method="post" action="/workers/{h.worker_id}/qualifications" class="inline">'
        f'{csrf_field(csrf)}<input type="hidden" name="name" value="{e(name)}">'
        '<button name="action" value="revoke">Revoke</button></form></li>' for name, value in detail.qualifications)
    qualifications = (
        f'<h2>Qualifications</h2><ul id="qualifications">{held or "<li>none</li>"}</ul>'
        f'<form method="post" action="/workers/{h.worker_id}/qualifications" class="inline">{csrf_field(csrf)}'
        '<input name="name" placeholder="qualification" aria-label="qualification" required>'
        '<input name="value" value="1" size="4" aria-label="value">'
        '<button name="action" value="grant">Grant</button></form>')
    body = (f'{summary}{qualifications}<h2>Units per run</h2><table><thead><tr><th>run</th><th>task</th><th>submitted</th>'
            '<th>accepted</th><th>soft-rejected</th><th>rejected</th></tr></thead>'
            f'<tbody>{runs}</tbody></table><h2>Units</h2>{shown}<table><thead><tr><th>unit</th><th>run</th>'
            f'<th>status</th><th>time</th><th>submitted</th></tr></thead><tbody>{units}</tbody></table>')
    return layout(f"Worker {h.worker_name}", body, reviewer=reviewer, csrf=csrf, said=said)


def _rate(history: WorkerHistory) -> str:
    judged = history.accepted + history.rejected + history.soft_rejected
    return f"{100 * history.accepted / judged:.0f}%" if judged else "-"


def error_page(status: int, message: str) -> str:
    return layout(f"{status}", f'<p class="error" role="alert">{e(message)}</p><p><a href="/">Runs</a></p>')
