"""The initial registry schema: models, versions, aliases, model_tags.

Written by hand and self-contained (it does not import ``dockyard.registry.tables``, which will
move on); ``tests/registry/test_migrations.py`` checks the two agree.

Revision ID: 0001
Revises:
Create Date: 2024-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        sa.UniqueConstraint("name", name="uq_models_name"),
    )
    op.create_table(
        "versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("framework", sa.String(128), nullable=False),
        sa.Column("artifact_digest", sa.String(64), nullable=False),
        sa.Column("artifact_format", sa.String(128), nullable=False),
        sa.Column("artifact_options", sa.JSON(), nullable=False),
        sa.Column("signature", sa.JSON(), nullable=False),
        sa.Column("lineage", sa.JSON(), nullable=False),
        sa.Column("allow_pickle", sa.Boolean(), nullable=False),
        sa.Column("trusted_types", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("archived", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_versions_model_id_models"),
        sa.PrimaryKeyConstraint("id", name="pk_versions"),
        sa.UniqueConstraint("model_id", "version", name="uq_versions_model_id_version"),
    )
    op.create_index("ix_versions_artifact_digest", "versions", ["artifact_digest"])
    op.create_table(
        "aliases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_aliases_model_id_models"),
        sa.ForeignKeyConstraint(
            ["version_id"], ["versions.id"], name="fk_aliases_version_id_versions"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_aliases"),
        sa.UniqueConstraint("model_id", "name", name="uq_aliases_model_id_name"),
    )
    op.create_table(
        "model_tags",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_model_tags_model_id_models"),
        sa.PrimaryKeyConstraint("model_id", "key", name="pk_model_tags"),
    )


def downgrade() -> None:
    op.drop_table("model_tags")
    op.drop_table("aliases")
    op.drop_index("ix_versions_artifact_digest", table_name="versions")
    op.drop_table("versions")
    op.drop_table("models")
