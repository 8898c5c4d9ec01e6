"""The arbiter command: up, bench, and the tools around a server."""
