"""The database's clock: the one time every machine of a fleet agrees on.

Leases, worker liveness and attempt records are stamped and compared with the database server's
time, never the caller's: two workers whose clocks disagree by an hour still agree on when a
lease runs out, so neither gives its lease up early nor steals another's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, literal
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from service.storage.models import UTCDateTime


class database_now(FunctionElement[datetime]):
    """The database's current time plus `seconds` (which may be negative), as a UTC datetime.

    PostgreSQL: now(), the time its transaction began, so one transaction sees one instant.
    SQLite: its own clock, rendered in the very text format SQLAlchemy stores datetimes in
    (microseconds included), so stored and computed times compare correctly as text.
    """

    type = UTCDateTime()
    inherit_cache = True
    name = "database_now"

    def __init__(self, seconds: float = 0.0) -> None:
        # A bound parameter, not literal SQL: the statement cache then holds one entry for
        # every offset.
        super().__init__(literal(float(seconds), Float()))


@compiles(database_now, "postgresql")
def _postgresql_now(element: database_now, compiler: SQLCompiler, **kw: Any) -> str:
    return f"(now() + make_interval(secs => {compiler.process(element.clauses, **kw)}))"


@compiles(database_now, "sqlite")
def _sqlite_now(element: database_now, compiler: SQLCompiler, **kw: Any) -> str:
    # %f gives seconds with milliseconds; the stored format has six decimals.
    offset = f"printf('%.6f seconds', {compiler.process(element.clauses, **kw)})"
    return f"(strftime('%Y-%m-%d %H:%M:%f', 'now', {offset}) || '000')"
