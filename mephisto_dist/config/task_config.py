"""A task config as the code uses it (:class:`TaskConfig`): every argument of each chosen section,
defaults filled, values typed and checked, built from values however they were read (a task folder's
YAML by :mod:`.loader`, a stored config by :meth:`TaskConfig.from_dict`).

Free of OmegaConf and YAML: the processes that only read stored configs (the web server, Celery workers)
never load them, and ``mephisto-dist run`` loads them only once it has forked its web server (about a
twentieth of a second off the server's start)."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from mephisto_dist.config.arguments import (
    ARCHITECT,
    BLUEPRINT,
    KINDS,
    MISSING,
    PROVIDER,
    TASK,
    TASK_RUN,
    Argument,
    Section,
    get_section,
    sections,
)
from mephisto_dist.errors import ConfigError

IGNORED_MEPHISTO_KEYS: Final = ("database", "log_level")
"""Fields of Mephisto's ``MephistoConfig`` that mean nothing here (one database, our own logging)."""
_MISSING_TEXT: Final = "???"
_TRUE: Final = frozenset({"true", "yes", "on", "1"})
_FALSE: Final = frozenset({"false", "no", "off", "0"})
INT_RE: Final = re.compile(r"[+-]?\d+")
FLOAT_RE: Final = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True)
class Choice:
    """A section chosen by name (``static_task``) and where it was chosen, for the errors that name it."""

    name: str
    where: str


@dataclass(frozen=True)
class TaskConfig:
    """A loaded task config: every argument of each chosen section, defaults filled, values typed."""

    task_dir: Path
    conf_name: str
    blueprint_type: str
    architect_type: str
    provider_type: str
    blueprint: dict[str, Any]
    architect: dict[str, Any]
    provider: dict[str, Any]
    task: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, in Mephisto's shape (``_blueprint_type`` etc.), plus the folder and config name."""
        return {
            "task_dir": str(self.task_dir),
            "conf_name": self.conf_name,
            "blueprint": {"_blueprint_type": self.blueprint_type, **self.blueprint},
            "architect": {"_architect_type": self.architect_type, **self.architect},
            "provider": {"_provider_type": self.provider_type, **self.provider},
            "task": dict(self.task),
        }

    def unimplemented_settings(self) -> list[str]:
        """``mephisto.KIND.NAME`` of each argument that is accepted but not carried out yet and is set
        here to something other than its default (``run`` warns about each)."""
        found = []
        for kind, name in ((BLUEPRINT, self.blueprint_type), (ARCHITECT, self.architect_type),
                           (PROVIDER, self.provider_type), (TASK, TASK)):
            values = getattr(self, kind)
            for argument in get_section(kind, name).arguments:
                if not argument.implemented and values.get(argument.dest, argument.default) != argument.default:
                    found.append(f"mephisto.{kind}.{argument.dest}")
        return found

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskConfig:
        """The reverse of :meth:`as_dict`; validated again, so a stored config gains new defaults."""
        where = "in the stored task config"
        if not isinstance(data, Mapping):
            raise ConfigError(f"a stored task config must be a mapping, found {kind_of(data)}")
        for field in ("task_dir", "conf_name"):
            if not isinstance(data.get(field), str):
                raise ConfigError(f"the stored task config has no '{field}'")
        chosen: dict[str, Section] = {TASK: TASK_RUN}
        values: dict[str, Any] = {}
        for kind in KINDS:
            given = data.get(kind)
            if not isinstance(given, Mapping):
                raise ConfigError(f"the stored task config has no '{kind}' section")
            if kind != TASK:
                name = given.get(f"_{kind}_type")
                if not isinstance(name, str):
                    raise ConfigError(f"the stored task config's '{kind}' section has no '_{kind}_type'")
                chosen[kind] = section_for(kind, Choice(name, where))
            values[kind] = dict(given)
        return build_task_config(Path(data["task_dir"]), data["conf_name"], chosen, values, where)


def section_for(kind: str, choice: Choice) -> Section:
    try:
        return get_section(kind, choice.name)
    except ConfigError as error:
        raise ConfigError(f"{error} ({choice.where})") from None


def build_task_config(
    folder: Path, conf_name: str, chosen: Mapping[str, Section], values: Mapping[str, Any], where: str
) -> TaskConfig:
    _check_keys(values, chosen, where)
    built = {kind: _section_values(section, values.get(kind) or {}) for kind, section in chosen.items()}
    return TaskConfig(
        task_dir=folder,
        conf_name=conf_name,
        blueprint_type=chosen["blueprint"].name,
        architect_type=chosen["architect"].name,
        provider_type=chosen["provider"].name,
        blueprint=built["blueprint"],
        architect=built["architect"],
        provider=built["provider"],
        task=built[TASK],
    )


def _check_keys(values: Mapping[str, Any], chosen: Mapping[str, Section], where: str) -> None:
    for kind, given in values.items():
        if kind in IGNORED_MEPHISTO_KEYS:
            continue
        if kind not in chosen:
            raise unknown_key(f"mephisto.{kind}", chosen, where)
        if given is None:
            continue
        if not isinstance(given, Mapping):
            raise ConfigError(f"'mephisto.{kind}' must be a mapping of arguments, found {kind_of(given)} ({where})")
        section = chosen[kind]
        for dest in given:
            if dest == f"_{kind}_type":
                if given[dest] != section.name:
                    raise ConfigError(
                        f"'mephisto.{kind}.{dest}' is '{given[dest]}' but the defaults choose "
                        f"'{section.name}' ({where})"
                    )
            elif dest not in section.dests:
                raise unknown_key(f"mephisto.{kind}.{dest}", chosen, where)


def unknown_key(key: str, chosen: Mapping[str, Section], where: str) -> ConfigError:
    """An unknown-key error with the closest known key, or the section the key belongs to."""
    parts = key.split(".")
    hint = ""
    if len(parts) == 2:
        kinds = [*KINDS, *IGNORED_MEPHISTO_KEYS]
        close = difflib.get_close_matches(parts[1], kinds, n=1)
        hint = f"; did you mean 'mephisto.{close[0]}'?" if close else f"; known: mephisto.{{{','.join(kinds)}}}"
    elif len(parts) == 3:
        kind, dest = parts[1], parts[2]
        if kind not in chosen:
            close_kind = difflib.get_close_matches(kind, list(chosen), n=1)
            kind = close_kind[0] if close_kind else kind
        suggestion = _suggest_key(kind, dest, chosen)
        if suggestion is not None:
            hint = f"; did you mean '{suggestion}'?"
        elif kind in chosen:
            hint = _other_section_hint(kind, dest, chosen[kind])
    return ConfigError(f"unknown key '{key}'{hint} ({where})")


def _suggest_key(kind: str, dest: str, chosen: Mapping[str, Section]) -> str | None:
    """The same argument in another section (a misplaced key), else the closest one in this section."""
    for other_kind, section in chosen.items():
        if other_kind != kind and dest in section.dests:
            return f"mephisto.{other_kind}.{dest}"
    if kind in chosen:
        close = difflib.get_close_matches(dest, chosen[kind].dests, n=1)
        if close:
            return f"mephisto.{kind}.{close[0]}"
    return None


def _other_section_hint(kind: str, dest: str, section: Section) -> str:
    owners = [other.name for other in sections(kind) if other.name != section.name and dest in other.dests]
    if owners:
        return f"; '{dest}' is an argument of {kind} '{owners[0]}', not '{section.name}'"
    return f"; {kind} '{section.name}' takes: {', '.join(section.dests)}"


def _section_values(section: Section, given: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for argument in section.arguments:
        key = f"mephisto.{section.kind}.{argument.dest}"
        raw = given.get(argument.dest)
        if raw is None or raw == _MISSING_TEXT:
            if argument.default is MISSING:
                raise ConfigError(f"missing required argument '{key}': {argument.help}")
            values[argument.dest] = argument.default
        else:
            values[argument.dest] = coerce(argument, raw, key)
    return values


def coerce(argument: Argument, value: Any, key: str) -> Any:
    """``value`` as ``argument.type``, checked against its choices and minimum; ConfigError if it isn't."""
    converted = _convert(argument.type, value)
    if converted is None:
        raise ConfigError(f"invalid value for '{key}': {value!r} (expected {argument.type.__name__})")
    if argument.choices is not None and converted not in argument.choices:
        options = ", ".join(str(choice) for choice in argument.choices)
        raise ConfigError(f"invalid value for '{key}': {value!r} (expected one of: {options})")
    if argument.minimum is not None and converted < argument.minimum:
        bound = int(argument.minimum) if float(argument.minimum).is_integer() else argument.minimum
        raise ConfigError(
            f"invalid value for '{key}': {value!r} (expected {argument.type.__name__} >= {bound})"
        )
    return converted


def _convert(kind: type, value: Any) -> Any:
    """The conversion OmegaConf's typed nodes allow, or ``None`` when there is none."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower() if isinstance(value, str | int) else None
        return True if text in _TRUE else False if text in _FALSE else None
    if kind is list:
        return value if isinstance(value, list) else None
    if isinstance(value, bool | dict | list):
        return None
    if kind is int:
        if isinstance(value, int):
            return value
        if isinstance(value, str) and INT_RE.fullmatch(value.strip()):
            return int(value)
        return None
    if kind is float:
        try:
            number = float(value) if isinstance(value, int | float | str) else None
        except ValueError:
            return None
        return number if number is not None and math.isfinite(number) else None
    if kind is str:
        return value if isinstance(value, str) else str(value) if isinstance(value, int | float) else None
    raise TypeError(f"unsupported argument type {kind!r}")


def kind_of(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"{type(value).__name__} {value!r}"
