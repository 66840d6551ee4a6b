"""Build hook for the optional C extensions; all metadata lives in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        # Quantizer and raw-decoder inner loops; kmcodec/fastpath.py falls back to numpy without it.
        Extension("kmcodec._fastpath", ["kmcodec/_fastpath.c"], extra_compile_args=["-O3"], optional=True),
    ]
)
