"""C accelerators, built at install time (``pip install -e .`` builds them in place).

Each one is an optional speed-up of a pure-Python function that stays the reference: the module
that uses it loads it with ``orchestrator.accelerators.load`` and falls back to its Python when that
answers None (not built, or ``PEERCTL_PURE=1``, which the tests use to check both against each
other; tests/test_accelerators.py fails where a compiler is present but one was not built). ``optional=True``: a machine without a C compiler or the
Python headers still installs peerctl, only slower.
"""

from setuptools import Extension, setup

_FLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]

EXTENSIONS = [
    # Extension("package._module", ["package/_module.c"], optional=True, extra_compile_args=_FLAGS),
    Extension("speakers.native._fastpath", ["speakers/native/_fastpath.c"], optional=True, extra_compile_args=_FLAGS),
    Extension("orchestrator.rib._fastrib", ["orchestrator/rib/_fastrib.c"], optional=True, extra_compile_args=_FLAGS),
    Extension("policies._match", ["policies/_match.c"], optional=True, extra_compile_args=_FLAGS),
]

setup(ext_modules=EXTENSIONS)
