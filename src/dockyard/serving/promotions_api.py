"""PLACEHOLDER (issue 12, being built this session)."""

from __future__ import annotations

from fastapi import APIRouter


def build_router() -> APIRouter:
    return APIRouter(prefix="/api", tags=["Governance"])
