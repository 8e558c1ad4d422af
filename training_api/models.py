"""Model management: promotion (and so rollback), shadow candidates, the automatic decision.

Every change moves an alias in the registry, tags the version, writes an audit line and
announces `training.completed.{series_id}`, the event serving already follows to reload a
series within seconds. Registry calls are blocking and run in worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from anyio import to_thread

from core.catalog import Catalog
from core.contracts import TrainingEvent, utcnow
from core.errors import InvalidVersion, ModelNotFound, VersionConflict
from core.naming import PRODUCTION_ALIAS, SHADOW_ALIAS, model_name
from core.publisher import Publisher
from core.settings import Settings
from core.shadows import ShadowEvaluation, ShadowStore, decide
from core.topology import completed_key
from training_api.audit import AUTOMATIC, AuditLog
from training_api.model_schemas import Promotion, ShadowView
from training_api.registry import ModelRegistry

log = logging.getLogger(__name__)


class ModelManager:
    def __init__(self, settings: Settings, registry: ModelRegistry, catalog: Catalog,
                 shadows: ShadowStore, audit: AuditLog, publisher: Publisher) -> None:
        self.settings, self.registry, self.catalog = settings, registry, catalog
        self.shadows, self.audit, self.publisher = shadows, audit, publisher

    async def promote(self, series_id: str, version: int, actor: str, reason: str = "manual",
                      request_id: str | None = None) -> Promotion:
        """Move `production` to `version` (an older one is a rollback)."""
        target = await to_thread.run_sync(self.registry.version, series_id, version)
        aliases = await to_thread.run_sync(self.registry.aliases, series_id)
        previous, now = aliases.get(PRODUCTION_ALIAS), utcnow()
        changed = previous != version
        notified = False
        if changed:
            await to_thread.run_sync(self._move_production, series_id, target, aliases, actor,
                                     now.isoformat())
            if aliases.get(SHADOW_ALIAS) == version:
                await to_thread.run_sync(self.shadows.stop, series_id, "promoted",
                                         f"promoted by {actor}: {reason}")
            await to_thread.run_sync(lambda: self.audit.append(
                "promote", series_id, actor, model=model_name(series_id), version=version,
                previous_version=previous, reason=reason, request_id=request_id))
            notified = await self._announce(series_id, version, target.run_id)
        log.info("%s v%s promoted by %s (was v%s)", series_id, version, actor, previous)
        return Promotion(series_id=series_id, model=model_name(series_id), version=version,
                         previous_version=previous, changed=changed, promoted_by=actor,
                         promoted_at=now, serving_notified=notified)

    def _move_production(self, series_id: str, target: Any, aliases: dict[str, int],
                         actor: str, at: str) -> None:
        version = target.version
        self.registry.set_alias(series_id, PRODUCTION_ALIAS, version)
        if aliases.get(SHADOW_ALIAS) == version:
            self.registry.delete_alias(series_id, SHADOW_ALIAS)
        self.registry.set_tags(series_id, version, {"promoted_by": actor, "promoted_at": at})
        self.catalog.set_production(series_id, version, target.tags.get("algorithm"),
                                    target.tags.get("data_sha256"))

    async def start_shadow(self, series_id: str, version: int, actor: str,
                           request_id: str | None = None) -> ShadowView:
        """Mark `version` as the candidate serving scores beside production."""
        await to_thread.run_sync(self.registry.version, series_id, version)
        aliases = await to_thread.run_sync(self.registry.aliases, series_id)
        production = aliases.get(PRODUCTION_ALIAS)
        if production is None:
            raise ModelNotFound(
                f"{model_name(series_id)} has no production version to compare a shadow with;"
                " promote one first", details=[{"model": model_name(series_id)}])
        if production == version:
            raise VersionConflict(
                f"version {version} is in production; a shadow must be another version",
                details=[{"version": version, "production_version": production}])

        def mark() -> None:
            self.registry.set_alias(series_id, SHADOW_ALIAS, version)
            self.registry.set_tags(series_id, version,
                                   {"shadow_by": actor, "shadow_at": utcnow().isoformat()})
            self.shadows.start(series_id, version, production, actor)
            self.audit.append("shadow_start", series_id, actor, model=model_name(series_id),
                              version=version, production_version=production,
                              request_id=request_id)

        await to_thread.run_sync(mark)
        await self._announce(series_id, production, None)  # serving looks for the shadow now
        return await self.shadow_view(series_id)

    async def stop_shadow(self, series_id: str, actor: str, status: str = "stopped",
                          reason: str | None = None, evaluation: ShadowEvaluation | None = None
                          ) -> None:
        """End the evaluation and remove the `shadow` alias (production is not touched)."""
        aliases = await to_thread.run_sync(self.registry.aliases, series_id)
        shadow = aliases.get(SHADOW_ALIAS)

        def drop() -> None:
            if shadow is not None and (evaluation is None or evaluation.version == shadow):
                self.registry.delete_alias(series_id, SHADOW_ALIAS)
            if evaluation is not None:
                self.shadows.move(evaluation.id, "deciding", status, reason)
            elif (not self.shadows.stop(series_id, status, reason or f"stopped by {actor}")
                  and shadow is None):
                raise ModelNotFound(f"{model_name(series_id)} has no shadow version")
            self.audit.append(f"shadow_{status}", series_id, actor, model=model_name(series_id),
                              version=evaluation.version if evaluation else shadow,
                              reason=reason)

        await to_thread.run_sync(drop)
        await self._announce(series_id, aliases.get(PRODUCTION_ALIAS), None)

    async def shadow_view(self, series_id: str) -> ShadowView:
        row = await to_thread.run_sync(self.shadows.latest, series_id)
        if row is None:
            raise ModelNotFound(f"{model_name(series_id)} has never had a shadow version",
                                details=[{"model": model_name(series_id)}])
        return ShadowView.of(row, self.settings.shadow_min_points,
                             self.settings.shadow_min_agreement)

    async def _announce(self, series_id: str, version: int | None, run_id: str | None) -> bool:
        event = TrainingEvent(event="completed", job_id=None, series_id=series_id,
                              model_name=model_name(series_id), version=version, run_id=run_id)
        try:
            await self.publisher.publish(completed_key(series_id),
                                         event.model_dump_json().encode(), str(uuid.uuid4()),
                                         mandatory=False)
            return True
        except Exception as exc:  # the registry holds the truth; serving's TTL catches up
            log.warning("could not announce the change of %s: %s", series_id, exc)
            return False

    # -- the automatic decision -----------------------------------------------------------

    async def judge(self) -> None:
        """Decide every evaluation with enough points (runs until cancelled)."""
        while True:
            await asyncio.sleep(self.settings.shadow_sync_s)
            try:
                for row in await to_thread.run_sync(self.shadows.ready,
                                                     self.settings.shadow_min_points):
                    await self._decide(row)
            except Exception:  # the store or the registry is down: try again next round
                log.exception("shadow decisions failed")

    async def _decide(self, row: ShadowEvaluation) -> None:
        s = self.settings
        verdict = decide(row.points, row.agreements, s.shadow_min_points, s.shadow_min_agreement)
        if verdict is None or not await to_thread.run_sync(
            self.shadows.move, row.id, "evaluating", "deciding"
        ):
            return  # another API replica took it
        rate = row.agreements / row.points
        reason = (f"agreement {rate:.4f} over {row.points} points "
                  f"({'>=' if verdict == 'promote' else '<'} {s.shadow_min_agreement})")
        try:
            if verdict == "promote":
                await self.promote(row.series_id, row.version, AUTOMATIC, reason)
                # closed by the promotion, unless production already held the version
                await to_thread.run_sync(self.shadows.move, row.id, "deciding", "promoted",
                                         reason)
            else:
                await self.stop_shadow(row.series_id, AUTOMATIC, "dropped", reason, row)
        except (ModelNotFound, InvalidVersion) as exc:  # deleted meanwhile: nothing to decide
            await to_thread.run_sync(self.shadows.move, row.id, "deciding", "stopped",
                                     exc.message)
            return
        except Exception:  # registry or store down: decided again next round
            await to_thread.run_sync(self.shadows.move, row.id, "deciding", "evaluating")
            raise
        log.info("shadow v%d of %s: %s (%s)", row.version, row.series_id, verdict, reason)
