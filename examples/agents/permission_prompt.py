"""A permission-prompt tool for Claude Code (docs/agents.md): every tool call Claude Code would
ask you about is sent to Countersign as an action approval, and runs only once a person (or a
policy) approved exactly that call.

    claude -p "deploy the hotfix" \
      --mcp-config countersign-gate.json \
      --permission-prompt-tool mcp__countersign_gate__permission_prompt

where countersign-gate.json starts this file over stdio with COUNTERSIGN_URL,
COUNTERSIGN_TOKEN (an app token: the agent never decides) and COUNTERSIGN_RESOURCE (a resource
of kind "action").
"""

import json
import os

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer

from gate import NotApproved, connect, gated

server = MCPServer("countersign_gate")


@server.tool()
async def permission_prompt(tool_name: str, input: dict, tool_use_id: str | None = None) -> str:
    """Asks Countersign whether Claude Code may run this tool call, and waits for the answer."""
    client, endpoint = connect()
    async with client, streamable_http_client(endpoint, http_client=client) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            try:
                approved = await gated(
                    session,
                    os.environ.get("COUNTERSIGN_RESOURCE", "agent-actions"),
                    tool_name,
                    input,
                    f"Claude Code wants to run {tool_name}",
                )
            except NotApproved as why:
                return json.dumps({"behavior": "deny", "message": f"Countersign: {why}"})
    # Exactly the input that was approved, whatever the model sends next.
    return json.dumps({"behavior": "allow", "updatedInput": approved})


if __name__ == "__main__":
    server.run()
