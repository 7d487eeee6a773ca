"""What the AI plugin promises other plugins: its service's ``Protocol`` and the key it is
published under (``app.service(AI)``)."""

from __future__ import annotations

from typing import Any, Protocol

from vachat.plugin_api import ServiceKey

__all__ = ["AiService", "AI"]


class AiService(Protocol):
    """The assistant, as other plugins may use it."""

    @property
    def model(self) -> str:
        """The model the assistant answers with (the provider's; ``echo`` for the echo provider)."""
        ...

    async def stop(self, conversation_id: str) -> bool:
        """Stop the reply being generated in the conversation, wherever it runs (stored
        ``cancelled``); False when none was running."""
        ...

    async def status(self, conversation_id: str) -> dict[str, Any] | None:
        """The reply being generated in the conversation right now, on any node:
        ``{messageId, text (so far), index (of the last ai-delta in it)}``, or None."""
        ...


#: ``app.service(AI)``: the AI plugin's service, typed.
AI: ServiceKey[AiService] = ServiceKey("ai")
