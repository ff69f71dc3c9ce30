"""Fixtures for the stream tests (helpers live in stream_helpers.py)."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture(autouse=True)
def _one_thread():
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # the live path does not need torch
        pass


@pytest.fixture
def uname() -> str:
    """A stream name no other test uses."""
    return f"ss-test-{uuid.uuid4().hex[:10]}"
