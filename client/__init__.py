"""The pack's client of ComfyUI's HTTP API, shared by the runner (``scripts/run_workflow.py``), batch
runs, the MCP server and the integration tests.

- ``api``: :class:`ComfyClient` (upload, queue, follow over the WebSocket, cancel, history, download)
- ``launch``: start and stop a ComfyUI with this pack loaded (:class:`ComfyServer`)
- ``workflows``: API workflows, ``NODE.INPUT`` overrides, which local files may be uploaded
- ``jobs``: one prepared prompt run on one server, its outputs downloaded
- ``progress``: one rising progress figure per prompt from the WebSocket events
- ``recipes``: videos, portraits and one-workflow tools built from ``data/mcp_tools.json``
- ``batch``: CSV/JSONL batches over several servers with a resumable manifest
- ``costs``: estimated API cost of a prompt (``data/prices.json``)

Nothing here imports ComfyUI; it talks to a ComfyUI over HTTP (aiohttp) like any other client.
"""
