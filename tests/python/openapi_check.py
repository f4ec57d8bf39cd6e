"""Checks the server's OpenAPI document with the ecosystem's own tools (hardening item 4).

1. Fetches `GET /v1/openapi.json` from a running server and validates it with
   `openapi-spec-validator` (every error is printed; any error fails the run).
2. Runs Schemathesis against the same server with a bearer token, with its default checks
   (every check it ships), in every phase (examples, coverage, fuzzing, stateful), bounded by
   `--max-examples` per operation and a fixed seed, so that a run is repeatable.

The server must be a throwaway one: Schemathesis creates, reviews, cancels and revokes. So that
its requests reach past "unknown resource" and "no such request", the script reads what the
server holds (resources, requests, grants, with the token given, which should be an admin's)
and hands those names and ids to Schemathesis as dictionaries that it draws from for the
`resource` body key and the `{id}` path parameters, alongside the values it generates itself.

Usage: openapi_check.py BASE_URL TOKEN [--max-examples N] [--seed S]
Prints `openapi: 0 errors` and Schemathesis's summary; exits non-zero on any failure.
"""

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request

from openapi_spec_validator import OpenAPIV31SpecValidator


def fetch(base, path, token=None):
    req = urllib.request.Request(base + path)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=30) as res:
        return json.load(res)


def validate(spec):
    errors = list(OpenAPIV31SpecValidator(spec).iter_errors())
    for e in errors:
        where = "/".join(str(p) for p in e.absolute_path)
        print(f"openapi error at {where or '(root)'}: {e.message}")
    print(f"openapi: {len(errors)} errors")
    return not errors


def toml_list(values):
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def config(base, token):
    """A schemathesis.toml that lets generated requests name what the server holds."""
    catalog = fetch(base, "/v1/resources", token)["resources"]
    resources = [r["name"] for r in catalog]
    fields = sorted({f["name"] for r in catalog for f in r["fields"]}) or ["none"]
    requests = [r["id"] for r in fetch(base, "/v1/requests?limit=500", token)["requests"]]
    grants = [g["id"] for g in fetch(base, "/v1/grants?limit=500", token)["grants"]]
    if not (resources and requests and grants):
        sys.exit(
            "the server must hold at least one resource, request and grant "
            f"(found {len(resources)}, {len(requests)}, {len(grants)})"
        )
    print(f"dictionaries: {len(resources)} resources, {len(requests)} requests, {len(grants)} grants")
    return f"""
[dictionaries.resources]
values = {toml_list(resources)}

[dictionaries.fields]
values = {toml_list(fields)}

[dictionaries.requests]
values = {toml_list(requests)}

[dictionaries.grants]
values = {toml_list(grants)}

[parameters]
"body.resource" = {{ dictionary = "resources", probability = 0.8 }}

[[operations]]
include-path-regex = "^/v1/requests/\\\\{{id\\\\}}"
parameters = {{ "path.id" = {{ dictionary = "requests", probability = 0.8 }} }}

[[operations]]
include-path-regex = "^/v1/grants/\\\\{{id\\\\}}"
parameters = {{ "path.id" = {{ dictionary = "grants", probability = 0.8 }} }}

[[operations]]
include-path = "/v1/resources/{{name}}/fields/{{field}}/options"
parameters = {{ "path.name" = {{ dictionary = "resources", probability = 0.8 }}, "path.field" = {{ dictionary = "fields", probability = 0.8 }} }}

# A list's `cursor` must be one the server gave out for that list, caller and filters (a check
# over its bytes that no schema can state; docs/api.md, "Pages and cursors"), so a generated
# cursor that fits the schema's pattern is refused with 400.
[[operations]]
# (One regex on the name: a path regex and a method regex in one entry select either.)
include-name-regex = "^GET /v1/(requests|grants|runs|audit)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429", "5xx"]

# A write that fits the schema can still break a rule no schema can state, because it depends
# on the configuration, the object's state or the caller, and the API answers those with 422
# (docs/api.md): a duration outside the resource's closed set or above its maximum, a field the
# resource does not declare, a workflow nobody but the requester could complete, an admin
# cancelling or revoking without a reason, assigning to a principal nobody configured, a second
# update with nothing in it. So writes may answer 422 to schema-valid data; the other checks,
# and this one's other statuses, stay as Schemathesis ships them. Reads never answer 422.
[[operations]]
include-method-regex = "^(POST|PATCH)$"
# A body past 64 KiB is refused with 413 before it is read (documented on every write);
# Schemathesis's list of refusals lacks 413, and its negative bodies sometimes pass 64 KiB.
checks.negative_data_rejection.expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
"""


def schemathesis_main(argv):
    """Runs Schemathesis's command line in this process and returns its exit code.

    In this process rather than as `bin/schemathesis`, to work around a CPython 3.11 bug
    (gh-106905): `ast.parse` called deep in the stack can raise `SystemError: AST constructor
    recursion depth mismatch`, and Hypothesis calls it only to name a lambda in a strategy's
    description. A lambda whose source cannot be parsed gets a placeholder name instead of
    aborting the operation's tests; nothing about what is generated or checked changes.
    """
    from hypothesis.internal import lambda_sources

    describe = lambda_sources._lambda_description

    def tolerant(f, *args, **kwargs):
        try:
            return describe(f, *args, **kwargs)
        except SystemError:
            return "lambda: <source not parsed>"

    lambda_sources._lambda_description = tolerant
    from schemathesis.cli import schemathesis

    try:
        schemathesis.main(args=argv, prog_name="schemathesis")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("token")
    ap.add_argument("--max-examples", type=int, default=100)
    ap.add_argument("--seed", type=int, default=20261207)
    ap.add_argument("--workers", default="2")
    args = ap.parse_args()
    base = args.base.rstrip("/")

    spec = fetch(base, "/v1/openapi.json")
    ok = validate(spec)

    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "schemathesis.toml")
        with open(cfg, "w") as f:
            f.write(config(base, args.token))
        argv = [
            "--config-file",
            cfg,
            "--no-color",
            "run",
            base + "/v1/openapi.json",
            "--header",
            "Authorization: Bearer " + args.token,
            "--max-examples",
            str(args.max_examples),
            "--seed",
            str(args.seed),
            "--workers",
            args.workers,
            "--generation-database",
            "none",
            "--request-timeout",
            "20",
            "--report",
            "junit",
            "--report-dir",
            tmp,
        ]
        sys.stdout.flush()
        code = schemathesis_main(argv)
        sys.stdout.flush()
    print(f"schemathesis: exit {code} after {time.monotonic() - started:.0f} s")
    if code != 0:
        ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
