"""The one build step setup.cfg cannot say: ship the core's top-level files inside the package.

The checkout keeps the core's ``schemas/``, ``migrations/`` and ``conf/default.toml`` at the top
level, beside ``plugins/``. A wheel carries them as ``vachat/_resources/…``, where
``vachat.resources`` looks first; a checkout or an editable install reads the originals, so an
edited schema needs no reinstall. Everything else about the build is in setup.cfg.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

# Source (relative to this file) → the files under it that ship, as glob patterns.
CORE_RESOURCES = {
    "schemas": ("**/*.json",),
    "migrations": ("[0-9]*.py",),
    "conf": ("default.toml",),
}
BUNDLE_DIR = Path("vachat", "_resources")  # must match vachat.resources.BUNDLED_RESOURCES


class BuildPyWithCoreResources(build_py):
    """``build_py`` that also copies the core's resources into the built package."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return  # an editable install reads the checkout's files in place
        root = Path(__file__).resolve().parent
        for folder, patterns in CORE_RESOURCES.items():
            for pattern in patterns:
                for source in sorted((root / folder).glob(pattern)):
                    target = Path(self.build_lib, BUNDLE_DIR, folder, source.relative_to(root / folder))
                    self.mkpath(str(target.parent))
                    self.copy_file(str(source), str(target))


setup(cmdclass={"build_py": BuildPyWithCoreResources})
