"""One rising progress figure for a queued prompt, from ComfyUI's WebSocket events.

ComfyUI reports which node runs (``executing``), which were taken from its cache
(``execution_cached``) and, inside long nodes, ``progress`` value/max. The end is ``executing``
with no node in the 2024 ComfyUI; today's sends ``execution_success`` first, and a client that
stops there (``ComfyClient``) never sees the other. Progress here is the number
of nodes finished plus the running node's fraction, out of the prompt's node count, and never goes
down (MCP progress notifications must rise; terminal lines should not jump back).
"""
from __future__ import annotations

from .workflows import node_label


class PromptProgress:
    def __init__(self, prompt: dict):
        self.prompt = prompt
        self.total = float(max(1, len(prompt)))
        self.done: set[str] = set()
        self.current: str | None = None
        self.fraction = 0.0
        self.value = 0.0
        self.message = "queued"

    def update(self, etype: str, data: dict) -> bool:
        """Take one event; True when the figure or the message changed."""
        before = (self.value, self.message)
        if etype == "execution_start":
            self.message = "started"
        elif etype == "execution_cached":
            self.done.update(str(n) for n in data.get("nodes") or [])
            if data.get("nodes"):
                self.message = "cached nodes reused"
        elif etype == "executing":
            node = data.get("node")
            if self.current is not None:
                self.done.add(self.current)
            if node is None:
                self._finish()
            else:
                self.current, self.fraction = str(node), 0.0
                self.message = node_label(self.prompt, self.current)
        elif etype == "progress":
            node = str(data.get("node") or self.current or "")
            if node and node != self.current:
                if self.current is not None:
                    self.done.add(self.current)
                self.current = node
            mx = float(data.get("max") or 0)
            val = float(data.get("value") or 0)
            if mx > 0:
                self.fraction = min(1.0, max(0.0, val / mx))
                self.message = f"{node_label(self.prompt, self.current or '')} {int(val)}/{int(mx)}"
        elif etype == "executed":
            self.done.add(str(data.get("node")))
        elif etype == "execution_success":
            self._finish()
        count = len(self.done & set(self.prompt))
        running = self.fraction if self.current is not None and self.current not in self.done else 0.0
        self.value = min(self.total, max(self.value, count + running))
        return (self.value, self.message) != before

    def _finish(self) -> None:
        self.done.update(self.prompt)
        self.current, self.fraction, self.message = None, 0.0, "finished"
