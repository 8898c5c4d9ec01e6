"""The demo games, and loading a game class named on the command line (`module:Class`)."""

from __future__ import annotations

import importlib

from ..game import Game, check_game_class
from .arena import Arena
from .connect_four import ConnectFour


def builtin_games() -> dict[str, type[Game]]:
    return {Arena.name: Arena, ConnectFour.name: ConnectFour}


def load_game(spec: str) -> type[Game]:
    """Import `package.module:ClassName` and check that it is a usable game class."""
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise ValueError(f"a game is given as module:Class, not {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"cannot import {module_name}: {error}") from None
    except Exception as error:  # the module's own code raised (or does not compile): the same refusal
        raise ValueError(f"cannot import {module_name}: {type(error).__name__}: {error}") from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, Game):
        raise ValueError(f"{spec} is not a subclass of gameserver.game.Game")
    try:
        check_game_class(cls)
    except TypeError as error:
        raise ValueError(str(error)) from None
    return cls
