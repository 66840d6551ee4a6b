"""Build hook for the optional C extensions; all metadata lives in pyproject.toml."""

import os

from setuptools import Extension, setup

#: On POSIX compilers: the quantizer's loops split work over threads (one thread elsewhere), and no fused
#: multiply-adds, so the C sums round as the numpy fallback's do (x86-64 has none by default; arm64 would).
POSIX_COMPILE = ["-pthread", "-ffp-contract=off"] if os.name == "posix" else []
POSIX_LINK = ["-pthread"] if os.name == "posix" else []

setup(
    ext_modules=[
        # Quantizer and raw-decoder inner loops; kmcodec/fastpath.py falls back to numpy without it.
        Extension(
            "kmcodec._fastpath", ["kmcodec/_fastpath.c"], extra_compile_args=["-O3", *POSIX_COMPILE], extra_link_args=POSIX_LINK,
            optional=True,
        ),
        # The context coding's range coder; without it that coding raises CodingError and auto skips it.
        Extension("kmcodec._ctxcoder", sources=["kmcodec/_ctxcoder.c"], extra_compile_args=["-O3"], optional=True),
    ]
)
