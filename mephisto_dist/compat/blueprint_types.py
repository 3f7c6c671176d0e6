"""The blueprint type names scripts import from Mephisto's blueprint modules."""

from typing import Final

BLUEPRINT_TYPE_STATIC_HTML: Final = "static_task"
BLUEPRINT_TYPE_STATIC_REACT: Final = "static_react_task"
