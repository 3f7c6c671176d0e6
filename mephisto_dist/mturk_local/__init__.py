"""mturk-local: a small stand-in for Amazon Mechanical Turk, for tests and offline rehearsals.

It answers MTurk's requester API in the JSON 1.1 protocol boto3 speaks (``X-Amz-Target:
MTurkRequesterServiceV20170117.<Operation>``), so ``boto3.client("mturk", endpoint_url=...)`` works
unchanged, and serves the worker side (a page listing HITs, preview, accept, return,
``/mturk/externalSubmit``) as HTML and as a small JSON API for simulated workers. State lives in one
SQLite file and survives a restart.

It owns nothing of the ``mturk`` provider, which must never import it: the provider talks to it only over
HTTP, exactly as to MTurk. It is never a stand-in for MTurk in production.

Known simplifications (each said where it is made): system qualifications (Locale, Masters, approval
rate) are taken as met by every worker; MTurk's 20% commission is not charged; QuestionForm HITs are
refused (ExternalQuestion and HTMLQuestion are served); credentials are accepted without checking the
signature; there is one requester, so MustBeOwnedByCaller changes nothing, and the system's qualification
types are not listed by ListQualificationTypes, whose Query is a word search (every word in the name,
description or keywords, an exact name first) where MTurk's ranking is its own.
"""
