"""Built-in plugins. Each is loaded through the `vachat.plugins` entry point group, exactly like
a third-party plugin, and uses only the public plugin API (`vachat.plugin_api`)."""
