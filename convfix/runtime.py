"""What convfix is doing right now: the active config and overrides.

Kept apart from the pipeline so that the hot path reads a few plain attributes and
nothing else; importing this module is cheap (no TensorFlow).
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator, Mapping

from convfix.config import Config, apply_overrides


class Flags:
    """Plain attributes the hot path reads: one lookup each, no locking needed."""

    __slots__ = ("active", "budget", "fast", "overrides")

    def __init__(self) -> None:
        self.active = False  # a config is loaded and its mode is not "off"
        self.overrides = 0  # blocks inside convfix.override(...) anywhere in the process
        # A memory budget (split_batch.max_batch_bytes) is in force somewhere: every call
        # needs its bytes estimated, so every call takes the full path.
        self.budget = False
        # active, no override block anywhere and no budget: the one attribute the express
        # lane reads before its check (see checking() for everything else).
        self.fast = False

    def refresh(self) -> None:
        self.fast = self.active and not self.overrides and not self.budget


flags = Flags()
_config: Config | None = None
_override: contextvars.ContextVar[Config | None] = contextvars.ContextVar(
    "convfix_override", default=None
)
_lock = threading.Lock()
_budgets = 0  # configs in force (process-wide or in an override block) with a budget


def has_budget(config: Config) -> bool:
    """Whether ``config`` splits calls over a byte budget before dispatch."""
    return (
        config.policies.split_batch.max_batch_bytes is not None
        and config.policy_mode("split_batch") != "off"
    )


def _count_budget(change: int) -> None:
    global _budgets
    with _lock:
        _budgets += change
        flags.budget = _budgets > 0
        flags.refresh()


def set_config(config: Config) -> None:
    """Make ``config`` the process-wide configuration."""
    global _config
    before = _config is not None and has_budget(_config)
    _config = config
    with _lock:
        flags.active = config.mode != "off"
        flags.refresh()
    _count_budget(int(has_budget(config)) - int(before))


def stop() -> None:
    """Stop intervening process-wide (unpatch): the config stays for a later patch()."""
    with _lock:
        flags.active = False
        flags.refresh()


def config() -> Config:
    """The configuration in force for the current thread or task."""
    overridden = _override.get() if flags.overrides else None
    if overridden is not None:
        return overridden
    return _config if _config is not None else Config()


def enabled() -> bool:
    """Should a call made now go through convfix at all?"""
    if flags.overrides:
        return config().mode != "off"
    return flags.active


def checking() -> bool:
    """May a call made now take the fast check, when ``flags.fast`` is down? Yes where
    convfix is on for this thread or task and no byte budget needs every call seen."""
    return not flags.budget and enabled()


@contextlib.contextmanager
def override(
    mode: str | None = None,
    policies: Mapping[str, str | Mapping[str, object]] | None = None,
) -> Iterator[Config]:
    """Change convfix's behaviour for the code inside the block (this thread or task only).

    ``mode`` sets the top-level mode; ``policies`` maps a policy name to a mode
    (``{"dtype": "strict"}``) or to its keys (``{"dtype": {"target": "input"}}``).
    Validated like a config file: a bad value raises ConfigError before the block runs.
    Inside tf.function the override in force at trace time is baked into the graph.
    """
    new = apply_overrides(config(), mode=mode, policies=policies)
    budget = int(has_budget(new))
    token = _override.set(new)
    with _lock:
        flags.overrides += 1
        flags.refresh()
    _count_budget(budget)
    try:
        yield new
    finally:
        _override.reset(token)
        with _lock:
            flags.overrides -= 1
            flags.refresh()
        _count_budget(-budget)
