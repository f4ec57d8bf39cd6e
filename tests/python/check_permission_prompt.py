"""Runs the shipped Claude Code permission-prompt tool (examples/agents/permission_prompt.py)
as Claude Code would: an MCP server over stdio, called by the official MCP Python SDK. The Rust
test `issue_18_the_shipped_permission_prompt_tool_allows_only_what_a_person_approved` decides
on the Countersign side meanwhile: it approves `make deploy` and denies `rm -rf /`.

    check_permission_prompt.py <base_url> <app_token>
"""

import asyncio
import json
import pathlib
import sys

from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "agents" / "permission_prompt.py"


def check(ok, what):
    if not ok:
        raise SystemExit(f"FAILED: {what}")


async def main(base, token):
    server = StdioServerParameters(
        command=sys.executable,
        args=[str(EXAMPLE)],
        env={
            "COUNTERSIGN_URL": base,
            "COUNTERSIGN_TOKEN": token,
            "COUNTERSIGN_RESOURCE": "deploy-action",
        },
    )
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = {t.name for t in (await session.list_tools()).tools}
            check(tools == {"permission_prompt"}, f"tools: {tools}")
            answers = {}
            for command in ["make deploy", "rm -rf /"]:
                result = await session.call_tool(
                    "permission_prompt",
                    {"tool_name": "Bash", "input": {"command": command}, "tool_use_id": "t1"},
                )
                check(not result.is_error, f"{command}: {result}")
                answers[command] = json.loads(result.content[0].text)
            check(
                answers["make deploy"] == {"behavior": "allow", "updatedInput": {"command": "make deploy"}},
                f"allowed: {answers['make deploy']}",
            )
            denied = answers["rm -rf /"]
            check(denied["behavior"] == "deny" and "Denied" in denied["message"], f"denied: {denied}")
            print(json.dumps(answers))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:3]))
