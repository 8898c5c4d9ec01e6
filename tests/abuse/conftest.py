import pytest

from abuse_helpers import start_stack


@pytest.fixture
async def stack(nursery, tmp_path):
    """A node and its WebSocket endpoint on loopback, with the documented default limits."""
    return await start_stack(nursery, tmp_path)
