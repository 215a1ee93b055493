"""Alembic revision files, applied in order by ``dockyard.registry.db``."""
