"""What the inbound journals share: recording a batch in one statement, duplicates left out.

Both journals (`storage.whatsapp_inbound`, `storage.telegram_inbound`) store an
inbound message before the platform is told it arrived, and both are keyed by
the platform's own id, so a message delivered twice (or two copies racing each
other) is one row. `insert_new` is that INSERT for a batch of rows:
`INSERT ... VALUES (...), (...) ON CONFLICT (<key>) DO NOTHING RETURNING <key>`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.types import TypeEngine


@functools.lru_cache(maxsize=64)
def insert_new(
    table: str,
    key: str,
    per_row: tuple[tuple[str, type[TypeEngine[object]] | None], ...],
    shared: tuple[tuple[str, type[TypeEngine[object]] | None], ...],
    count: int,
) -> TextClause:
    """The INSERT of `count` rows into `table` as fixed text, compiled once per batch size.

    (SQLAlchemy never caches a dialect `insert()` with ON CONFLICT: compiling it
    on every request was half of the WhatsApp webhook's CPU time per request.)
    Columns of `per_row` take the parameters `<column>_<row index>`, those of
    `shared` one parameter `<column>` for every row; a type, when given, binds
    the parameter (blobs, aware datetimes). Valid on SQLite 3.35+ and
    PostgreSQL alike; RETURNING gives the keys inserted, in no order.
    """
    columns = [name for name, _ in per_row] + [name for name, _ in shared]
    rows = ", ".join(
        "("
        + ", ".join([f":{name}_{i}" for name, _ in per_row] + [f":{n}" for n, _ in shared])
        + ")"
        for i in range(count)
    )
    typed: list[object] = [
        bindparam(f"{name}_{i}", type_=kind())
        for name, kind in per_row
        if kind is not None
        for i in range(count)
    ]
    typed += [bindparam(name, type_=kind()) for name, kind in shared if kind is not None]
    return text(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES {rows} "
        f"ON CONFLICT ({key}) DO NOTHING RETURNING {key}"
    ).bindparams(*typed)  # type: ignore[arg-type]


def row_params(rows: Sequence[dict[str, object]]) -> dict[str, object]:
    """The per-row parameters of `insert_new` for `rows` (each a column -> value mapping)."""
    params: dict[str, object] = {}
    for index, row in enumerate(rows):
        for name, value in row.items():
            params[f"{name}_{index}"] = value
    return params
