"""Fixtures shared by the Python interop tests (helpers are in ringcast_helpers.py)."""

from __future__ import annotations

import pytest

from ringcast_helpers import generate_stubs


@pytest.fixture(scope="session")
def pb(tmp_path_factory):
    """ringcast_pb2 / ringcast_pb2_grpc, generated from the .proto at test time."""
    return generate_stubs(tmp_path_factory.mktemp("ringcast_stubs"))
