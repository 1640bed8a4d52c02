"""MCP tools for AI agents, one module per purpose; `server.py` assembles them."""
