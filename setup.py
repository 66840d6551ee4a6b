"""Build hook for the optional C extensions; all metadata lives in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        # Quantizer and raw-decoder inner loops; kmcodec/fastpath.py falls back to numpy without it.
        Extension("kmcodec._fastpath", ["kmcodec/_fastpath.c"], extra_compile_args=["-O3"], optional=True),
        # The context coding's range coder; without it that coding raises CodingError and auto skips it.
        Extension("kmcodec._ctxcoder", sources=["kmcodec/_ctxcoder.c"], extra_compile_args=["-O3"], optional=True),
    ]
)
