"""ParlAI's ``Message``: a dict whose keys are set once (``force_set`` overwrites)."""

from typing import Any


class Message(dict):  # type: ignore[type-arg]
    def __setitem__(self, key: Any, val: Any) -> None:
        if key in self:
            raise RuntimeError(f"Message already contains key `{key}`. If this was intentional, please use "
                               "the function `force_set(key, value)`.")
        super().__setitem__(key, val)

    def force_set(self, key: Any, val: Any) -> None:
        super().__setitem__(key, val)

    def copy(self) -> "Message":
        return type(self)(self)
