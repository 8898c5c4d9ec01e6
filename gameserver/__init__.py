"""Arbiter game server: match actors, their tick loop, per-match SQLite, the WebSocket endpoint."""
