"""The MCP client of the stdio tests: the official Python SDK's own client, driving
`tollgate mcp -- python3 upstream.py`.

Usage: client.py SCENARIO TOLLGATE CONFIG UPSTREAM_PY

Prints one JSON object a line, for the test to check. The test decides each access request
from its webhook alert, by the `path` argument: `approve-me` and `slow` are approved (`slow`
after a wait longer than this client's timeout), `deny-me` is denied, and for `cancel-me` the
test writes a line on this script's stdin, on which it cancels the call.
"""

import json
import sys

import anyio
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client


def out(**fields):
    print(json.dumps(fields), flush=True)


def text(result):
    return "".join(c.text for c in result.content if getattr(c, "type", None) == "text")


async def main_scenario(session):
    tools = await session.list_tools()
    out(step="list", tools=sorted(t.name for t in tools.tools))

    result = await session.call_tool("echo", {"text": "hello"})
    out(step="allowed", is_error=bool(result.is_error), text=text(result))

    # The upstream's own progress comes through, on this client's token, all of it, in order.
    steps_seen = []

    async def on_count(value, total, message):
        steps_seen.append([value, total, message])

    result = await session.call_tool("count", {"n": 20}, progress_callback=on_count)
    out(step="count", text=text(result), progress=steps_seen)

    result = await session.call_tool("delete_file", {"path": "approve-me"})
    out(step="approved", is_error=bool(result.is_error), text=text(result))

    result = await session.call_tool("delete_file", {"path": "deny-me"})
    out(step="denied", is_error=bool(result.is_error), text=text(result))

    # A call the client gives up on: the SDK tells the server it cancelled.
    async with anyio.create_task_group() as group:

        async def cancelled_call():
            await session.call_tool("delete_file", {"path": "cancel-me"})
            out(step="cancel", error="the call was answered, not cancelled")

        group.start_soon(cancelled_call)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        group.cancel_scope.cancel()
    out(step="cancel", cancelled=True)

    # A one-second timeout, reset by each progress notification, against a longer wait.
    progress = []
    with anyio.CancelScope() as scope:
        scope.deadline = anyio.current_time() + 1.0

        async def on_progress(value, total, message):
            progress.append(message)
            scope.deadline = anyio.current_time() + 1.0

        result = await session.call_tool(
            "delete_file", {"path": "slow"}, progress_callback=on_progress
        )
    if scope.cancelled_caught:
        out(step="slow", timed_out=True, progress=len(progress))
    else:
        out(step="slow", timed_out=False, is_error=bool(result.is_error), text=text(result),
            progress=len(progress), message=progress[0] if progress else None)


async def crash_scenario(session):
    # One call parks; then the upstream dies under an allowed call.
    async with anyio.create_task_group() as group:

        async def parked():
            result = await session.call_tool("delete_file", {"path": "parked"})
            out(step="parked", is_error=bool(result.is_error), text=text(result))

        group.start_soon(parked)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        try:
            await session.call_tool("crash", {})
            out(step="crash", error="answered")
        except Exception as error:  # the SDK's error for the failed request
            out(step="crash", failed=True, error=str(error))


async def main():
    scenario, tollgate, config, upstream = sys.argv[1:5]
    params = StdioServerParameters(
        command=tollgate,
        args=["mcp", "--config", config, "--progress-interval", "250ms", "--",
              sys.executable, upstream],
    )
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            if scenario == "main":
                await main_scenario(session)
            else:
                await crash_scenario(session)
    out(step="done")


anyio.run(main)
