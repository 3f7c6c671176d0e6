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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mephisto_dist.config.arguments import (
    CHOICE_KINDS,
    KINDS,
    TASK,
    TASK_RUN,
    Section,
    sections,
)
from mephisto_dist.config.task_config import (
    FLOAT_RE,
    IGNORED_MEPHISTO_KEYS,
    INT_RE,
    Choice,
    TaskConfig,
    build_task_config,
    kind_of,
    section_for,
    unknown_key,
)
from mephisto_dist.errors import ConfigError

CONF_SUBDIR: Final = Path("hydra_configs") / "conf"


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
            choices[override.kind] = Choice(str(override.value), f"from override '{override.text}'")
    chosen = _choose_sections(choices, path)
    root["task_dir"] = str(folder)
    for override in parsed:
        if not override.is_group:
            _apply_override(root, override, chosen)
    values = _resolve_mephisto(root, path)
    config = build_task_config(folder, conf_name, chosen, values, where)
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


def _composed(path: Path, conf_dir: Path, seen: tuple[Path, ...] = ()) -> tuple[DictConfig, dict[str, Choice]]:
    """The config file with the configs its defaults list names from the same folder (``- base``, as
    Mephisto's parlai_chat_task_demo has) merged under it, as Hydra composes them (the file itself last)."""
    if path in seen:
        raise ConfigError(f"{path}: its defaults list includes itself ({' -> '.join(p.name for p in seen)})")
    root = _read_yaml(path)
    bases: list[str] = []
    own = _defaults_choices(root, path, bases)
    merged: DictConfig = OmegaConf.create({})
    choices: dict[str, Choice] = {}
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


def _defaults_choices(root: DictConfig, path: Path, bases: list[str] | None = None) -> dict[str, Choice]:
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
    choices: dict[str, Choice] = {}
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
            choices[kind] = Choice(str(name), f"in {path}")
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


def _choose_sections(choices: Mapping[str, Choice], path: Path) -> dict[str, Section]:
    chosen = {TASK: TASK_RUN}
    for kind in CHOICE_KINDS:
        choice = choices.get(kind)
        if choice is None:
            example = sections(kind)[0].name
            raise ConfigError(
                f"no {kind} chosen: add '/mephisto/{kind}: {example}' to the defaults list of {path} "
                f"or override 'mephisto/{kind}={example}'"
            )
        chosen[kind] = section_for(kind, choice)
    return chosen


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
    if INT_RE.fullmatch(text):
        return int(text)
    if FLOAT_RE.fullmatch(text):
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
        if len(parts) < 2 or parts[1] not in IGNORED_MEPHISTO_KEYS:
            known = len(parts) == 3 and parts[1] in chosen and parts[2] in chosen[parts[1]].dests
            if not known:
                raise unknown_key(key, chosen, where)
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
        raise ConfigError(f"{path}: 'mephisto' must be a mapping, found {kind_of(values)}")
    return {str(key): value for key, value in values.items()}


def _has_key(root: DictConfig, dotted: str) -> bool:
    node: Any = root
    for part in dotted.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return False
        node = node._get_node(part)
    return True


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
