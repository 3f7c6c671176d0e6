"""prolific-local: a small stand-in for Prolific's researcher API, for tests and offline rehearsals.

It answers at Prolific's paths (``/api/v1/...``, ``Authorization: Token KEY``) with the fields Mephisto's
Prolific client and the ``prolific`` provider use: the account (``users/me``), workspaces and their
balance, projects, studies (create, edit, delete, the ``transition`` actions PUBLISH, PAUSE, START and
STOP, the cost calculator), eligibility requirements (listed, counted), submissions (list, retrieve,
APPROVE and REJECT), bonus payments (set up, then pay), participant groups and their participants,
messages (sent about a study; listed by user or date; unread) and invitations to a workspace. Every listing
is paged as Prolific pages it (``page``, ``page_size``, ``_links.next``, ``meta.count``). Errors come as
Prolific's ``{"error": {...}}`` bodies.

Prolific's own rules are kept, the odd ones included: places only grow; only ``internal_name`` and
``total_available_places`` can be edited once published; a study whose places are all taken goes to
``AWAITING REVIEW`` by itself (as a stopped one does), is ``COMPLETED`` once every submission in it is
reviewed, and is active again when places are added or one is freed (a return);
a study or submission being changed shows the undocumented ``PROCESSING`` for ``--processing-s``; a
rejection needs a message of 100 characters and a category, and cannot be reversed; paying a bulk bonus
is not idempotent (paid again, it pays again). The participant side is served at the same address: a page per study that starts a
submission and opens the study URL with ``{{%PROLIFIC_PID%}}``, ``{{%STUDY_ID%}}`` and
``{{%SESSION_ID%}}`` filled in, ``/submissions/complete?cc=CODE`` where a study's completion code sends
the submission to review, and a small JSON API for simulated participants under ``/local``.

It owns nothing of the ``prolific`` provider, which must never import it: the provider talks to it over
HTTP, as to Prolific. Simplifications (for rehearsals, never production): any non-empty token is accepted
unless ``--api-key`` names one; there is one account; of the eligibility requirements only those about
participant ids (block list, allow list, participant groups) are applied, the others are stored; no fees
are charged; submissions do not time out on their own.
"""
