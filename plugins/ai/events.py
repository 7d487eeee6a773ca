"""The AI plugin's WebSocket event: ``stop-generation`` (docs/websocket.md).

Only someone who may write in the conversation (its owner) may stop its reply. It works from
any node: the node generating is told through a control message. The ack is
``{stopped: true}`` when a reply was running, ``{stopped: false}`` when nothing was.
"""

from __future__ import annotations

from typing import Any

from vachat.plugin_api import EventContext, ws_event

from .assistant import Assistant

__all__ = ["EVENTS"]


@ws_event("stop-generation", schema="ai/stop-generation",
          summary="Stop the assistant's reply in a conversation; the partial reply is stored")
async def stop_generation(ctx: EventContext, data: dict[str, Any]) -> dict[str, Any]:
    assistant = Assistant.of(ctx.app)
    conversation_id = data["conversationId"]
    await assistant.chat.check_access(ctx.actor, conversation_id, write=True)
    return {"conversationId": conversation_id, "stopped": await assistant.stop(conversation_id)}


EVENTS = [stop_generation]
