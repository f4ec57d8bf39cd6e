#!/usr/bin/env python3
"""Crash-safety test of the server with the PostgreSQL connector.

What it proves, on a real server binary and a real PostgreSQL server, while the server is
killed with SIGKILL at random moments and restarted at once:

* Durability: every request whose creation was acknowledged (HTTP 201) exists afterwards,
  and every approval that was acknowledged (HTTP 200) is still there: the request is
  approved and carries the review by the approver.
* Liveness of grants (rule 17): every grant reaches a final state (expired, revoked or
  failed) once the load stops; no connector call is lost across a crash.
* Access matches grants: a monitor reads `pg_auth_members` every half second. A user is
  never seen as a member of the granted role outside the lifetime of one of their grants
  (from 1 s before it was created until 5 s after it expired or ended, whichever is later),
  and no membership is left at the end.
* The audit chain still verifies (`GET /v1/audit/verify`).

With `--replicas 2 --store postgres`, two servers share one PostgreSQL store and one of them
is killed at a time; it also proves from the audit log that every grant ends exactly once
(one final event), is issued once and activated at most once, that every request is created
once and reaches at most one outcome, and that every replica verifies the same chain.

Python 3.11 standard library only; PostgreSQL is read and set up with the `psql` client.
Run from the repository root:

    python3 tests/crash/run.py --pg-url postgres://countersign_test:countersign@127.0.0.1:54329/countersign_test

Without --pg-url or COUNTERSIGN_TEST_PG_URL the test is skipped (exit 0). It exits 1 when a
check fails and 2 when it cannot run (no binary, PostgreSQL unreachable, setup failed).
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

RESOURCE = "db-ro"
ROLE = "crash_ro"
ADMIN = "root@example.com"
DURATIONS = ["3s", "4s", "5s", "6s"]
FINAL_STATES = {"expired", "revoked", "failed"}
LIVE_STATES = ["scheduled", "activating", "active", "revoking"]
# A membership may be seen this long before a grant's creation (clock granularity) and this
# long after its expiry or end, whichever is later (the revoke call and its confirmation).
EARLY_SLACK = 1.0
LATE_SLACK = 5.0
MONITOR_PERIOD = 0.5
RECONCILE_INTERVAL = 10


class SetupError(Exception):
    """The test cannot run (as opposed to a check that failed)."""


def user_email(n: int) -> str:
    return f"u{n}@example.com"


def db_user(n: int) -> str:
    return f"crash_u{n}"


def parse_time(text: str | None) -> float | None:
    """An RFC 3339 time from the API as seconds since the epoch."""
    return None if text is None else datetime.fromisoformat(text).timestamp()


def clock(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%H:%M:%S.%f")[:-3]


# --- PostgreSQL -------------------------------------------------------------------------------


class Postgres:
    """Runs SQL through `psql`, one connection per call."""

    def __init__(self, url: str):
        self.url = url

    def query(self, sql: str, timeout: float = 10) -> list[list[str]]:
        cmd = ["psql", "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
               "-d", self.url, "-f", "-"]
        done = subprocess.run(cmd, input=sql, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"psql failed ({done.returncode}): {done.stderr.strip()}")
        return [line.split("\t") for line in done.stdout.splitlines() if line]

    def reset_roles(self, users: int) -> None:
        """Drops the roles of earlier runs and creates the role to grant and the login roles."""
        old = [row[0] for row in self.query(
            "SELECT rolname FROM pg_roles WHERE rolname ~ '^crash_u[0-9]+$'")]
        statements = [f'DROP ROLE IF EXISTS "{name}";' for name in old]
        statements.append(f'DROP ROLE IF EXISTS "{ROLE}";')
        statements.append(f'CREATE ROLE "{ROLE}" NOLOGIN;')
        statements += [f'CREATE ROLE "{db_user(n)}" LOGIN;' for n in range(1, users + 1)]
        self.query("\n".join(statements))

    def drop_roles(self, users: int) -> None:
        names = [ROLE] + [db_user(n) for n in range(1, users + 1)]
        self.query("\n".join(f'DROP ROLE IF EXISTS "{name}";' for name in names))

    def create_database(self, name: str) -> str:
        """Creates an empty database and returns its URL (this server, this role)."""
        self.query(f'CREATE DATABASE "{name}";')
        return self.url_of(name)

    def drop_database(self, name: str) -> None:
        self.query(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE);')

    def url_of(self, database: str) -> str:
        """This URL with another database name (its query, such as `sslmode`, kept)."""
        parts = urllib.parse.urlsplit(self.url)
        return urllib.parse.urlunsplit(parts._replace(path="/" + database))

    def members(self) -> set[str]:
        """The roles that are members of the granted role now."""
        rows = self.query(
            "SELECT u.rolname FROM pg_auth_members m"
            " JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member"
            f" WHERE r.rolname = '{ROLE}'", timeout=5)
        return {row[0] for row in rows}


# --- The server -------------------------------------------------------------------------------


CONFIG = """\
server {{
  listen             = "127.0.0.1:{port}"
  database           = {database}
  reconcile_interval = "{reconcile}s"
  expiry_notice      = "0s"
}}

{users}
user "{admin}" {{ roles = ["admin"] }}

connector "pg" {{
  type               = "postgres"
  url                = env("CRASH_PG_URL")
  user               = "{{attr.db_user}}"
  terminate_sessions = true
  timeout            = "5s"
}}

action_store "crash" {{
  action "slow" {{
    command = ["sh", "slow.sh"]
    timeout = "30s"
  }}
}}

runbook "crash" {{
  file = "crash.yaml"
}}

resource "{resource}" {{
  connector    = "pg"
  grant        = {{ role = "{role}" }}
  max_duration = "1m"
  durations    = [{durations}]
  owners       = ["{admin}"]
  workflow     = {{ steps = [ {{ reviewers = {{ one_of = ["{admin}"] }} }} ] }}
}}
"""


# A runbook run under the kills (issue 17, rule 37): an action, an input the load answers, a
# second action given that answer, and a message. Its actions are ungated, so that runs need no
# grant, and slow, so that kills land while they run.
RUNBOOK = """\
version: 3
type: conversation
steps:
  - id: first
    type: action
    store: crash
    name: slow
    parameters: {}
  - id: answer
    type: input
    value_type: string
    prompt: Go on?
  - id: second
    type: action
    store: crash
    name: slow
    parameters: ${answer}
  - id: done
    type: message
    prompt: finished
"""

# Records each start and end with the run's idempotency key (`<run>/<step>`) and attempt, so
# that the check can tell what ran, in which order, and how often.
SLOW_ACTION = """\
#!/bin/sh
cat > /dev/null
echo "start $COUNTERSIGN_IDEMPOTENCY_KEY $COUNTERSIGN_ATTEMPT" >> {log}
sleep 0.$(( $$ % 9 + 1 ))
echo "end $COUNTERSIGN_IDEMPOTENCY_KEY $COUNTERSIGN_ATTEMPT" >> {log}
echo '{{"ok": true}}'
"""

ACTION_LOG = "actions.log"


def write_config(path: Path, port: int, users: int, database: str) -> Path:
    """Writes the configuration, and beside it the runbook and its action; `database` is the
    HCL expression of the `database` setting."""
    (path.parent / "crash.yaml").write_text(RUNBOOK)
    (path.parent / "slow.sh").write_text(
        SLOW_ACTION.format(log=json.dumps(str(path.parent / ACTION_LOG))))
    path.write_text(CONFIG.format(
        port=port,
        database=database,
        reconcile=RECONCILE_INTERVAL,
        users="\n".join(
            f'user "{user_email(n)}" {{ attributes = {{ db_user = "{db_user(n)}" }} }}'
            for n in range(1, users + 1)),
        admin=ADMIN,
        resource=RESOURCE,
        role=ROLE,
        durations=", ".join(f'"{d}"' for d in DURATIONS),
    ))
    return path


class Server:
    """The server process: started, killed with SIGKILL, restarted, stopped.

    Its stdout and stderr are appended to one log file, with a line from this script before
    every start and after every kill.
    """

    def __init__(self, binary: Path, config: Path, workdir: Path, env: dict[str, str],
                 name: str = "server", log_name: str = "server.log"):
        self.binary, self.config, self.workdir, self.env = binary, config, workdir, env
        self.name = name
        self.log_path = workdir / log_name
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.kills = 0
        self.stopped = False  # Once stopped, the server is not started again.
        self.lock = threading.Lock()

    def _mark(self, text: str) -> None:
        with open(self.log_path, "a") as log:
            log.write(f"===== crash test {clock(time.time())}: {text} =====\n")

    def start(self) -> None:
        with self.lock:
            if self.stopped:
                return
            self.starts += 1
            self._mark(f"start #{self.starts}")
            with open(self.log_path, "a") as log:
                self.proc = subprocess.Popen(
                    [str(self.binary), "serve", "--config", str(self.config)],
                    cwd=self.workdir, env=self.env, stdin=subprocess.DEVNULL,
                    stdout=log, stderr=log, start_new_session=True)

    def kill(self) -> None:
        with self.lock:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.kills += 1
            self._mark(f"SIGKILL #{self.kills} (pid {self.proc.pid})")

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
            if self.proc is None or self.proc.poll() is not None:
                return
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self._mark(f"stopped (status {self.proc.returncode})")

    def exit_status(self) -> int | None:
        """The status if the server exited by itself (it is never expected to)."""
        with self.lock:
            return None if self.proc is None else self.proc.poll()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "".join(self.log_path.read_text(errors="replace").splitlines(True)[-lines:])
        except OSError as e:
            return f"(cannot read {self.log_path}: {e})"


def run_tool(args: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise SetupError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip()


# --- HTTP -------------------------------------------------------------------------------------


class Unreachable(Exception):
    """No HTTP answer: the server is down, or was killed while answering."""


class Refused(Unreachable):
    """The connection was refused: the server is down and the call never reached it."""


class Api:
    def __init__(self, port: int):
        self.port = port

    def call(self, method: str, path: str, token: str | None = None,
             body: dict | None = None, timeout: float = 10) -> tuple[int, dict]:
        status, payload, _ = self.exchange(method, path, token, body, timeout)
        return status, payload

    def exchange(self, method: str, path: str, token: str | None = None,
                 body: dict | None = None, timeout: float = 10,
                 headers: dict[str, str] | None = None) -> tuple[int, dict, dict[str, str]]:
        """One call: the status, the JSON body and the response headers (lower-case names)."""
        headers = dict(headers or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            try:
                conn.connect()
            except ConnectionRefusedError as e:
                raise Refused(f"{method} {path}: {e!r}") from e
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise Unreachable(f"{method} {path}: {e!r}") from e
        finally:
            conn.close()
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            payload = {"raw": raw.decode(errors="replace")}
        return resp.status, payload, {k.lower(): v for k, v in resp.getheaders()}

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.call("GET", "/readyz", timeout=2)[0] == 200:
                    return True
            except Unreachable:
                pass
            time.sleep(0.1)
        return False


class Cluster:
    """The replicas' APIs, for the reads made once the load has stopped."""

    def __init__(self, apis: list[Api]):
        self.apis = apis

    def get(self, path: str, token: str, missing_ok: bool = False) -> dict | None:
        """A read that must succeed, from the first replica that answers (tried in turn);
        with `missing_ok`, a 404 gives None."""
        for attempt in range(50):
            api = self.apis[attempt % len(self.apis)]
            try:
                status, body = api.call("GET", path, token)
            except Unreachable:
                time.sleep(0.2)
                continue
            if status == 404 and missing_ok:
                return None
            if status != 200:
                raise RuntimeError(f"GET {path} on port {api.port} answered {status}: {body}")
            return body
        raise RuntimeError(f"GET {path}: no replica answered")


def send(apis: list[Api], first: int, ledger: Ledger, what: str, method: str, path: str,
         token: str, body: dict | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict, dict[str, str]]:
    """Sends a call to replica `first`, and on to the next while a replica refuses the
    connection (it is down: the call never reached it), counting each such detour.

    Raises `Refused` when every replica refused, `Unreachable` when the answer was lost.
    """
    for i in range(len(apis)):
        api = apis[(first + i) % len(apis)]
        try:
            return api.exchange(method, path, token, body, headers=headers)
        except Refused:
            if i + 1 == len(apis):
                raise
            ledger.count_unreachable(f"{what} refused (sent to the other replica)")
    raise AssertionError("unreachable")


# --- What the load saw ------------------------------------------------------------------------


@dataclass
class Created:
    id: str
    user: str
    duration: str
    covered: bool  # answered at once by an active grant (rule 5): nothing to approve


@dataclass
class Ledger:
    """Every acknowledged write, and everything unexpected, recorded by the load workers."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    created: dict[str, Created] = field(default_factory=dict)
    approved: set[str] = field(default_factory=set)
    # The approval's answer was lost in a crash and the retry found the request decided.
    unconfirmed: set[str] = field(default_factory=set)
    unreachable: collections.Counter = field(default_factory=collections.Counter)
    # How creates whose answer was lost ended once sent again with their Idempotency-Key.
    retries: collections.Counter = field(default_factory=collections.Counter)
    unexpected: list[str] = field(default_factory=list)
    # Runs whose start was acknowledged (201), and those whose input was answered (200, or
    # found answered after a lost answer).
    runs: set[str] = field(default_factory=set)
    answered: set[str] = field(default_factory=set)
    # Inputs whose answer was lost and never seen recorded: either end is right.
    maybe_answered: set[str] = field(default_factory=set)

    def add_run(self, run_id: str) -> None:
        with self.lock:
            self.runs.add(run_id)

    def add_answered(self, run_id: str) -> None:
        with self.lock:
            self.answered.add(run_id)
            self.maybe_answered.discard(run_id)

    def add_maybe_answered(self, run_id: str) -> None:
        with self.lock:
            self.maybe_answered.add(run_id)

    def add_created(self, c: Created) -> None:
        with self.lock:
            self.created[c.id] = c

    def add_approved(self, request_id: str) -> None:
        with self.lock:
            self.approved.add(request_id)

    def add_unconfirmed(self, request_id: str) -> None:
        with self.lock:
            self.unconfirmed.add(request_id)

    def count_unreachable(self, what: str) -> None:
        with self.lock:
            self.unreachable[what] += 1

    def count_retry(self, what: str) -> None:
        with self.lock:
            self.retries[what] += 1

    def add_unexpected(self, text: str) -> None:
        with self.lock:
            self.unexpected.append(text)


# --- The threads ------------------------------------------------------------------------------


def load_worker(apis: list[Api], tokens: dict[str, str], users: list[str], ledger: Ledger,
                stop: threading.Event, rng: random.Random, keyed: bool) -> None:
    """Creates requests as random users and has the admin approve each, until told to stop.

    With several replicas the calls take turns: each create goes to the next replica and its
    approval to the one after (a call refused by a replica that is down goes on to the
    other), and a create carries an `Idempotency-Key` (`keyed`) so that one whose answer was
    lost is sent again until a replica answers.
    """
    turn = rng.randrange(len(apis))
    while not stop.is_set():
        user, duration = rng.choice(users), rng.choice(DURATIONS)
        body = {"resource": RESOURCE, "reason": "crash test", "duration": duration, "fields": {}}
        turn += 1
        if keyed:
            reply = create_keyed(apis, turn, tokens[user], user, body, ledger, stop)
            if reply is None:
                continue
        else:
            try:
                status, reply, _ = send(apis, turn, ledger, "create", "POST", "/v1/requests",
                                        tokens[user], body)
            except Unreachable:
                ledger.count_unreachable("create")
                stop.wait(0.2)
                continue
            if status != 201:
                ledger.add_unexpected(f"POST /v1/requests as {user} answered {status}: {reply}")
                stop.wait(0.5)
                continue
        covered = reply["state"] == "approved"
        ledger.add_created(Created(reply["id"], user, duration, covered))
        if not covered:
            approve(apis, turn + 1, tokens[ADMIN], reply["id"], ledger, stop)
        stop.wait(rng.uniform(0.05, 0.25))


def run_worker(apis: list[Api], tokens: dict[str, str], users: list[str], ledger: Ledger,
               stop: threading.Event, rng: random.Random) -> None:
    """Starts runs of the `crash` runbook and answers each one's input once it waits for it,
    until told to stop (issue 17). A start whose answer was lost is not retried (it has no
    idempotency key): only acknowledged runs are checked."""
    turn = rng.randrange(len(apis))
    while not stop.is_set():
        user = rng.choice(users)
        turn += 1
        try:
            status, reply, _ = send(apis, turn, ledger, "run start", "POST", "/v1/runs",
                                    tokens[user], {"runbook": "crash"})
        except Unreachable:
            ledger.count_unreachable("run start")
            stop.wait(0.2)
            continue
        if status != 201:
            ledger.add_unexpected(f"POST /v1/runs as {user} answered {status}: {reply}")
            stop.wait(0.5)
            continue
        run_id = reply["id"]
        ledger.add_run(run_id)
        # Wait for the input (the first action runs first), then answer it.
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            turn += 1
            try:
                status, run, _ = send(apis, turn, ledger, "run read", "GET",
                                      f"/v1/runs/{run_id}", tokens[user])
            except Unreachable:
                stop.wait(0.2)
                continue
            if status == 200 and run["state"] == "waiting_for_input":
                try:
                    status, answer, _ = send(apis, turn, ledger, "run input", "POST",
                                             f"/v1/runs/{run_id}/input", tokens[user],
                                             {"value": "yes"})
                except Unreachable:
                    ledger.add_maybe_answered(run_id)
                    continue  # Read again: answered or not.
                if status == 200:
                    ledger.add_answered(run_id)
                    break
                ledger.add_unexpected(f"POST /v1/runs/{run_id}/input answered {status}: "
                                      f"{answer}")
                break
            if status == 200 and run["state"] != "running":
                if run["steps"][1]["status"] == "done":
                    ledger.add_answered(run_id)  # The lost answer was recorded.
                else:
                    ledger.add_unexpected(f"run {run_id} is {run['state']}: {run}")
                break
            stop.wait(0.2)
        stop.wait(rng.uniform(0.1, 0.5))


def check_runs(api: Cluster, ledger: Ledger, tokens: dict[str, str], users: list[str],
               log: Path, settle: float) -> tuple[list[str], collections.Counter]:
    """Rule 37 under kills: every answered run succeeds, an unanswered one still waits for
    its input; each action of a run ran, at least once, and a step never ran again once a
    later step had started (a completed step is never run again); an action ran more than
    once only with the same idempotency key, each attempt with a new, larger number, and the
    run records the last attempt's number."""
    found: list[str] = []
    states: collections.Counter = collections.Counter()
    admin = tokens[ADMIN]
    deadline = time.time() + settle
    views: dict[str, dict] = {}
    for run_id in sorted(ledger.runs):
        while True:
            view = api.get(f"/v1/runs/{run_id}", admin)
            if view["state"] not in ("running",) or time.time() > deadline:
                break
            time.sleep(0.5)
        views[run_id] = view
        states[view["state"]] += 1
        if run_id in ledger.answered:
            want = {"succeeded"}
        elif run_id in ledger.maybe_answered:
            want = {"succeeded", "waiting_for_input"}
        else:
            want = {"waiting_for_input"}
        if view["state"] not in want:
            found.append(f"run {run_id} is {view['state']}, expected {' or '.join(want)}: "
                         f"{view.get('status')}")
    calls: dict[str, list[tuple[str, str, int]]] = collections.defaultdict(list)
    lines = log.read_text().splitlines() if log.exists() else []
    for line in lines:
        what, key, attempt = line.split()
        run_id, step = key.split("/", 1)
        calls[run_id].append((what, step, int(attempt)))
    order = {"first": 0, "second": 2}
    for run_id, view in views.items():
        seen = calls.get(run_id, [])
        starts = [(step, attempt) for what, step, attempt in seen if what == "start"]
        reached = -1
        for step, attempt in starts:
            if order[step] < reached:
                found.append(f"run {run_id}: {step} ran again after a later step: {seen}")
            reached = max(reached, order[step])
        for step in ("first", "second") if view["state"] == "succeeded" else ("first",):
            attempts = [a for s, a in starts if s == step]
            if not attempts:
                found.append(f"run {run_id}: {step} never ran: {seen}")
            elif len(set(attempts)) != len(attempts) or attempts != sorted(attempts):
                # A claim whose process died before the program started leaves a gap.
                found.append(f"run {run_id}: {step}'s attempts are {attempts}")
            done = view["steps"][order[step]]
            if view["state"] == "succeeded" and done.get("attempts", 0) != max(attempts,
                                                                               default=0):
                found.append(f"run {run_id}: {step} recorded {done.get('attempts')} attempts, "
                             f"ran {attempts}")
            states[f"{step} re-run"] += max(len(attempts) - 1, 0)
    return found, states


def create_keyed(apis: list[Api], turn: int, token: str, user: str, body: dict, ledger: Ledger,
                 stop: threading.Event) -> dict | None:
    """Creates a request with an `Idempotency-Key`, sending the same call again (to the next
    replica) while its answer is lost; the created request's view, or None when nothing was
    acknowledged."""
    key = f"crash-{uuid.uuid4()}"
    lost = False
    while not stop.is_set():
        try:
            status, reply, headers = send(apis, turn, ledger, "create", "POST", "/v1/requests",
                                          token, body, {"Idempotency-Key": key})
        except Unreachable as e:
            ledger.count_unreachable("create")
            lost = lost or not isinstance(e, Refused)
            turn += 1
            stop.wait(0.2)
            continue
        replayed = headers.get("idempotent-replayed") == "true"
        if status == 201 and (lost or not replayed):
            if lost:
                ledger.count_retry("create answered after a lost answer: "
                                   + ("replayed (created before the crash)" if replayed
                                      else "created by the retry"))
            return reply
        if status == 409 and lost:
            # The key was marked as being created and the creation died with its replica:
            # nothing was created, and the mark lapses after a minute.
            ledger.count_retry("create answered after a lost answer: 409 (key marked, "
                               "nothing created)")
            return None
        ledger.add_unexpected(f"POST /v1/requests as {user} (Idempotency-Key {key}, "
                              f"answer lost before: {lost}) answered {status}"
                              f"{' replayed' if replayed else ''}: {reply}")
        stop.wait(0.5)
        return None
    return None


def approve(apis: list[Api], turn: int, token: str, request_id: str, ledger: Ledger,
            stop: threading.Event) -> None:
    """Approves a request, retrying through crashes (each time on the next replica) until a
    server gives an answer."""
    path = f"/v1/requests/{request_id}/reviews"
    lost_reply = False
    while not stop.is_set():
        try:
            status, reply, _ = send(apis, turn, ledger, "approve", "POST", path, token,
                                    {"decision": "approve", "comment": "crash test"})
        except Unreachable:
            ledger.count_unreachable("approve")
            lost_reply = True
            turn += 1
            stop.wait(0.2)
            continue
        if status == 200:
            ledger.add_approved(request_id)
        elif status == 409 and lost_reply:
            ledger.add_unconfirmed(request_id)
        else:
            ledger.add_unexpected(f"POST {path} answered {status}: {reply}")
        return


def killer(servers: list[Server], apis: list[Api], stop: threading.Event, rng: random.Random,
           min_gap: float, max_gap: float, problems: list[str]) -> None:
    """SIGKILLs a server at random moments and restarts it at once.

    With several replicas it picks one at random each time, and kills only while every other
    replica is ready, so that one always serves.
    """
    while not stop.wait(rng.uniform(min_gap, max_gap)):
        if any(s.exit_status() is not None for s in servers):
            return  # One died by itself; the main thread reports it.
        victim = servers[rng.randrange(len(servers))] if len(servers) > 1 else servers[0]
        for server, api in zip(servers, apis):
            if server is not victim and not api.wait_ready(30):
                problems.append(f"{server.name} did not answer /readyz for 30 s (the "
                                "killer waits for it before killing another replica)")
                return
        victim.kill()
        victim.start()


@dataclass
class Observation:
    start: float  # wall time before the query was sent
    end: float  # wall time after its answer arrived
    members: frozenset[str]

    @property
    def mid(self) -> float:
        return (self.start + self.end) / 2


def monitor(pg: Postgres, out: list[Observation], errors: list[str],
            stop: threading.Event) -> None:
    """Reads the members of the granted role every MONITOR_PERIOD seconds."""
    while not stop.is_set():
        started = time.time()
        try:
            members = pg.members()
            out.append(Observation(started, time.time(), frozenset(members)))
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            errors.append(f"{clock(started)}: {e}")
        stop.wait(max(0.0, MONITOR_PERIOD - (time.time() - started)))


# --- Checks -----------------------------------------------------------------------------------


@dataclass
class Grant:
    id: str
    subject: str
    state: str
    created: float
    activated: float | None
    expires: float | None
    ended: float | None
    attempts: int
    last_error: str | None

    @staticmethod
    def of(view: dict) -> Grant:
        return Grant(view["id"], view["subject"], view["state"],
                     parse_time(view["created_at"]), parse_time(view.get("activated_at")),
                     parse_time(view.get("expires_at")), parse_time(view.get("ended_at")),
                     view["attempts"], view.get("last_error"))

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def access_until(self) -> float:
        """Until when access may rightly exist: the later of expiry and end (never, while the
        grant is live)."""
        ends = [t for t in (self.expires, self.ended) if t is not None]
        return max(ends) if self.final and ends else float("inf")

    @property
    def expiry(self) -> float:
        """When access should stop: the expiry, or the end of a grant that never became
        active (never, while it is live)."""
        if self.expires is not None:
            return self.expires
        return self.ended if self.final and self.ended is not None else float("inf")

    def describe(self, t0: float) -> str:
        def at(t: float | None) -> str:
            return "-" if t is None else f"{clock(t)} (+{t - t0:.1f}s)"
        return (f"grant {self.id} [{self.state}] created {at(self.created)}, activated "
                f"{at(self.activated)}, expires {at(self.expires)}, ended {at(self.ended)}")


def fetch_requests(api: Api, admin: str, ids: list[str]) -> dict[str, dict]:
    """The requests of this run as the server has them now; missing ids are left out."""
    found = {}
    for rid in ids:
        view = api.get(f"/v1/requests/{rid}", admin, missing_ok=True)
        if view is not None:
            found[rid] = view
    return found


def fetch_grants(api: Api, admin: str, users: list[str],
                 requests: dict[str, dict]) -> tuple[dict[str, Grant], list[str]]:
    """Every grant of the run (each user's list, plus any grant a request names), and the
    users whose list may be cut at the API's limit."""
    grants: dict[str, Grant] = {}
    cut = []
    for user in users:
        views = api.get(f"/v1/grants?subject={user}&limit=500", admin)["grants"]
        if len(views) == 500:
            cut.append(user)
        grants.update((v["id"], Grant.of(v)) for v in views)
    for r in requests.values():
        gid = r.get("grant_id")
        if gid and gid not in grants:
            grants[gid] = Grant.of(api.get(f"/v1/grants/{gid}", admin))
    return grants, cut


def live_grants(api: Api, admin: str) -> list[dict]:
    return [v for s in LIVE_STATES
            for v in api.get(f"/v1/grants?state={s}&limit=500", admin)["grants"]]


def check_requests(ledger: Ledger, requests: dict[str, dict]) -> list[str]:
    """Every acknowledged create and approval survived the crashes."""
    out = []
    for rid, c in ledger.created.items():
        r = requests.get(rid)
        if r is None:
            out.append(f"request {rid} ({c.user}): its creation was acknowledged (201) but "
                       "the server does not know it")
            continue
        stored = (r["requester"], r["resource"], r["duration"])
        if stored != (c.user, RESOURCE, c.duration):
            out.append(f"request {rid}: created as {(c.user, RESOURCE, c.duration)}, "
                       f"stored as {stored}")
        if c.covered and r["state"] != "approved":
            out.append(f"request {rid}: answered approved at creation, now {r['state']}")
    for rid in sorted(ledger.approved):
        r = requests.get(rid)
        if r is None:
            continue  # Already reported.
        reviews = [rv for step in r["steps"] for rv in step["reviews"]]
        if r["state"] != "approved":
            out.append(f"request {rid}: its approval was acknowledged (200) but it is "
                       f"{r['state']}")
        if not any(rv["by"] == ADMIN and rv["decision"] == "approve" for rv in reviews):
            out.append(f"request {rid}: its approval was acknowledged (200) but the review "
                       f"by {ADMIN} is missing; reviews: {reviews}")
        if not r.get("grant_id"):
            out.append(f"request {rid}: approved, but names no grant")
    return out


def check_grants(grants: dict[str, Grant], live: list[dict], t0: float) -> list[str]:
    """Every grant reached a final state."""
    out = [f"{g.describe(t0)} did not reach a final state (attempts {g.attempts}, "
           f"last error {g.last_error!r})" for g in grants.values() if not g.final]
    out += [f"grant {v['id']} of {v['subject']} is {v['state']}" for v in live
            if v["id"] not in grants]
    return out


def check_memberships(observations: list[Observation], grants: dict[str, Grant],
                      role_of: dict[str, str], t0: float) -> tuple[list[str], float, str]:
    """Every observed membership lies within a grant of its user.

    Also returns the largest lag of a membership past the expiry of the user's latest grant,
    and where it was seen.
    """
    own: dict[str, list[Grant]] = collections.defaultdict(list)
    for g in grants.values():
        own[role_of[g.subject]].append(g)
    out = []
    max_lag, where = 0.0, "-"
    reported: set[str] = set()
    for obs in observations:
        for role in sorted(obs.members):
            # The grants that existed (give or take the slack) when the query ran.
            earlier = [g for g in own[role] if g.created - EARLY_SLACK <= obs.end]
            inside = any(obs.start <= g.access_until + LATE_SLACK for g in earlier)
            if not inside and role not in reported:
                reported.add(role)  # The first violation per user says enough.
                latest = max(earlier, key=lambda g: g.access_until, default=None)
                out.append(
                    f"{role} was a member of {ROLE} at {clock(obs.mid)} (+{obs.mid - t0:.1f}s)"
                    f", outside every grant of its user; the latest grant before: "
                    f"{latest.describe(t0) if latest else 'none'}")
            if earlier:
                lag = obs.mid - max(g.expiry for g in earlier)
                if lag > max_lag:
                    max_lag, where = lag, f"{role} at {clock(obs.mid)} (+{obs.mid - t0:.1f}s)"
    return out, max_lag, where


def late_access(observations: list[Observation], grants: dict[str, Grant],
                role_of: dict[str, str]) -> int:
    """How many memberships were seen more than LATE_SLACK past the expiry of the user's
    latest grant (allowed by `check_memberships` only when the revoke was confirmed later)."""
    own: dict[str, list[Grant]] = collections.defaultdict(list)
    for g in grants.values():
        own[role_of[g.subject]].append(g)
    late = 0
    for obs in observations:
        for role in obs.members:
            earlier = [g.expiry for g in own[role] if g.created - EARLY_SLACK <= obs.end]
            if earlier and obs.start > max(earlier) + LATE_SLACK:
                late += 1
    return late


@dataclass
class AuditLog:
    """What the audit log holds: the number of events of each kind, and of each kind per
    grant and per request."""

    kinds: collections.Counter = field(default_factory=collections.Counter)
    by_grant: dict[str, collections.Counter] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter))
    by_request: dict[str, collections.Counter] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter))


def audit(api: Api | Cluster, admin: str) -> tuple[dict, AuditLog]:
    """The verification result and the events, counted."""
    verify = api.get("/v1/audit/verify", admin)
    log = AuditLog()
    after = 0
    while True:
        page = api.get(f"/v1/audit?after={after}&limit=1000", admin)
        for e in page["events"]:
            event = e["event"]
            log.kinds[event["kind"]] += 1
            if event.get("grant"):
                log.by_grant[event["grant"]][event["kind"]] += 1
            if event.get("request"):
                log.by_request[event["request"]][event["kind"]] += 1
        if page.get("next_after") is None:
            return verify, log
        after = page["next_after"]


# The event that ends a grant, by the state it ends in (crates/domain/src/grant.rs,
# `finish_revoke`).
FINAL_EVENTS = {"grant_expired": "expired", "grant_revoked": "revoked", "grant_failed": "failed"}
OUTCOME_EVENTS = ["request_approved", "request_denied", "request_cancelled", "request_expired"]


def check_events(log: AuditLog, grants: dict[str, Grant], ledger: Ledger,
                 requests: dict[str, dict]) -> tuple[list[str], collections.Counter]:
    """Nothing was lost or done twice across the crashes, as the audit log tells it: every
    grant was issued once, activated at most once and ended exactly once, by the event of
    the state it ended in; every request was created once and reached at most one outcome,
    an acknowledged approval exactly one `request_approved`.

    Also returns how many grants have each number of final events.
    """
    out = []
    finals: collections.Counter = collections.Counter()
    for gid in sorted(set(grants) | set(log.by_grant)):
        kinds = log.by_grant.get(gid, collections.Counter())
        g = grants.get(gid)
        if g is None:
            out.append(f"grant {gid} is in the audit log ({dict(kinds)}) but not in the API")
            continue
        ends = {k: kinds[k] for k in FINAL_EVENTS if kinds[k]}
        finals[sum(ends.values())] += 1
        if sum(ends.values()) != 1:
            out.append(f"grant {gid} [{g.state}] has {sum(ends.values())} final events "
                       f"({ends or 'none'}); every grant ends exactly once")
        elif FINAL_EVENTS[next(iter(ends))] != g.state:
            out.append(f"grant {gid} is {g.state} but its final event is {next(iter(ends))}")
        if kinds["grant_issued"] != 1:
            out.append(f"grant {gid} has {kinds['grant_issued']} grant_issued events")
        if kinds["grant_activated"] > 1:
            out.append(f"grant {gid} has {kinds['grant_activated']} grant_activated events")
    for rid in sorted(ledger.created):
        if rid not in requests:
            continue  # Already reported.
        kinds = log.by_request.get(rid, collections.Counter())
        if kinds["request_created"] != 1:
            out.append(f"request {rid} has {kinds['request_created']} request_created events")
        outcomes = {k: kinds[k] for k in OUTCOME_EVENTS if kinds[k]}
        if sum(outcomes.values()) > 1:
            out.append(f"request {rid} reached {sum(outcomes.values())} outcomes: {outcomes}")
        if rid in ledger.approved and kinds["request_approved"] != 1:
            out.append(f"request {rid}: its approval was acknowledged but it has "
                       f"{kinds['request_approved']} request_approved events")
    return out, finals


# --- The run ----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--bin", default="target/debug/countersign", help="the server binary")
    p.add_argument("--pg-url", default=os.environ.get("COUNTERSIGN_TEST_PG_URL"),
                   help="URL of a PostgreSQL role with CREATEROLE "
                        "(default: $COUNTERSIGN_TEST_PG_URL)")
    p.add_argument("--seconds", type=float, default=60, help="how long the load runs")
    p.add_argument("--kills", type=int, default=5,
                   help="at least this many kills (the load runs longer if needed)")
    p.add_argument("--kill-min", type=float, default=3, help="shortest time between kills")
    p.add_argument("--kill-max", type=float, default=8, help="longest time between kills")
    p.add_argument("--workers", type=int, default=4, help="concurrent load workers")
    p.add_argument("--users", type=int, default=8, help="requesting users (and login roles)")
    p.add_argument("--settle", type=float, default=120,
                   help="how long to wait for every grant to reach a final state")
    p.add_argument("--linger", type=float, default=RECONCILE_INTERVAL + 3,
                   help="how long to keep watching memberships once every grant is final "
                        "(longer than the reconciliation interval, to see late repairs)")
    p.add_argument("--wait-for-bin", type=float, default=1800,
                   help="how long to wait for the binary to be built")
    p.add_argument("--seed", type=int, help="random seed (a random one is printed)")
    p.add_argument("--keep", action="store_true",
                   help="keep the temporary directory (and the store's database) on success")
    p.add_argument("--replicas", type=int, default=1,
                   help="server processes sharing one store; above 1 needs --store postgres")
    p.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite",
                   help="the servers' own store: a SQLite file in the temporary directory, or "
                        "a new database on the PostgreSQL server of --pg-url")
    args = p.parse_args()
    if args.users < 1 or args.workers < 1 or not 0 < args.kill_min <= args.kill_max:
        p.error("--users and --workers must be at least 1, and 0 < --kill-min <= --kill-max")
    if not 1 <= args.replicas <= 8:
        p.error("--replicas must be between 1 and 8")
    if args.replicas > 1 and args.store != "postgres":
        p.error("--replicas above 1 needs --store postgres")
    return args


def wait_for_binary(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    announced = float("-inf")
    while not (path.is_file() and os.access(path, os.X_OK)):
        if time.monotonic() > deadline:
            raise SetupError(f"{path} did not appear within {timeout:.0f}s")
        if time.monotonic() - announced > 60:
            print(f"waiting for {path} to be built…", flush=True)
            announced = time.monotonic()
        time.sleep(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CrashTest:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.seed = args.seed if args.seed is not None else random.randrange(1 << 32)
        self.rng = random.Random(self.seed)
        self.pg = Postgres(args.pg_url)
        self.users = [user_email(n) for n in range(1, args.users + 1)]
        self.role_of = {user_email(n): db_user(n) for n in range(1, args.users + 1)}
        self.workdir = Path(tempfile.mkdtemp(prefix="countersign-crash-"))
        self.apis = [Api(free_port()) for _ in range(args.replicas)]
        self.api = Cluster(self.apis)
        self.ledger = Ledger()
        self.observations: list[Observation] = []
        self.monitor_errors: list[str] = []
        self.killer_problems: list[str] = []
        self.stop_load = threading.Event()
        self.stop_killer = threading.Event()
        self.stop_monitor = threading.Event()
        self.violations: list[str] = []
        self.servers: list[Server] = []
        self.tokens: dict[str, str] = {}
        # The PostgreSQL database of the servers' own store (--store postgres).
        self.store_db: str | None = None
        # The runs' end states and re-runs, for the summary.
        self.run_states: collections.Counter = collections.Counter()

    @property
    def replicated(self) -> bool:
        return self.args.replicas > 1

    def setup(self, binary: Path) -> None:
        try:
            self.pg.reset_roles(self.args.users)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            raise SetupError(f"cannot set up the PostgreSQL roles: {e}") from e
        env = dict(os.environ, CRASH_PG_URL=self.args.pg_url, NO_COLOR="1")
        env.setdefault("RUST_LOG", "info")
        if self.args.store == "postgres":
            # A database of its own, beside the one the connector grants roles in.
            name = f"crash_store_{self.seed:08x}_{os.getpid()}"
            try:
                env["CRASH_STORE_URL"] = self.pg.create_database(name)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                raise SetupError(f"cannot create the store's database (does the role have "
                                 f"CREATEDB?): {e}") from e
            self.store_db = name
            database = 'env("CRASH_STORE_URL")'
        else:
            database = json.dumps(f"sqlite://{self.workdir / 'countersign.db'}")
        configs = []
        for i, api in enumerate(self.apis, 1):
            # One configuration for every replica; only `listen` differs.
            name = f"countersign-{i}.hcl" if self.replicated else "countersign.hcl"
            configs.append(write_config(self.workdir / name, api.port, self.args.users,
                                        database))
        for user in self.users + [ADMIN]:
            self.tokens[user] = run_tool(
                [str(binary), "token", "create", "--config", str(configs[0]), "--user", user],
                env, self.workdir)
        if self.replicated:
            self.servers = [Server(binary, config, self.workdir, env, f"replica {i}",
                                   f"server-{i}.log") for i, config in enumerate(configs, 1)]
        else:
            self.servers = [Server(binary, configs[0], self.workdir, env)]

    def died(self) -> str | None:
        """Which server exited by itself, with its status, if one did."""
        for server in self.servers:
            status = server.exit_status()
            if status not in (None, -signal.SIGKILL):
                return f"{server.name} exited by itself with status {status}"
        return None

    def kills(self) -> int:
        return sum(s.kills for s in self.servers)

    def run(self) -> int:
        args, admin = self.args, self.tokens[ADMIN]
        replicas = (f", {args.replicas} replicas on a PostgreSQL store" if self.replicated
                    else f", its store on {args.store}")
        print(f"crash test: seed {self.seed}, {args.workers} workers, {args.users} users, "
              f"{args.seconds:.0f}s of load, at least {args.kills} kills{replicas}; "
              f"in {self.workdir}", flush=True)
        for server in self.servers:
            server.start()
        for server, api in zip(self.servers, self.apis):
            if not api.wait_ready(30):
                raise SetupError(f"{server.name} did not become ready\n{server.log_tail()}")

        monitor_thread = threading.Thread(
            target=monitor, args=(self.pg, self.observations, self.monitor_errors,
                                  self.stop_monitor), daemon=True)
        workers = [threading.Thread(
            target=load_worker, args=(self.apis, self.tokens, self.users, self.ledger,
                                      self.stop_load, random.Random(self.rng.random()),
                                      self.replicated),
            daemon=True) for _ in range(args.workers)]
        workers.append(threading.Thread(
            target=run_worker, args=(self.apis, self.tokens, self.users, self.ledger,
                                     self.stop_load, random.Random(self.rng.random())),
            daemon=True))
        killer_thread = threading.Thread(
            target=killer, args=(self.servers, self.apis, self.stop_killer,
                                 random.Random(self.rng.random()), args.kill_min,
                                 args.kill_max, self.killer_problems), daemon=True)
        t0 = time.time()
        for t in [monitor_thread, *workers, killer_thread]:
            t.start()

        # The load runs until its time is up and the killer has killed often enough.
        while (time.time() - t0 < args.seconds or self.kills() < args.kills) \
                and self.died() is None and not self.killer_problems:
            time.sleep(0.2)
        self.stop_killer.set()
        killer_thread.join()
        self.stop_load.set()
        for t in workers:
            t.join()
        load_end = time.time()

        # The servers run on until no grant is live, then a little longer for late repairs.
        settled = False
        if self.died() is None and all(api.wait_ready(30) for api in self.apis):
            deadline = time.time() + args.settle
            while not settled and time.time() < deadline and self.died() is None:
                settled = not live_grants(self.api, admin)
                if not settled:
                    time.sleep(1)
            if settled:
                self.stop_monitor.wait(args.linger)
        self.stop_monitor.set()
        monitor_thread.join()
        settle_end = time.time()

        self.violations += self.killer_problems
        if self.died() is not None:
            self.violations.append(f"{self.died()}")
            return self.finish(t0, load_end, settle_end, {}, None, AuditLog())
        if not settled:
            self.violations.append(
                f"grants were still live {args.settle:.0f}s after the load stopped")
        requests = fetch_requests(self.api, admin, list(self.ledger.created))
        self.violations += check_requests(self.ledger, requests)
        grants, cut = fetch_grants(self.api, admin, self.users, requests)
        self.violations += [f"{u} has 500 grants or more, the list may be cut: run shorter "
                            "or with more users" for u in cut]
        self.violations += check_grants(grants, live_grants(self.api, admin), t0)
        found, lag, lag_where = check_memberships(self.observations, grants, self.role_of, t0)
        self.violations += found
        if not any(o.members for o in self.observations):
            self.violations.append("the monitor never saw a membership: nothing was granted")
        found, self.run_states = check_runs(self.api, self.ledger, self.tokens, self.users,
                                            self.workdir / ACTION_LOG, args.settle)
        self.violations += found
        if not self.ledger.answered:
            self.violations.append("no run was answered: the runs load did nothing")
        verify, log = audit(self.api, admin)
        if not verify.get("ok"):
            self.violations.append(f"GET /v1/audit/verify: {verify}")
        finals = None
        if self.replicated:
            found, finals = check_events(log, grants, self.ledger, requests)
            self.violations += found
            # Every replica verifies the same chain.
            for server, api in zip(self.servers, self.apis):
                other = Cluster([api]).get("/v1/audit/verify", admin)
                if not other.get("ok") or (other.get("checked"), other.get("head")) != (
                        verify.get("checked"), verify.get("head")):
                    self.violations.append(f"GET /v1/audit/verify on {server.name}: {other}, "
                                           f"first answer: {verify}")
        return self.finish(t0, load_end, settle_end, grants, (lag, lag_where, verify), log,
                           finals)

    def finish(self, t0: float, load_end: float, settle_end: float, grants: dict[str, Grant],
               results: tuple[float, str, dict] | None, log: AuditLog,
               finals: collections.Counter | None = None) -> int:
        try:
            left = self.pg.members()
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            self.violations.append(f"cannot read the final memberships: {e}")
        else:
            if left:
                self.violations.append(f"memberships of {ROLE} remain at the end: "
                                       f"{sorted(left)}")
        if len(self.monitor_errors) > len(self.observations) // 10:
            self.violations.append(f"the monitor failed {len(self.monitor_errors)} times; "
                                   f"first: {self.monitor_errors[0]}")
        self.violations += [f"unexpected answer: {text}" for text in self.ledger.unexpected[:20]]
        for server in self.servers:
            server.stop()
        self.print_summary(t0, load_end, settle_end, grants, results, log, finals)

        if self.violations:
            print(f"\nFAILED: {len(self.violations)} violation(s):")
            for v in self.violations:
                print(f"  - {v}")
            for server in self.servers:
                print(f"\nlast lines of {server.log_path}:\n{server.log_tail()}")
            kept = f" and the store's database {self.store_db}" if self.store_db else ""
            print(f"kept {self.workdir}{kept} (seed {self.seed})")
            return 1
        print("\nOK: every check passed")
        if self.args.keep:
            kept = f" and the store's database {self.store_db}" if self.store_db else ""
            print(f"kept {self.workdir}{kept}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.pg.drop_roles(self.args.users)
            if self.store_db:
                self.pg.drop_database(self.store_db)
        return 0

    def print_summary(self, t0: float, load_end: float, settle_end: float,
                      grants: dict[str, Grant], results: tuple[float, str, dict] | None,
                      log: AuditLog, finals: collections.Counter | None) -> None:
        ledger, kinds = self.ledger, log.kinds
        states = collections.Counter(g.state for g in grants.values())
        delays = [g.ended - g.expires for g in grants.values()
                  if g.state == "expired" and g.ended is not None and g.expires is not None]
        covered = sum(c.covered for c in ledger.created.values())
        members = sum(len(o.members) for o in self.observations)
        if self.replicated:
            kills = f"{self.kills()} (" + ", ".join(
                f"{s.name}: {s.kills}, started {s.starts} times" for s in self.servers) + ")"
        else:
            server = self.servers[0]
            kills = f"{server.kills} (the server was started {server.starts} times)"
        lines = [
            ("kills", kills),
            ("time", f"{load_end - t0:.1f}s of load, then {settle_end - load_end:.1f}s "
                     "to settle and watch"),
            ("requests", f"{len(ledger.created)} acknowledged creates ({covered} answered by "
                         f"an active grant), {len(ledger.approved)} acknowledged approvals, "
                         f"{len(ledger.unconfirmed)} approvals whose answer was lost"),
            ("no answer", ", ".join(f"{n} {what}" for what, n in ledger.unreachable.items())
             or "none"),
        ]
        lines.append(("runs", f"{len(ledger.runs)} acknowledged starts, "
                              f"{len(ledger.answered)} answered: " + ", ".join(
                                  f"{n} {s}" for s, n in sorted(self.run_states.items()))))
        if self.replicated:
            lines.append(("lost creates", ", ".join(
                f"{n} {what}" for what, n in sorted(ledger.retries.items())) or "none"))
        lines += [
            ("grants", f"{len(grants)}: " + ", ".join(f"{n} {s}" for s, n in
                                                      sorted(states.items()))),
            ("monitor", f"{len(self.observations)} observations, {members} memberships seen, "
                        f"{len(self.monitor_errors)} errors"),
            ("revoke delay", f"max {max(delays, default=0):.2f}s from expires_at to ended_at"),
        ]
        if results is not None:
            lag, where, verify = results
            lines += [
                ("max lag", f"{lag:.2f}s of membership past expiry ({where})"),
                ("audit", f"ok={verify.get('ok')}, {verify.get('checked')} events; "
                          + ", ".join(f"{k} {kinds[k]}" for k in (
                              "grant_drift", "grant_repaired", "grant_repair_failed",
                              "grant_activation_failed", "grant_revoke_failed"))),
            ]
        if self.replicated and results is not None:
            late = late_access(self.observations, grants, self.role_of)
            lines.append(("late access", f"{late} memberships seen more than {LATE_SLACK:.0f}s "
                                         "past expires_at (their revoke confirmed later)"))
        if finals is not None:
            lines.append(("final events", ", ".join(
                f"{n} grants with {count}" for count, n in sorted(finals.items()))
                or "no grant"))
        print()
        for name, text in lines:
            print(f"{name + ':':<14}{text}")


def main() -> int:
    args = parse_args()
    if not args.pg_url:
        print("skipping: no PostgreSQL (set COUNTERSIGN_TEST_PG_URL)")
        return 0
    binary = Path(args.bin).resolve()
    wait_for_binary(binary, args.wait_for_bin)
    test = CrashTest(args)
    try:
        test.setup(binary)
        return test.run()
    finally:
        for event in (test.stop_killer, test.stop_load, test.stop_monitor):
            event.set()
        for server in test.servers:
            server.stop()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SetupError as e:
        print(f"cannot run the crash test: {e}", file=sys.stderr)
        sys.exit(2)
