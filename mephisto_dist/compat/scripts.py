"""``mephisto.tools.scripts``: the ``task_script`` decorator and ``build_custom_bundle``."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from mephisto_dist.compat import bundle
from mephisto_dist.compat.operator import Operator
from mephisto_dist.compat.session import ScriptSession, current
from mephisto_dist.config.loader import load_script_config
from mephisto_dist.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_NUM_TASKS = 5
_RESERVED_FIELDS = frozenset({"mephisto", "defaults", "task_dir"})


def task_script(config: type | None = None, default_config_file: str | None = None,
                config_path: str = "hydra_configs") -> Callable[[F], F]:
    """Mephisto's decorator for a script's ``main(operator, cfg)``: the result takes no arguments and
    runs ``main`` with the task config (``conf=NAME`` on the command line picks another file)."""
    if config is None and default_config_file is None:
        raise ConfigError("task_script needs config=<a TaskConfig dataclass> or default_config_file=NAME")

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def main(*args: Any, **kwargs: Any) -> Any:
            session = current()
            cfg = script_config(session, config, default_config_file, config_path)
            return func(Operator(session=session), cfg)

        return main  # type: ignore[return-value]

    return decorate


def script_config(session: ScriptSession, config: type | None, default_config_file: str | None,
                  config_path: str) -> DictConfig:
    if session.stored_cfg is not None:
        cfg = OmegaConf.create(session.stored_cfg)
        assert isinstance(cfg, DictConfig)
        return cfg
    conf, base = _conf_and_base(config, default_config_file)
    chosen = session.ref.conf or conf
    if chosen is None:
        raise ConfigError(f"{session.ref.name}: its config class names no conf file; pass conf=NAME")
    _, root = load_script_config(session.ref.task_dir, chosen, session.ref.overrides, base=base,
                                 config_path=config_path)
    session.cfg = root
    cfg = OmegaConf.create(root)
    assert isinstance(cfg, DictConfig)
    return cfg


def _conf_and_base(config: type | None, default_config_file: str | None) -> tuple[str | None, dict[str, Any]]:
    base: dict[str, Any] = {"num_tasks": DEFAULT_NUM_TASKS}
    conf = default_config_file
    if config is None or not dataclasses.is_dataclass(config):
        return conf, base
    for item in dataclasses.fields(config):
        if item.default is not dataclasses.MISSING:
            value = item.default
        elif item.default_factory is not dataclasses.MISSING:
            value = item.default_factory()
        else:
            continue
        if item.name == "defaults" and isinstance(value, list):
            conf = next((entry["conf"] for entry in value if isinstance(entry, dict) and "conf" in entry), conf)
        elif item.name not in _RESERVED_FIELDS:
            base[item.name] = value
    return conf, base


def build_custom_bundle(custom_src_dir: str, force_rebuild: bool | None = None,
                        post_install_script: str | None = None) -> str:
    """Build ``custom_src_dir/webapp`` when its bundle is older than its sources; return the bundle's path.
    While only capturing callbacks nothing is built: the launching process built it."""
    session = current()
    if session.host.capturing:
        return str(bundle.bundle_path(custom_src_dir))
    log_dir = session.host.log_dir or Path(custom_src_dir)
    built = bundle.build_bundle(custom_src_dir, force_rebuild=bool(force_rebuild),
                                post_install_script=post_install_script or None,
                                log_path=log_dir / "webapp-build.log", say=session.host.say)
    return str(built)
