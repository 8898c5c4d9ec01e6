"""memory.sqlite_pages_on_demand: SQLite then allocates a connection's page cache as it fills, not a
block of 20 pages at its first read. It changes the process's SQLite, so each case runs in a fresh
interpreter."""

import json
import subprocess
import sys

import pytest

from gameserver import memory

MEASURE = """
import ctypes, json, sqlite3, sys, tempfile
from pathlib import Path
from gameserver import memory
if sys.argv[1] == "while-open":
    held = sqlite3.connect(":memory:")
    held.execute("SELECT 1")
configured = memory.sqlite_pages_on_demand() if sys.argv[1] != "default" else None
lib = memory._loaded_sqlite()
lib.sqlite3_memory_used.restype = ctypes.c_int64
path = Path(tempfile.mkdtemp()) / "m.sqlite3"
setup = sqlite3.connect(path)
setup.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
setup.executemany("INSERT INTO t VALUES (?, ?)", [(i, "x" * 200) for i in range(2000)])
setup.commit()
setup.close()
before = lib.sqlite3_memory_used()
conns = [sqlite3.connect(path) for _ in range(20)]
for conn in conns:
    conn.execute("PRAGMA cache_size = -32")
    assert conn.execute("SELECT count(*), sum(length(v)) FROM t").fetchone() == (2000, 400000)
print(json.dumps({"configured": configured, "per_connection": (lib.sqlite3_memory_used() - before) / len(conns)}))
"""


def measure(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", MEASURE, mode], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(memory._loaded_sqlite() is None, reason="Python's SQLite is not a shared library here")
def test_pages_on_demand_keeps_a_small_cache_small_and_reads_the_same():
    default, on_demand = measure("default"), measure("on-demand")
    assert on_demand["configured"] is True
    # 20 pages (about 90 KB) allocated up front by default; 8 pages (32 KiB) as the cache fills
    assert default["per_connection"] - on_demand["per_connection"] > 40_000


@pytest.mark.skipif(memory._loaded_sqlite() is None, reason="Python's SQLite is not a shared library here")
def test_pages_on_demand_refuses_while_a_connection_is_open():
    assert measure("while-open")["configured"] is False
