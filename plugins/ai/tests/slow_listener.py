"""A test plugin that takes its time hearing about a stored assistant reply: it widens the
moment between the reply's ``new-message`` (which a client may answer at once) and the end of
the reply's bookkeeping."""

import asyncio
from typing import Any

from vachat.plugin_api import hookimpl

__version__ = "0.1"

# Long enough that a client's next request always lands inside it.
LISTENING_SECS = 0.5


@hookimpl(optionalhook=True)
async def chat_message_created(message: dict[str, Any]) -> None:
    if message["role"] == "assistant":
        await asyncio.sleep(LISTENING_SECS)
