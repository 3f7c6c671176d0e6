"""Reading a Mephisto task folder's ``hydra_configs/conf/NAME.yaml`` into a :class:`TaskConfig`.

Only the part of Hydra that Mephisto task folders use is understood: a ``defaults`` list choosing
``/mephisto/blueprint``, ``/mephisto/architect`` and ``/mephisto/provider`` (plus ``_self_``), the
``mephisto:`` node, OmegaConf interpolations (``${task_dir}`` is the absolute task folder), and
command-line overrides (``mephisto.task.max_num_concurrent_units=50``, ``mephisto/architect=mock``,
``+key=value``). Other top-level keys (``hydra:``, a script's own keys) are kept for interpolation and
otherwise ignored. Every problem is a one-line :class:`ConfigError`.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mephisto_dist.config.arguments import (
    ARCHITECT,
    BLUEPRINT,
    CHOICE_KINDS,
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

CONF_SUBDIR: Final = Path("hydra_configs") / "conf"
_IGNORED_MEPHISTO_KEYS: Final = ("database", "log_level")
"""Fields of Mephisto's ``MephistoConfig`` that mean nothing here (one database, our own logging)."""
_MISSING_TEXT: Final = "???"
_TRUE: Final = frozenset({"true", "yes", "on", "1"})
_FALSE: Final = frozenset({"false", "no", "off", "0"})
_INT_RE: Final = re.compile(r"[+-]?\d+")
_FLOAT_RE: Final = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")


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
            raise ConfigError(f"a stored task config must be a mapping, found {_kind_of(data)}")
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
                chosen[kind] = _section_for(kind, _Choice(name, where))
            values[kind] = dict(given)
        return _build(Path(data["task_dir"]), data["conf_name"], chosen, values, where)


def load_task_config(
    task_dir: str | Path, conf: str = "example", overrides: Sequence[str] = ()
) -> TaskConfig:
    """Load ``TASK_DIR/hydra_configs/conf/CONF.yaml`` with command-line style ``overrides`` applied."""
    return load_script_config(task_dir, conf, overrides)[0]


def load_script_config(
    task_dir: str | Path, conf: str = "example", overrides: Sequence[str] = (), *,
    base: Mapping[str, Any] | None = None, config_path: str = str(CONF_SUBDIR.parent),
) -> tuple[TaskConfig, dict[str, Any]]:
    """The task config and the whole resolved config a task script receives as ``cfg``.

    ``base`` holds a script's own top-level keys with their defaults (a config dataclass's fields, and
    Mephisto's ``num_tasks``); the YAML file wins over them, and overrides over both, as in Hydra. A
    top-level key neither defines can only be added with ``+key=value``.
    """
    folder = Path(task_dir).expanduser().resolve()
    if not folder.is_dir():
        raise ConfigError(f"task folder not found: {folder}")
    conf_name = conf.removesuffix(".yaml")
    path = _conf_path(folder, conf_name, Path(config_path) / "conf")
    where = f"in {path}"
    root, choices = _composed(path, path.parent)
    if base:
        merged = OmegaConf.merge(OmegaConf.create(dict(base)), root)
        assert isinstance(merged, DictConfig)
        root = merged
    parsed = [_parse_override(text) for text in overrides]
    for override in parsed:
        if override.is_group and override.kind is not None:
            choices[override.kind] = _Choice(str(override.value), f"from override '{override.text}'")
    chosen = _choose_sections(choices, path)
    root["task_dir"] = str(folder)
    for override in parsed:
        if not override.is_group:
            _apply_override(root, override, chosen)
    values = _resolve_mephisto(root, path)
    config = _build(folder, conf_name, chosen, values, where)
    return config, _script_root(root, config, path)


def _script_root(root: DictConfig, config: TaskConfig, path: Path) -> dict[str, Any]:
    """Every top-level key resolved, with the ``mephisto`` node in Mephisto's full shape."""
    others = {str(key): root[key] for key in root if key not in ("mephisto", "hydra")}
    try:
        resolved = OmegaConf.to_container(OmegaConf.create(others), resolve=True) if others else {}
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or "?"
        raise ConfigError(f"{path}: cannot resolve '{key}': {_first_line(error)}") from None
    assert isinstance(resolved, dict)
    mephisto = {kind: value for kind, value in config.as_dict().items() if kind in KINDS}
    return {**resolved, "mephisto": {**mephisto, "database": {"_database_type": "singleton"},
                                     "log_level": "info"}}


# -- the file ----------------------------------------------------------------------------------------


def _conf_path(folder: Path, conf_name: str, conf_subdir: Path = CONF_SUBDIR) -> Path:
    conf_dir = folder / conf_subdir
    path = conf_dir / f"{conf_name}.yaml"
    if path.is_file():
        return path
    found = sorted(p.relative_to(conf_dir).with_suffix("").as_posix() for p in conf_dir.rglob("*.yaml"))
    available = ", ".join(found) or "none"
    raise ConfigError(f"config '{conf_name}' not found: expected {path} (available: {available})")


def _read_yaml(path: Path) -> DictConfig:
    try:
        loaded = OmegaConf.load(path)
    except yaml.MarkedYAMLError as error:
        line = f" line {error.problem_mark.line + 1}" if error.problem_mark is not None else ""
        problem = error.problem or error.context or "cannot parse"
        raise ConfigError(f"{path}{line}: invalid YAML ({problem})") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML ({_first_line(error)})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read {path}: {_first_line(error)}") from None
    except OmegaConfBaseException as error:
        raise ConfigError(f"{path}: {_first_line(error)}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: expected a mapping at the top level, found a list")
    return loaded


@dataclass(frozen=True)
class _Choice:
    name: str
    where: str


def _composed(path: Path, conf_dir: Path, seen: tuple[Path, ...] = ()) -> tuple[DictConfig, dict[str, _Choice]]:
    """The config file with the configs its defaults list names from the same folder (``- base``, as
    Mephisto's parlai_chat_task_demo has) merged under it, as Hydra composes them (the file itself last)."""
    if path in seen:
        raise ConfigError(f"{path}: its defaults list includes itself ({' -> '.join(p.name for p in seen)})")
    root = _read_yaml(path)
    bases: list[str] = []
    own = _defaults_choices(root, path, bases)
    merged: DictConfig = OmegaConf.create({})
    choices: dict[str, _Choice] = {}
    for name in bases:
        base_path = conf_dir / f"{name.removesuffix('.yaml')}.yaml"
        if not base_path.is_file():
            raise ConfigError(f"{path}: defaults entry '{name}' names no config in {conf_dir}")
        base_root, base_choices = _composed(base_path, conf_dir, (*seen, path))
        combined = OmegaConf.merge(merged, base_root)
        assert isinstance(combined, DictConfig)
        merged = combined
        choices.update(base_choices)
    combined = OmegaConf.merge(merged, root)
    assert isinstance(combined, DictConfig)
    return combined, {**choices, **own}


def _defaults_choices(root: DictConfig, path: Path, bases: list[str] | None = None) -> dict[str, _Choice]:
    """Read and remove the ``defaults`` list: which blueprint, architect and provider to use; the names of
    other configs of the same folder it includes are appended to ``bases``."""
    if "defaults" not in root:
        return {}
    entries = OmegaConf.to_container(root["defaults"], resolve=False)
    del root["defaults"]
    if entries is None:
        return {}
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: 'defaults' must be a list")
    choices: dict[str, _Choice] = {}
    for entry in entries:
        if entry == "_self_":
            continue
        if isinstance(entry, str) and bases is not None and "/" not in entry and ":" not in entry:
            bases.append(entry)
            continue
        if not (isinstance(entry, dict) and len(entry) == 1):
            raise ConfigError(
                f"{path}: defaults entry {entry!r} is not supported; "
                "use '/mephisto/blueprint: NAME', '/mephisto/architect: NAME', '/mephisto/provider: NAME'"
            )
        ((group, name),) = entry.items()
        kind = _group_kind(str(group), f"in {path}")
        if kind is not None and name is not None:
            choices[kind] = _Choice(str(name), f"in {path}")
    return choices


def _group_kind(group: str, where: str) -> str | None:
    """``/mephisto/architect`` -> ``architect``; ``None`` for Hydra's own groups, which are ignored."""
    group = group.removeprefix("override ").strip().lstrip("/")
    if group.startswith("hydra/"):
        return None
    kind = group.removeprefix("mephisto/")
    if group.startswith("mephisto/") and kind in CHOICE_KINDS:
        return kind
    known = ", ".join(f"mephisto/{kind}" for kind in CHOICE_KINDS)
    raise ConfigError(f"unknown config group '{group}'; known: {known} ({where})")


def _choose_sections(choices: Mapping[str, _Choice], path: Path) -> dict[str, Section]:
    chosen = {TASK: TASK_RUN}
    for kind in CHOICE_KINDS:
        choice = choices.get(kind)
        if choice is None:
            example = sections(kind)[0].name
            raise ConfigError(
                f"no {kind} chosen: add '/mephisto/{kind}: {example}' to the defaults list of {path} "
                f"or override 'mephisto/{kind}={example}'"
            )
        chosen[kind] = _section_for(kind, choice)
    return chosen


def _section_for(kind: str, choice: _Choice) -> Section:
    try:
        return get_section(kind, choice.name)
    except ConfigError as error:
        raise ConfigError(f"{error} ({choice.where})") from None


# -- overrides ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Override:
    text: str
    key: str
    value: Any
    is_group: bool  # ``group/name=choice`` rather than ``dotted.key=value``
    kind: str | None  # for ``mephisto/<kind>=NAME``; None for Hydra's own groups (ignored)
    add: bool = False  # ``+key=value``: the key may be new


def _parse_override(text: str) -> _Override:
    stripped = text.strip()
    if stripped.startswith("~"):
        raise ConfigError(f"override '{text}': removing keys is not supported")
    key, equals, raw_value = stripped.partition("=")
    add = key.strip().startswith("+")
    key = key.strip().lstrip("+")
    if not equals or not key:
        raise ConfigError(
            f"malformed override '{text}': expected key=value, e.g. mephisto.task.max_num_concurrent_units=50"
        )
    value = _parse_value(raw_value.strip())
    if "/" in key:
        return _Override(text, key, value, True, _group_kind(key, f"from override '{text}'"), add)
    return _Override(text, key, value, False, None, add)


def _parse_value(text: str) -> Any:
    """A command-line value as Hydra reads it: quoted text, true/false, null, numbers, else text."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    if _INT_RE.fullmatch(text):
        return int(text)
    if _FLOAT_RE.fullmatch(text):
        return float(text)
    if text[:1] in "[{":
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return text
    return text


def _apply_override(root: DictConfig, override: _Override, chosen: Mapping[str, Section]) -> None:
    key = override.key
    where = f"from override '{override.text}'"
    if key == "hydra" or key.startswith("hydra."):
        return
    if key == "task_dir":
        raise ConfigError(f"override '{override.text}': task_dir is the task folder itself; pass another folder")
    if key == "mephisto" or key.startswith("mephisto."):
        parts = key.split(".")
        if len(parts) == 2 and parts[1] in chosen:
            raise ConfigError(
                f"override '{override.text}' must set one argument: mephisto.{parts[1]}.NAME=VALUE"
            )
        if len(parts) < 2 or parts[1] not in _IGNORED_MEPHISTO_KEYS:
            known = len(parts) == 3 and parts[1] in chosen and parts[2] in chosen[parts[1]].dests
            if not known:
                raise _unknown_key(key, chosen, where)
    elif not override.add and not _has_key(root, key):
        # A key of the task's own config (Mephisto scripts add top-level ones) may be overridden, and
        # Hydra's +key=value adds one; any other is most likely a mephisto key without its prefix, which
        # would be silently ignored.
        raise _unknown_top_level_key(key, chosen, where, override.text.strip())
    try:
        OmegaConf.update(root, key, override.value, merge=True, force_add=True)
    except OmegaConfBaseException as error:
        raise ConfigError(f"cannot apply override '{override.text}': {_first_line(error)}") from None


def _unknown_top_level_key(key: str, chosen: Mapping[str, Section], where: str, text: str) -> ConfigError:
    name = key.split(".")[-1]
    dotted = {f"mephisto.{kind}.{dest}": dest for kind, section in chosen.items() for dest in section.dests}
    exact = [full for full, dest in dotted.items() if dest == name]
    close = exact or [full for dest in difflib.get_close_matches(name, list(dotted.values()), n=1)
                      for full, same in dotted.items() if same == dest]
    hint = (f"; did you mean '{close[0]}'?" if close else
            f"; task arguments are set as mephisto.KIND.NAME=VALUE, and +{text} adds a key of your own")
    return ConfigError(f"unknown key '{key}'{hint} ({where})")


# -- resolving and building --------------------------------------------------------------------------


def _resolve_mephisto(root: DictConfig, path: Path) -> dict[str, Any]:
    if "mephisto" not in root:
        return {}
    try:
        node = root["mephisto"]
        values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig | ListConfig) else node
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or "mephisto"
        raise ConfigError(f"{path}: cannot resolve '{key}': {_first_line(error)}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: 'mephisto' must be a mapping, found {_kind_of(values)}")
    return {str(key): value for key, value in values.items()}


def _build(
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
        if kind in _IGNORED_MEPHISTO_KEYS:
            continue
        if kind not in chosen:
            raise _unknown_key(f"mephisto.{kind}", chosen, where)
        if given is None:
            continue
        if not isinstance(given, Mapping):
            raise ConfigError(f"'mephisto.{kind}' must be a mapping of arguments, found {_kind_of(given)} ({where})")
        section = chosen[kind]
        for dest in given:
            if dest == f"_{kind}_type":
                if given[dest] != section.name:
                    raise ConfigError(
                        f"'mephisto.{kind}.{dest}' is '{given[dest]}' but the defaults choose "
                        f"'{section.name}' ({where})"
                    )
            elif dest not in section.dests:
                raise _unknown_key(f"mephisto.{kind}.{dest}", chosen, where)


def _unknown_key(key: str, chosen: Mapping[str, Section], where: str) -> ConfigError:
    """An unknown-key error with the closest known key, or the section the key belongs to."""
    parts = key.split(".")
    hint = ""
    if len(parts) == 2:
        kinds = [*KINDS, *_IGNORED_MEPHISTO_KEYS]
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
        if isinstance(value, str) and _INT_RE.fullmatch(value.strip()):
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


def _has_key(root: DictConfig, dotted: str) -> bool:
    node: Any = root
    for part in dotted.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return False
        node = node._get_node(part)
    return True


def _kind_of(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
