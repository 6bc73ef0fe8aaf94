"""Persistence: SQLAlchemy models, repositories, migrations and the unit of work."""
