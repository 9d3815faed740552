"""The report service's rollout arms (a mixin of `serving.service.ReportService`, kept apart so the service stays
readable): which model answers a study (A/B routing), the shadow mirror, and the hot swap.

- A/B: `route(study_id)` sends the sticky share of studies (model_core.evaluation.comparison.ab_arm: hash of the
  study UID and the experiment salt) to the challenger; its records are logged with role `challenger`.
- Shadow: `start_shadow` mirrors a share of studies to another model off the response path (serving.shadow).
- Hot swap: `swap_model` puts a new version in service in one assignment on the event loop and drains the old one
  (serving.model_swap).
Every change is audited. The fields it uses (model, challenger, ab_share, ab_salt, shadow, slot, identities,
writer, audit, metrics, config) are the service's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from model_core.evaluation.comparison import ab_arm
from serving.backends import LoadedModel
from serving.prediction_logging import ModelIdentity, model_identity
from serving.shadow import ShadowRunner

log = logging.getLogger("serving")


class RolloutArms:
    """Routing, shadow and hot swap for the report service (see the module docstring)."""

    def route(self, study_id: str) -> LoadedModel:
        """The model that answers this study: the A/B challenger for its sticky share, else the served model."""
        if self.challenger is not None and ab_arm(study_id, self.ab_salt, self.ab_share) == "challenger":
            return self.challenger
        return self.model

    def rollout_state(self) -> str:
        """What /readyz says of the rollout: the served model alone, or the A/B challenger and shadow with their
        versions and shares (no study identifiers)."""
        parts = []
        if self.challenger is not None:
            parts.append(f"A/B: challenger {self.challenger.version} answers {self.ab_share:.0%} of studies")
        if self.shadow is not None:
            stats = self.shadow.stats
            parts.append(f"shadow: {self.shadow.model.version} mirrors {self.shadow.share:.0%} of studies "
                         f"({stats.written} drafted, {stats.dropped} dropped, {stats.failed} failed)")
        return "; ".join(parts) or "served model only"

    async def start_ab(self, challenger: LoadedModel, share: float, salt: str) -> None:
        """Route `share` of studies (sticky: hash of study UID and salt) to the challenger; logged as role
        challenger. A running challenger is drained and released first (as `start_shadow` stops a running shadow).
        Audited."""
        await self.stop_ab()
        base = await asyncio.to_thread(model_identity, challenger)
        self.identities[id(challenger)] = ModelIdentity(base.name, base.version, "challenger")
        self.ab_share, self.ab_salt, self.challenger = share, salt, challenger
        if self.audit is not None:
            self.audit.record("rollout.ab.start", "rollout", None, 200, challenger.version,
                              detail={"share": share, "salt": salt})

    async def stop_ab(self) -> None:
        challenger, self.challenger = self.challenger, None
        if challenger is not None:
            await asyncio.to_thread(self.slot.drain, challenger, self.config.request_timeout_s)
            self.identities.pop(id(challenger), None)
            if self.audit is not None:
                self.audit.record("rollout.ab.stop", "rollout", None, 200, challenger.version)

    async def start_shadow(self, model: LoadedModel, share: float, salt: str) -> None:
        """Mirror `share` of studies to `model` off the response path (serving.shadow). Audited."""
        await self.stop_shadow()
        identity = await asyncio.to_thread(model_identity, model)
        self.shadow = ShadowRunner(model, share, salt, self.writer, identity)
        self.shadow.start()
        if self.audit is not None:
            self.audit.record("rollout.shadow.start", "rollout", None, 200, model.version,
                              detail={"share": share, "salt": salt})

    async def stop_shadow(self) -> None:
        shadow, self.shadow = self.shadow, None
        if shadow is not None:
            await asyncio.to_thread(shadow.stop)
            if self.audit is not None:
                self.audit.record("rollout.shadow.stop", "rollout", None, 200, shadow.model.version,
                                  detail=dataclasses.asdict(shadow.stats))

    async def swap_model(self, new: LoadedModel) -> None:
        """Serve `new` from now on — one assignment on the event loop, so each request is answered wholly by one
        model — and release the old model once its in-flight items are done (serving.model_swap). Audited."""
        identity = await asyncio.to_thread(model_identity, new)
        old, self.model = self.model, new
        self.identities[id(new)] = identity
        self.metrics.model_info.labels(old.version, old.backend.name).set(0)
        self.metrics.model_info.labels(new.version, new.backend.name).set(1)
        if self.audit is not None:
            self.audit.record("model.swap", "registry-watcher", None, 200, new.version,
                              detail={"previous_version": old.version})
        drained = await asyncio.to_thread(self.slot.drain, old, self.config.request_timeout_s)
        if not drained:
            log.warning("model %s still had %d item(s) in flight after %.0f s; released anyway (they keep it)",
                        old.version, self.slot.in_flight(old), self.config.request_timeout_s)
        close = getattr(old.backend, "close", None)
        if drained and callable(close):
            await asyncio.to_thread(close)
        self.identities.pop(id(old), None)

