"""The names and defaults the command line offers (codings, engines, colour spaces), without importing numpy.

The modules that implement them (codings, quantize, autok, api) take their
names from here, so `kmcodec --help` and argument checking start without
loading numpy, and an encode can decode its input while numpy loads.
"""

from __future__ import annotations

import numbers

#: Coding names by header id (spec section 5); codings.py registers a codec under each.
CODING_NAMES = ("raw", "deflate", "lzma", "context1", "context", "context2", "context-columns", "context3")
#: The name that picks the smallest payload among the codings.
AUTO = "auto"
#: Names accepted by encoders: every coding, and auto.
CODING_CHOICES = (*CODING_NAMES, AUTO)
#: The default coding: the smallest of all; "raw" keeps the plain bit-packed labels.
DEFAULT_CODING = AUTO

ENGINES = ("fast", "sklearn")
DEFAULT_ENGINE = "fast"
SPACES = ("rgb", "oklab")
DEFAULT_SPACE = "rgb"
DEFAULT_SPEED = 4
#: Seeds are 0 to 2**32 - 1, the range scikit-learn's engine (numpy's RandomState) takes.
MAX_SEED = 2**32 - 1
#: The largest --rdo budget, in dB of PSNR: a bound on the option, which is meant for trades of tenths of a dB.
MAX_RDO_DB = 10.0
#: Largest k the auto-k search considers unless told otherwise (8-bit labels, a GIF-sized palette).
DEFAULT_MAX_K = 256
#: Default maximum pixel count a decoder accepts (spec section 8): 2**28, about 1 GiB of RGBA pixels.
DEFAULT_MAX_PIXELS = 2**28


def is_integer(value: object) -> bool:
    """Whether an option value is an int or numpy integer and not a bool (True is an int to Python, and never
    meant as k = 1 or a pixel limit of 1); the quantizer's options and the pixel limit are checked with it."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)  # np.bool_ is not Integral
