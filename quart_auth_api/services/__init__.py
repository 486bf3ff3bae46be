"""Use cases: the only place that builds SQL.

Each function takes the `AsyncSession` first and keyword-only arguments after it; one
that writes commits last. The hot path's statements (`sessions.LIVE_SESSION`,
`sessions.ROTATE`) run through `db.read_one` and `db.write`, outside the ORM.
"""
