"""The MCP server for agents (``scripts/mcp_server.py``): the pack's tools over the Model Context
Protocol, on the user's own ComfyUI through ``client/``. Not imported by ComfyUI."""
