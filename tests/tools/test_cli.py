import json
import subprocess
import sys
from pathlib import Path

import pytest

from tools.cli import build_parser, main, openapi_document

ROOT = Path(__file__).resolve().parents[2]


def test_docs_openapi_is_the_served_document():
    """docs/openapi.json is a copy of matchmaker/openapi.json (the source): arbiter openapi > docs/openapi.json."""
    assert json.loads((ROOT / "docs" / "openapi.json").read_text()) == json.loads(openapi_document())


@pytest.mark.parametrize("argv", [
    ["up", "--port", "70000"], ["up", "--snapshot-every", "0"], ["up", "--snapshot-every", "1000001"],
    ["up", "--synchronous", "OFF"],
    ["up", "--token-ttl", "-1"], ["bench", "arena", "--matches", "0"], ["nope"], [],
])
def test_bad_arguments_exit_2_with_a_message(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    assert "error" in capsys.readouterr().err


def test_a_bad_game_spec_is_refused(capsys):
    assert main(["up", "--game", "nosuchmodule:Game"]) == 2
    assert "cannot import" in capsys.readouterr().err
    assert main(["up", "--game", "json:loads"]) == 2


def test_dev_script_refuses_unknown_commands():
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "dev.py"), "serve"], capture_output=True, text=True)
    assert done.returncode == 2 and "usage" in done.stderr


def test_the_http_connection_cap_leaves_half_the_open_files():
    from tools.openfiles import connection_cap

    assert connection_cap(10_000, 1_048_576) == 10_000
    assert connection_cap(10_000, 1024) == 512  # a client holding connections cannot take every descriptor
    assert connection_cap(10_000, 0) == 10_000  # the limit is not known
    assert connection_cap(10_000, 1) == 1
