"""Every hook is documented (the plugin API is only as good as its documentation)."""

import inspect

from vachat import hookspecs


def test_every_hook_has_a_docstring():
    hooks = [name for name, value in vars(hookspecs).items() if name.startswith("vachat_") and callable(value)]
    assert len(hooks) >= 10
    undocumented = [name for name in hooks if len(inspect.getdoc(getattr(hookspecs, name)) or "") < 20]
    assert undocumented == []
