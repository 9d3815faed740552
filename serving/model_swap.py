"""Serving follows the registry: a watcher polls the alias, loads a new version in the background, swaps it in
atomically and drains the old one.

    slot = ModelSlot()                                  # in-flight inference per loaded model
    watcher = AliasWatcher("models:/rrg@champion", load=..., swap=service.swap_model, poll_s=30)
    await watcher.start(current_version="rrg/3")        # a background task; watcher.stop() ends it

Atomicity: a request reads the served model once, when it starts, and keeps that model for its whole life
(decoding size, the batch it joins, thresholds, the version it reports); the swap is one assignment on the event
loop, so every request is answered entirely by the old model or entirely by the new one. Draining: the batch
function runs each item on the model the item was submitted with, and `ModelSlot` counts those items per model;
the old model is released (its backend closed when it has `close()`) only when its count reaches zero, or after
`drain_timeout_s` with a warning (the requests still hold their reference, so they finish either way).
Loading happens in a worker thread; a version that fails to load is logged and retried at the next poll, and
the served model stays as it was (the service never serves nothing because the registry moved).

The rollout arms follow the registry too (`follow_arms`, for a `models:/NAME@champion` source): the version that
holds NAME's `shadow` alias is mirrored off the response path, the one that holds `ab` answers the A/B share, and
an alias that goes away stops its arm (`rrg rollout shadow|ab|withdraw|promote` move them).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("serving")

_ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[A-Za-z0-9_.-]+)$")


class ModelSlot:
    """How many inference items each loaded model has in flight; `drain(model)` waits for zero."""

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self._zero = threading.Condition()

    def hold(self, model: Any) -> None:
        with self._zero:
            self._counts[id(model)] = self._counts.get(id(model), 0) + 1

    def release(self, model: Any) -> None:
        with self._zero:
            left = self._counts.get(id(model), 0) - 1
            if left > 0:
                self._counts[id(model)] = left
            else:
                self._counts.pop(id(model), None)
                self._zero.notify_all()

    def in_flight(self, model: Any) -> int:
        with self._zero:
            return self._counts.get(id(model), 0)

    def drain(self, model: Any, timeout_s: float) -> bool:
        """Block until `model` has nothing in flight (True) or `timeout_s` passed (False). Call off the loop."""
        with self._zero:
            return self._zero.wait_for(lambda: id(model) not in self._counts, timeout=timeout_s)


def registry_alias(uri: str) -> tuple[str, str]:
    """(NAME, ALIAS) of `models:/NAME@ALIAS`; ValueError for anything else (a path or a pinned version has
    nothing to follow)."""
    match = _ALIAS_URI.match(uri)
    if not match:
        raise ValueError("only a models:/NAME@ALIAS source can be followed (a path or NAME/VERSION is fixed)")
    return match["name"], match["alias"]


def mlflow_alias_resolver(uri: str) -> Callable[[], str]:
    """A resolver of the alias's current version number in the MLflow registry at $MLFLOW_TRACKING_URI."""
    import mlflow  # lazy: mlflow only for registry sources (the Triton environment has none)

    name, alias = registry_alias(uri)

    def resolve() -> str:
        return str(mlflow.MlflowClient().get_model_version_by_alias(name, alias).version)

    return resolve


class _Poller:
    """A background task that calls `check()` every `poll_s` seconds until `stop()`."""

    task_name = "rrg-poller"

    def __init__(self, poll_s: float):
        if poll_s <= 0:
            raise ValueError(f"poll_s must be > 0, got {poll_s}")
        self.poll_s = poll_s
        self.last_error: str | None = None
        self._task: asyncio.Task | None = None

    async def check(self):
        raise NotImplementedError

    def _start_task(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.task_name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            await self.check()


class AliasWatcher(_Poller):
    """Polls `resolve()` every `poll_s`; when the version changes, `load(version)` runs in a worker thread and
    `swap(new_model)` (the service's) puts it in service. Failures keep the current model, logged, retried."""

    task_name = "rrg-alias-watcher"

    def __init__(self, resolve: Callable[[], str], load: Callable[[str], Any],
                 swap: Callable[[Any], Awaitable[None]], poll_s: float):
        super().__init__(poll_s)
        self.resolve, self.load, self.swap = resolve, load, swap
        self.version: str | None = None
        self.swaps = 0

    async def start(self, current_version: str | None = None) -> None:
        self.version = current_version
        self._start_task()

    async def check(self) -> bool:
        """One poll: True when a new version was loaded and swapped in."""
        try:
            version = await asyncio.to_thread(self.resolve)
        except Exception as exc:  # noqa: BLE001 — a registry outage must not stop serving; logged, retried
            self.last_error = f"registry unreachable ({type(exc).__name__})"
            log.warning("model watcher: %s; keeping the served model", self.last_error)
            return False
        if version == self.version:
            return False
        try:
            model = await asyncio.to_thread(self.load, version)
        except Exception as exc:  # noqa: BLE001 — a version that cannot load must not replace a working one
            self.last_error = f"version {version} failed to load ({type(exc).__name__}: {exc})"
            log.error("model watcher: %s; keeping the served model", self.last_error)
            return False
        await self.swap(model)
        log.info("model watcher: now serving version %s (was %s)", version, self.version)
        self.version, self.last_error = version, None
        self.swaps += 1
        return True


async def follow_alias(source: str, load: Callable[[str], Any], swap: Callable[[Any], Awaitable[None]],
                       current_version: str, poll_s: float) -> AliasWatcher | None:
    """Start following a `models:/NAME@ALIAS` source (None for a fixed one: a directory or NAME/VERSION).
    load(uri) gets `models:/NAME/N`; current_version is the served model's (`NAME/N` or `N`)."""
    try:
        name, _ = registry_alias(str(source))
    except ValueError:
        return None
    watcher = AliasWatcher(mlflow_alias_resolver(str(source)), lambda version: load(f"models:/{name}/{version}"),
                           swap, poll_s)
    await watcher.start(current_version=str(current_version).rsplit("/", 1)[-1])
    return watcher


# --------------------------------------------------------------------------- the rollout arms follow the registry

SHADOW, AB = "shadow", "ab"          # the registry's rollout aliases (registry.models; serving does not import it)


def mlflow_aliases(name: str) -> Callable[[], dict[str, str]]:
    """{alias: version} of registered model `name` in the MLflow registry at $MLFLOW_TRACKING_URI (one call)."""
    import mlflow  # lazy, as above

    def aliases() -> dict[str, str]:
        held = mlflow.MlflowClient().get_registered_model(name).aliases
        return {alias: str(version) for alias, version in held.items()}

    return aliases


class ArmsFollower(_Poller):
    """Serving follows the rollout: polls the registry's `shadow` and `ab` aliases of the served name; a version
    that takes one is loaded in a worker thread (its signed gate decision verified, as for any served version)
    and started as the shadow mirror (`start_shadow`) or the A/B challenger (`start_ab`) with the rollout config's
    share and salt; an alias that goes away stops its arm. A version that fails to load, or a registry outage,
    leaves the arms as they are (logged, retried at the next poll): the served model is never affected.

    arms: the service (`serving.rollout_arms.RolloutArms`: start_shadow, stop_shadow, start_ab, stop_ab)."""

    task_name = "rrg-rollout-arms"

    def __init__(self, aliases: Callable[[], dict[str, str]], load: Callable[[str], Any], arms: Any,
                 shadow_share: float, ab_share: float, salt: str, poll_s: float):
        super().__init__(poll_s)
        self.aliases, self.load = aliases, load
        self.plan = {SHADOW: (arms.start_shadow, arms.stop_shadow, shadow_share),
                     AB: (arms.start_ab, arms.stop_ab, ab_share)}
        self.salt = salt
        self.versions: dict[str, str | None] = {SHADOW: None, AB: None}

    async def start(self) -> None:
        await self.check()                   # the arms the registry holds now, before the first poll interval
        self._start_task()

    async def check(self) -> list[str]:
        """One poll: the changes made, e.g. ["shadow 8 started", "ab stopped"]."""
        try:
            held = await asyncio.to_thread(self.aliases)
        except Exception as exc:  # noqa: BLE001 — a registry outage must not touch serving; logged, retried
            self.last_error = f"registry unreachable ({type(exc).__name__})"
            log.warning("rollout follower: %s; keeping the rollout arms as they are", self.last_error)
            return []
        changes = []
        for alias, (start, stop, share) in self.plan.items():
            wanted = held.get(alias)
            if wanted == self.versions[alias]:
                continue
            if wanted is None:
                await stop()
                self.versions[alias] = None
                changes.append(f"{alias} stopped")
                continue
            try:
                model = await asyncio.to_thread(self.load, wanted)
            except Exception as exc:  # noqa: BLE001 — a version that cannot load starts no arm; retried
                self.last_error = f"{alias} version {wanted} failed to load ({type(exc).__name__}: {exc})"
                log.error("rollout follower: %s; the %s arm stays as it was", self.last_error, alias)
                continue
            await start(model, share, self.salt)   # releases the arm's previous version first
            self.versions[alias] = wanted
            changes.append(f"{alias} {wanted} started")
            log.info("rollout follower: version %s is now the %s arm", wanted, alias)
        if changes:
            self.last_error = None
        return changes


async def follow_arms(source: str, load: Callable[[str], Any], arms: Any, shadow_share: float, ab_share: float,
                      salt: str, poll_s: float, aliases: Callable[[], dict[str, str]] | None = None
                      ) -> ArmsFollower | None:
    """Start following the `shadow` / `ab` aliases when `source` is `models:/NAME@champion` (None otherwise:
    a directory, a pinned version or another alias has no rollout arms). load(uri) gets `models:/NAME/N`."""
    try:
        name, alias = registry_alias(str(source))
    except ValueError:
        return None
    if alias != "champion":
        return None
    follower = ArmsFollower(aliases or mlflow_aliases(name), lambda version: load(f"models:/{name}/{version}"),
                            arms, shadow_share, ab_share, salt, poll_s)
    await follower.start()
    return follower
