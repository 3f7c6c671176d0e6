"""Tips seeded from ``mephisto.blueprint.tips_location``: the CSV of tips a requester accepted from earlier
runs (Mephisto's review tool writes it), read once at launch and stored with the run, so every web
process serves them in ``/task_config.json`` (``tips``) for the page's Tips widget to show."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from mephisto_dist.config.run_config import TIPS_KEY
from mephisto_dist.errors import ConfigError

STORED_KEY: Final = TIPS_KEY
MAX_TIPS: Final = 1000


def read_tips(blueprint_args: Mapping[str, Any]) -> list[dict[str, str]]:
    """The tips of the CSV at ``tips_location`` (none when unset or not written yet, as in Mephisto)."""
    value = blueprint_args.get("tips_location")
    if not value:
        return []
    path = Path(str(value)).expanduser()
    if not path.is_file():
        return []
    try:
        with path.open(encoding="utf-8-sig", newline="") as stream:
            rows = [dict(row) for row in csv.DictReader(stream)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ConfigError(f"cannot read tips_location {path}: {error}") from None
    if rows and "text" not in rows[0]:
        raise ConfigError(f"tips_location {path} needs a 'text' column (header,text as Mephisto writes it)")
    if len(rows) > MAX_TIPS:
        raise ConfigError(f"tips_location {path} holds {len(rows)} tips; at most {MAX_TIPS} are shown")
    return rows
