"""Schemathesis against a real `arbiter up` on loopback: whatever the OpenAPI document allows a client to
send, the server answers without a 5xx, with a documented status code and content type, and with a body
that matches the document.

The server is a subprocess, not a task in the test's trio loop: schemathesis calls it synchronously
(requests), which would block a server sharing the loop.
"""

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, negative_data_rejection,
                                               response_schema_conformance, status_code_conformance,
                                               unsupported_method)

from gameserver.ids import match_id_from_name
from tools.cli import openapi_document

pytestmark = pytest.mark.slow

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          unsupported_method, negative_data_rejection]
# The document the server serves (a test below checks that it does), loaded at collection so that every
# operation is its own test. schemathesis.pytest.from_fixture would load it from the running server, but
# it does not work with pytest 9.2 (it sets Function._nodeid).
DOCUMENT = json.loads(openapi_document())
schema = schemathesis.openapi.from_dict(DOCUMENT)
REAL_MATCH_NAME = "schemathesis"
REAL_MATCH = match_id_from_name(REAL_MATCH_NAME)
BOUND = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                 suppress_health_check=list(HealthCheck))


@contextmanager
def arbiter_up(root, *args):
    """A real `arbiter up --port 0` (never the caller's ARBITER_ADMIN_TOKEN): its HTTP URL. Stopped by its PID."""
    ready = root / "ready.json"
    env = {key: value for key, value in os.environ.items() if key != "ARBITER_ADMIN_TOKEN"}
    with open(root / "server.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tools.cli", "up", "--port", "0", "--data-dir", str(root / "data"),
             "--ready-file", str(ready), *args], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"arbiter up did not start: {(root / 'server.log').read_text()}")
            time.sleep(0.05)
        yield json.loads(ready.read_text())["http_url"]
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()


ADMIN_TOKEN = "schema-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """With an admin token, as in production: the operations the document secures with it ask for it."""
    with arbiter_up(tmp_path_factory.mktemp("schema"), "--admin-token", ADMIN_TOKEN) as url:
        yield url


@pytest.fixture(scope="module")
def real_match(server):
    """The match REAL_MATCH, so that operations on /v1/matches/{match_id} also reach their success paths."""
    created = httpx.post(f"{server}/v1/matches", json={"game": "arena", "name": REAL_MATCH_NAME}, headers=ADMIN)
    assert created.status_code == 201 and created.json()["match_id"] == REAL_MATCH, created.text
    return REAL_MATCH


@schema.hook
def flatmap_path_parameters(context, path_parameters):
    """A generated match id, or the real match's (a named match: its id is known before the server starts)."""
    if not path_parameters or "match_id" not in path_parameters:
        return st.just(path_parameters)
    return st.sampled_from([{**path_parameters, "match_id": REAL_MATCH}, path_parameters])


def test_the_served_document_is_the_one_tested(server):
    assert httpx.get(f"{server}/openapi.json").json() == DOCUMENT


def test_every_error_is_documented_as_problem_json():
    """Else schemathesis has no schema to check an error's body against."""
    for path, operations in DOCUMENT["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if not status.startswith("2"):
                    assert response["content"] == {"application/problem+json": {
                        "schema": {"$ref": "#/components/schemas/Problem"}}}, (method, path, status)


@pytest.fixture(scope="module")
def player_auth(server):
    """A guest player's token, so that the player operations reach their success paths too."""
    token = httpx.post(f"{server}/v1/auth/guest").json()["token"]
    return {"Authorization": f"Bearer {token}"}


@schema.parametrize()
@BOUND
def test_every_operation_conforms(case, server, real_match, player_auth):
    operation = DOCUMENT["paths"][case.path].get(case.method.lower(), {})  # (unsupported_method tries others)
    admin = {"admin": []} in operation.get("security", [])
    case.call_and_validate(base_url=server, checks=CHECKS, headers=ADMIN if admin else player_auth)


def test_create_a_match_then_its_status_and_a_token(server):
    """One explicit sequence through the success paths, under the same checks."""
    create = schema["/v1/matches"]["POST"].Case(body={"game": "arena", "params": {}, "name": "schema-sequence"})
    created = create.call_and_validate(base_url=server, checks=CHECKS, headers=ADMIN)
    assert created.status_code == 201
    match_id = created.json()["match_id"]
    status = schema["/v1/matches/{match_id}"]["GET"].Case(path_parameters={"match_id": match_id})
    assert status.call_and_validate(base_url=server, checks=CHECKS).json()["match_id"] == match_id
    token = schema["/v1/matches/{match_id}/tokens"]["POST"].Case(path_parameters={"match_id": match_id},
                                                                  body={"player_id": "alice", "role": "player"})
    granted = token.call_and_validate(base_url=server, checks=CHECKS, headers=ADMIN)
    assert granted.status_code == 201 and granted.json()["match_id"] == match_id
    coerced = schema["/v1/matches/{match_id}/tokens"]["POST"].Case(path_parameters={"match_id": match_id},
                                                                    body={"player_id": "alice", "ttl_s": True})
    assert coerced.call_and_validate(base_url=server, checks=CHECKS, headers=ADMIN).status_code == 422  # not 1 s


ADMIN_CASES = {  # every operation behind the admin token, with a valid request
    ("POST", "/v1/matches"): {"body": {"game": "arena"}},
    ("POST", "/v1/matches/{match_id}/tokens"): {"path_parameters": {"match_id": REAL_MATCH},
                                                "body": {"player_id": "alice"}},
    ("GET", "/v1/matches/{match_id}/inputs"): {"path_parameters": {"match_id": REAL_MATCH}},
    ("GET", "/v1/alarms/failed"): {},
    ("GET", "/v1/node/unusable"): {},
    ("GET", "/v1/node/workers"): {},
}


def test_every_admin_operation_is_tested_for_its_401():
    """An operation that the document secures with the admin token (and nothing else) is in ADMIN_CASES;
    every one that documents a 401 is secured by a scheme."""
    admin = {(method.upper(), path) for path, operations in DOCUMENT["paths"].items()
             for method, operation in operations.items() if operation.get("security") == [{"admin": []}]}
    assert admin == set(ADMIN_CASES)
    assert all(operation.get("security") for operations in DOCUMENT["paths"].values()
               for operation in operations.values() if "401" in operation["responses"])


@pytest.mark.parametrize(("method", "path"), list(ADMIN_CASES))
def test_admin_operations_answer_a_documented_401_without_the_token(server, real_match, method, path):
    case = schema[path][method].Case(**ADMIN_CASES[method, path])
    assert case.call_and_validate(base_url=server, checks=CHECKS).status_code == 401
    authorized = case.call_and_validate(base_url=server, checks=CHECKS, headers=ADMIN)
    assert authorized.status_code in (200, 201)
