# Only for cffi_modules: everything else lives in pyproject.toml.
from setuptools import setup

setup(cffi_modules=["plugtrace/uring/_build.py:ffibuilder"])
