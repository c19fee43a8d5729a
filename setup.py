# Only what pyproject.toml cannot say: the cffi extension, and probes/ shipped inside the package as
# plugtrace.probes, so an installed wheel finds the bpftrace scripts where a checkout keeps them.
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["plugtrace", "plugtrace.*"]) + ["plugtrace.probes"],
    package_dir={"plugtrace.probes": "probes"},
    package_data={"plugtrace": ["report/templates/*.j2"], "plugtrace.probes": ["*.bt"]},
    cffi_modules=["plugtrace/uring/_build.py:ffibuilder"],
)
