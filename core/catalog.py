"""Reading and correcting the model catalog (`series_models` in the job store).

The pipeline writes a row per trained series; a promotion by hand or by a shadow evaluation
moves the row's version with the alias, so the catalog keeps naming production.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select, update

from core.jobstore import JobStore, SeriesModel


class Catalog:
    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs

    def page(
        self, prefix: str | None, page: int, page_size: int
    ) -> tuple[Sequence[SeriesModel], int]:
        """Series with a model, by series id; `prefix` filters literally (no wildcards)."""
        query = select(SeriesModel)
        if prefix:
            query = query.where(SeriesModel.series_id.startswith(prefix, autoescape=True))
        with self.jobs.session() as s:
            total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = s.scalars(
                query.order_by(SeriesModel.series_id)
                .offset((page - 1) * page_size)
                .limit(page_size)
            ).all()
        return rows, total

    def set_production(
        self, series_id: str, version: int, algorithm: str | None, data_sha256: str | None
    ) -> bool:
        """Point the series' row at a promoted version; False when the series has no row."""
        values: dict = {"version": version}
        if algorithm:
            values["algorithm"] = algorithm
        if data_sha256:
            values["data_sha256"] = data_sha256
        with self.jobs.session() as s:
            done = s.execute(
                update(SeriesModel).where(SeriesModel.series_id == series_id).values(**values)
            )
        return bool(done.rowcount)
