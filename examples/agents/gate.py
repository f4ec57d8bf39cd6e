"""Put an agent's risky action behind Countersign (docs/agents.md), with the official MCP
Python SDK (`pip install mcp==2.3.0`).

    COUNTERSIGN_URL=http://127.0.0.1:8080 COUNTERSIGN_TOKEN=cs_... \
        python gate.py agent-actions deploy '{"service": "api"}' "ship the hotfix"

asks a person to approve `deploy` with exactly those arguments, waits for the decision, and
prints the action it may now run (exit 0), or why it may not (exit 1). An agent calls
`gated(...)` before each risky tool call and runs only what it returns.
"""

import asyncio
import json
import os
import sys

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client


class NotApproved(Exception):
    """The action was denied, cancelled or expired: do not run it."""


def _json(result):
    if result.structured_content is not None:
        return result.structured_content
    return json.loads(result.content[0].text)


async def gated(session, resource, tool, arguments, reason, *, give_up_after=3600):
    """Asks for approval of one exact action and waits for it. Returns the approved
    arguments (run exactly these), or raises NotApproved."""
    asked = await session.call_tool(
        "request_action_approval",
        {"resource": resource, "tool": tool, "arguments": arguments, "reason": reason},
    )
    request = _json(asked)
    if asked.is_error:
        raise NotApproved(request["error"]["message"])
    waited = 0
    while request["state"] == "pending" and waited < give_up_after:
        # Tell the user a person is deciding; get_request waits up to 60 s for the outcome.
        print(f"waiting for a person: {request['status']} ({request['portal_url']})", file=sys.stderr)
        request = _json(await session.call_tool("get_request", {"id": request["id"], "wait_seconds": 60}))
        waited += 60
    if request["state"] != "approved":
        raise NotApproved(f"{request['status']}")
    claimed = await session.call_tool("claim_approval", {"id": request["id"]})
    action = _json(claimed)
    if claimed.is_error:
        raise NotApproved(action["error"]["message"])
    return action["arguments"]


def connect(url=None, token=None):
    """An MCP session with Countersign's /mcp, as the token's identity."""
    url = url or os.environ["COUNTERSIGN_URL"]
    token = token or os.environ["COUNTERSIGN_TOKEN"]
    client = httpx2.AsyncClient(
        headers={"authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(90.0)
    )
    return client, f"{url.rstrip('/')}/mcp"


async def main(resource, tool, arguments, reason):
    client, endpoint = connect()
    async with client, streamable_http_client(endpoint, http_client=client) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            try:
                approved = await gated(session, resource, tool, json.loads(arguments), reason)
            except NotApproved as why:
                print(f"not approved: {why}", file=sys.stderr)
                return 1
            # Here the agent runs `tool` with `approved`, and nothing else.
            print(json.dumps({"tool": tool, "arguments": approved}))
            return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(*sys.argv[1:5])))
