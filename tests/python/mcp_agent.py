"""The agent gate (issue 18) through the official MCP Python SDK (`mcp` on PyPI).

An agent connects to Countersign's /mcp with its application token, as a real agent host
would, and a human decides through the REST API. Run by the Rust test
`rule_38_an_agent_asks_waits_and_claims_through_the_official_mcp_client`:

    mcp_agent.py main <base_url> <agent_token> <reviewer_token> <other_app_token>
        the whole flow; prints {"late": <id>} for the next phase
    mcp_agent.py late <base_url> <agent_token> <id>
        after the server's clock passed claim_within: the claim fails

Exits non-zero with a message on the first thing that is not as issue 18 says.
"""

import asyncio
import json
import sys
import urllib.error
import urllib.request

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

RESOURCE = "deploy-action"
EXPECTED_TOOLS = {
    "list_resources",
    "request_access",
    "request_action_approval",
    "get_request",
    "claim_approval",
    "cancel_request",
}
# No tool may decide, review, assign, revoke or comment, whatever it is called.
FORBIDDEN_WORDS = ("approve", "deny", "review", "assign", "revoke", "decide", "comment")


def check(ok, what):
    if not ok:
        raise SystemExit(f"FAILED: {what}")


def rest(base, token, method, path, body=None):
    """One REST call as a person (the human side of the flow)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        base + path,
        data=data,
        method=method,
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, json.loads(res.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def structured(result):
    """A tool result's JSON (the server sends it as structured content and as text)."""
    if result.structured_content is not None:
        return result.structured_content
    return json.loads(result.content[0].text)


class Agent:
    def __init__(self, session):
        self.session = session

    async def call(self, name, arguments):
        result = await self.session.call_tool(name, arguments)
        return bool(result.is_error), structured(result)


async def connected(base, token, body):
    client = httpx2.AsyncClient(
        headers={"authorization": f"Bearer {token}"},
        timeout=httpx2.Timeout(90.0),
    )
    async with client:
        async with streamable_http_client(f"{base}/mcp", http_client=client) as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                check(init.server_info.name == "countersign", f"server info: {init.server_info}")
                check(init.instructions and "never approve" in init.instructions, "instructions")
                return await body(Agent(session))


async def main_flow(base, agent_token, reviewer_token, other_token):
    async def flow(agent):
        # The tools: exactly the six, none of which can decide anything.
        tools = (await agent.session.list_tools()).tools
        names = {t.name for t in tools}
        check(names == EXPECTED_TOOLS, f"tools: {sorted(names)}")
        for t in tools:
            check(
                not any(w in t.name for w in FORBIDDEN_WORDS) or t.name == "claim_approval",
                f"a tool that could decide: {t.name}",
            )
            check(t.input_schema.get("additionalProperties") is False, f"{t.name} schema open")

        err, listed = await agent.call("list_resources", {})
        check(not err, f"list_resources: {listed}")
        kinds = {r["name"]: r["kind"] for r in listed["resources"]}
        check(kinds.get(RESOURCE) == "action", f"catalog: {kinds}")

        # Ask for one exact action; a human approves it through the API while the agent waits.
        arguments = {"service": "api", "version": "2.3.1", "canary": {"percent": 5}}
        err, asked = await agent.call(
            "request_action_approval",
            {"resource": RESOURCE, "tool": "deploy", "arguments": arguments, "reason": "hotfix"},
        )
        check(not err and asked["state"] == "pending", f"asked: {asked}")
        rid = asked["id"]
        digest = asked["action"]["digest"]
        status, seen = rest(base, reviewer_token, "GET", f"/v1/requests/{rid}")
        check(status == 200 and seen["action"]["digest"] == digest, f"reviewer sees: {seen}")

        async def approve_later():
            await asyncio.sleep(1.5)
            return await asyncio.to_thread(
                rest, base, reviewer_token, "POST", f"/v1/requests/{rid}/reviews",
                {"decision": "approve", "comment": "go"},
            )

        waited, (status, _) = await asyncio.gather(
            agent.call("get_request", {"id": rid, "wait_seconds": 30}), approve_later()
        )
        check(status == 200, "the human's approval")
        err, outcome = waited
        check(not err and outcome["state"] == "approved", f"waited: {outcome}")
        check(outcome["decided_by"] == "bob@example.com", f"decided by: {outcome}")
        check(outcome["comment"] == "go", f"comment: {outcome}")

        err, claimed = await agent.call("claim_approval", {"id": rid})
        check(not err, f"claim: {claimed}")
        check(claimed["arguments"] == arguments and claimed["tool"] == "deploy", f"claimed: {claimed}")
        check(claimed["digest"] == digest, "the digest")
        err, again = await agent.call("claim_approval", {"id": rid})
        check(err and again["error"]["status"] == 409, f"second claim: {again}")

        # A denied action cannot be claimed.
        err, denied = await agent.call(
            "request_action_approval",
            {"resource": RESOURCE, "tool": "drop_table", "arguments": {"table": "orders"}, "reason": "cleanup"},
        )
        check(not err, f"asked: {denied}")
        status, _ = rest(
            base, reviewer_token, "POST", f"/v1/requests/{denied['id']}/reviews",
            {"decision": "deny", "comment": "never"},
        )
        check(status == 200, "the human's denial")
        err, seen = await agent.call("get_request", {"id": denied["id"]})
        check(not err and seen["state"] == "denied" and seen["comment"] == "never", f"denied: {seen}")
        err, refused = await agent.call("claim_approval", {"id": denied["id"]})
        check(err and refused["error"]["status"] == 409, f"claim of a denied action: {refused}")

        # Cancelling: the agent withdraws what it asked.
        err, asked = await agent.call(
            "request_action_approval",
            {"resource": RESOURCE, "tool": "noop", "arguments": [], "reason": "changed my mind"},
        )
        err, cancelled = await agent.call("cancel_request", {"id": asked["id"]})
        check(not err and cancelled["state"] == "cancelled", f"cancel: {cancelled}")

        # Bad input: an unknown argument is a protocol error, and nothing is created.
        try:
            await agent.session.call_tool(
                "request_action_approval",
                {"resource": RESOURCE, "tool": "t", "arguments": {}, "reason": "r", "approved": True},
            )
            check(False, "an unknown argument was accepted")
        except MCPError as e:
            check(e.code == -32602 and "approved" in e.message, f"unknown argument: {e.message}")
        try:
            await agent.session.call_tool("approve_request", {"id": rid})
            check(False, "an unknown tool was called")
        except MCPError as e:
            check(e.code == -32602, f"unknown tool: {e.message}")
        nested = 1
        for _ in range(40):
            nested = [nested]
        err, deep = await agent.call(
            "request_action_approval",
            {"resource": RESOURCE, "tool": "t", "arguments": nested, "reason": "r"},
        )
        check(err and deep["error"]["status"] == 422, f"nested arguments: {deep}")
        err, big = await agent.call(
            "request_action_approval",
            {"resource": RESOURCE, "tool": "t", "arguments": {"blob": "x" * 20000}, "reason": "r"},
        )
        check(err and big["error"]["status"] in (413, 422), f"oversized arguments: {big}")

        # What another app created is not the agent's to read or claim.
        err, hidden = await agent.call("get_request", {"id": "00000000-0000-0000-0000-000000000000"})
        check(err and hidden["error"]["status"] == 404, f"unknown request: {hidden}")

        # One more, approved now, for the claim after claim_within (phase two).
        err, late = await agent.call(
            "request_action_approval",
            {"resource": RESOURCE, "tool": "deploy", "arguments": {"n": 2}, "reason": "later"},
        )
        status, _ = rest(
            base, reviewer_token, "POST", f"/v1/requests/{late['id']}/reviews", {"decision": "approve"}
        )
        check(status == 200, "approval of the late one")
        return {"first": rid, "late": late["id"]}

    out = await connected(base, agent_token, flow)

    async def other_app(agent):
        err, seen = await agent.call("get_request", {"id": out["first"]})
        check(err and seen["error"]["status"] == 404, f"another app reads: {seen}")
        err, claimed = await agent.call("claim_approval", {"id": out["late"]})
        check(err and claimed["error"]["status"] == 404, f"another app claims: {claimed}")

    await connected(base, other_token, other_app)

    # A malformed MCP message and a missing token: clear HTTP errors.
    async with httpx2.AsyncClient(timeout=10) as raw:
        headers = {
            "authorization": f"Bearer {agent_token}",
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
        }
        res = await raw.post(f"{base}/mcp", content=b"{not json", headers=headers)
        check(400 <= res.status_code < 500, f"malformed message: {res.status_code} {res.text}")
        res = await raw.post(f"{base}/mcp", content=b"{}", headers={"content-type": "application/json"})
        check(res.status_code == 401, f"no token: {res.status_code}")
        check(res.headers.get("www-authenticate", "").lower().startswith("bearer"), "WWW-Authenticate")
    print(json.dumps(out))


async def late_flow(base, agent_token, rid):
    async def flow(agent):
        err, refused = await agent.call("claim_approval", {"id": rid})
        check(err and refused["error"]["status"] == 409, f"claim after claim_within: {refused}")
        check("could be claimed until" in refused["error"]["message"], f"{refused}")
        print(json.dumps({"late_refused": True}))

    await connected(base, agent_token, flow)


if __name__ == "__main__":
    if sys.argv[1] == "main":
        asyncio.run(main_flow(*sys.argv[2:6]))
    elif sys.argv[1] == "late":
        asyncio.run(late_flow(*sys.argv[2:5]))
    else:
        raise SystemExit(f"unknown phase {sys.argv[1]}")
