"""What a gateway feature (a resource package such as ``chat`` or ``fine_tuning``) contributes to the app."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from fastapi import APIRouter, FastAPI


@dataclass(frozen=True)
class Feature:
    router: APIRouter
    # Public routes (health, metrics) need no API key.
    public: bool = False
    # Entered when the app starts, left when it stops: build services here and put them on ``app.state``.
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None
