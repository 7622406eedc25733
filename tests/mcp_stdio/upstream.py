"""The upstream MCP server of the stdio tests, written with the official Python SDK: a harmless
tool, one the policy asks about, one that reports progress, and one that makes the server exit
mid-session."""

import os

from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("upstream")


@server.tool()
def echo(text: str) -> str:
    """Says the text back."""
    return f"echo: {text}"


@server.tool()
def delete_file(path: str) -> str:
    """Deletes a file (pretends to)."""
    return f"deleted {path}"


@server.tool()
async def count(n: int, ctx: Context) -> str:
    """Reports progress n times, then answers."""
    for i in range(1, n + 1):
        await ctx.report_progress(i, n, f"step {i}")
    return f"counted to {n}"


@server.tool()
def crash() -> str:
    """Exits the server at once, as a crash would."""
    os._exit(3)


if __name__ == "__main__":
    server.run()
