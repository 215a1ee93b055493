"""Frameworks some interpreters lack: the pinned CPU build of torch lies on the machines' disk for
Python 3.11 only (noxfile.py), so on the others its tests skip, saying why."""

from __future__ import annotations

import importlib.util

import pytest

NO_TORCH = "torch is not installed: its CPU build is on this machine's disk for Python 3.11 only"
HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason=NO_TORCH)
