"""Queue files (matchmaker/queues.py): party_accept_s, the window a party ticket's members have to accept it,
read and checked like the other durations of a queue."""

import pytest

from matchmaker.book import DEFAULT_ACCEPT_S
from matchmaker.queues import QueueFileError, default_modes, parse_modes

QUEUE = """
[queues.squad]
game = "arena"
players = { min = 4, max = 4 }
"""


def test_party_accept_s_defaults_to_a_minute_and_is_read_from_the_file():
    assert parse_modes(QUEUE, {"arena"})["squad"].party_accept_s == DEFAULT_ACCEPT_S == 60.0
    assert parse_modes(QUEUE + "party_accept_s = 15\n", {"arena"})["squad"].party_accept_s == 15.0
    assert all(mode.party_accept_s == 60.0 for mode in default_modes().values())


@pytest.mark.parametrize(("value", "message"), [
    ("0", "party_accept_s must be 1 to 3600 seconds"),
    ("3601", "party_accept_s must be 1 to 3600 seconds"),
    ("nan", "party_accept_s must be 1 to 3600 seconds"),
    ("true", "expected a number"),
    ('"60"', "expected a number"),
])
def test_a_party_accept_s_out_of_range_or_not_a_number_stops_with_the_queue_and_field(value, message):
    with pytest.raises(QueueFileError) as error:
        parse_modes(QUEUE + f"party_accept_s = {value}\n", {"arena"})
    assert str(error.value).startswith("[queues.squad]: ") and message in str(error.value)
