"""Set up a virtual environment and run the server or the tests: the README's two commands.

    python3 tools/dev.py up [arbiter up options]
    python3 tools/dev.py test [pytest options]

Standard library only, so that it runs on a fresh machine with nothing but Python 3.11+.
The environment lives in `.venv/` next to `pyproject.toml`; it is reinstalled only when
`pyproject.toml` changes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
STAMP = VENV / ".arbiter-installed"
CHROMIUM = Path("/usr/bin/chromium")  # the browser tests drive Debian's package (tests/web)
USAGE = "usage: python3 tools/dev.py {up|test} [arguments passed on]"


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_env(extras: str) -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"Arbiter needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    have = STAMP.read_text().split() if STAMP.exists() else []
    # The test extras are a superset of the plain install: either serves `up`.
    if have[:1] == [digest] and venv_python().exists() and (not extras or extras in have[1:]):
        return
    if not venv_python().exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    target = f".[{extras}]" if extras else "."
    print(f"installing arbiter{f'[{extras}]' if extras else ''} into {VENV}", flush=True)
    pip = [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "-e", target], cwd=ROOT, check=True)
    STAMP.write_text(f"{digest} {extras}".strip())


def ensure_chromium() -> None:
    """Install Debian's chromium for the browser tests if it is missing and we can (root, apt-get).
    If we cannot, say so: those tests then fail with the command that installs it."""
    if CHROMIUM.exists() or not sys.platform.startswith("linux"):
        return
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        print(f"{CHROMIUM} is missing and installing it needs root and apt-get: the browser tests will fail",
              flush=True)
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def apt_get(*args: str) -> bool:
        print(f"running: apt-get {' '.join(args)}", flush=True)
        try:
            done = subprocess.run([apt, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, timeout=900)
        except subprocess.TimeoutExpired:
            print("  gave up after 900 s", flush=True)
            return False
        if done.returncode != 0:
            print("  failed:\n  " + "\n  ".join(done.stdout.strip().splitlines()[-5:]), flush=True)
        return done.returncode == 0

    # A fresh machine may have no package lists yet: fetch them only if installing fails without.
    if not apt_get("install", "-y", "-q", "chromium") and apt_get("update", "-q"):
        apt_get("install", "-y", "-q", "chromium")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("up", "test"):
        print(USAGE, file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    ensure_env("test" if command == "test" else "")
    if command == "test":
        ensure_chromium()
    if command == "up":
        exe = [str(venv_python()), "-m", "tools.cli", "up", *rest]
    else:
        exe = [str(venv_python()), "-m", "pytest", *rest]
    os.chdir(ROOT)
    if os.name == "nt":
        return subprocess.call(exe)
    os.execv(exe[0], exe)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
