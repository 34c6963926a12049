"""Build glue for the product card's layout (everything else lives in pyproject.toml).

addons/ is the import package ``teletap``. Wheels also carry the card's top-level data (signatures/,
reports/, datasette_metadata.json) as ``teletap/_bundled`` so an installed teletap finds them; an
editable install reads them from the checkout instead (see addons/resources.py).
"""

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent
BUNDLED = ("signatures", "reports", "datasette_metadata.json")


class BuildWithBundledData(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / "teletap" / "_bundled"
        for name in BUNDLED:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, target / name, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            elif source.is_file():
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / name)


setup(
    package_dir={"teletap": "addons"},
    packages=["teletap"] + [f"teletap.{name}" for name in find_packages("addons")],
    cmdclass={"build_py": BuildWithBundledData},
)
