"""Fixtures for the interop tests (BIRD instances; helpers live in ``bird.py``)."""

from __future__ import annotations

from .bird import birds

__all__ = ["birds"]
