"""The matchmaking HTTP API."""
