"""The build's one piece that pyproject.toml cannot say: nocompile's optional C extension.

``nocompile._native`` makes the per-call check of a KV cache's layers one C loop
(``nocompile/_native.c``). It is optional: where it cannot be built (no C compiler), the install
goes on without it and nocompile checks the same things through Dynamo's guard manager, item by
item (``nocompile._native_checks.NATIVE`` is then None).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("nocompile._native", ["nocompile/_native.c"], optional=True)])
