"""The operators' API: `/v1/admin/...`, authenticated by BANTIN_OPERATOR_TOKEN."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1/admin", tags=["admin"])
