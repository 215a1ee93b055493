"""Alembic migrations of the registry database; ``dockyard.registry.db`` applies them on open."""
