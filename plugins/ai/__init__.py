"""vachat's built-in AI plugin: the assistant's replies, streamed live (SPEC §5, §6)."""

__version__ = "1.0.0"

REQUIRES = ("chat",)
