"""The onboarding example's hooks (``mephisto.blueprint.hooks_module``); see ``mephisto_dist.blueprints.hooks``.

``validate_onboarding`` runs in the web process when a worker submits the onboarding page;
``on_unit_submitted`` runs on a Celery worker after each unit's submission is recorded.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

# Fills the onboarding page's ${natural_example} and ${unnatural_example}.
onboarding_data = {
    "natural_example": "She went to the market yesterday.",
    "unnatural_example": "She have went to the market yesterday.",
}


def validate_onboarding(onboarding_data: dict[str, Any]) -> bool:
    """Both answers right: the natural sentence is (b), and a perfectly natural sentence gets 5."""
    return onboarding_data.get("natural") == "b" and onboarding_data.get("top_rating") == "5"


def on_unit_submitted(unit_data: dict[str, Any], outputs: dict[str, Any]) -> None:
    log.warning("sentence %s rated %s", unit_data.get("sentence_id"), outputs.get("rating"))
