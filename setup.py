"""Package list only (all other metadata is in pyproject.toml).

pyproject's ``packages.find`` cannot add a package whose folder is not under its dotted name:
``cuda_ext/`` (a top-level folder, a leaf of the architecture) is installed as ``sds3d.cuda_ext``
via ``[tool.setuptools] package-dir``, and is appended here to the discovered ``sds3d*`` packages.
"""

from setuptools import find_namespace_packages, setup

setup(packages=find_namespace_packages(include=["sds3d", "sds3d.*"]) + ["sds3d.cuda_ext"])
