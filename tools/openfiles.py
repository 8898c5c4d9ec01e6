"""The open-file limit: a server holds a socket per connection and a file per live match."""

from __future__ import annotations


def raise_open_file_limit() -> int:
    """Allow as many open files as the system lets us; the soft limit now."""
    try:
        import resource
    except ImportError:  # not on this platform
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return soft


def connection_cap(wanted: int, open_files: int) -> int:
    """The HTTP connections to allow at once: `wanted`, but at most half the open-file limit (0:
    unknown), so that a client holding connections cannot leave the server without descriptors for
    its match files, its WebSocket connections and the sockets that restart its workers."""
    if open_files <= 0:
        return wanted
    return max(1, min(wanted, open_files // 2))
