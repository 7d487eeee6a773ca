"""vachat: a virtual-assistant chat server on Tornado, with its domain features as plugins."""

__version__ = "0.1.0"
