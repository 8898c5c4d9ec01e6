"""Helpers for tests that damage match files as something outside Arbiter would."""

import sqlite3


def alter(path, *statements):
    """Run SQL statements on a match file with sqlite3 (each one SQLite itself accepts), and commit."""
    conn = sqlite3.connect(path)
    try:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()
