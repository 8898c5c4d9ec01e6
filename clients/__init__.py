"""What talks to the server: the Python client library and bot players."""
