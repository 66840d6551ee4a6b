"""numpy's default random stream (``np.random.default_rng(seed)``: SeedSequence, then PCG64), in plain Python.

The k-means++ start draws a few hundred uniforms; importing numpy.random to draw them costs
11-14 ms of start-up (it loads OpenSSL for ``secrets``), more than the start itself on a
4 MP photo. This module draws the very same numbers, so every palette stays byte-identical
to what ``default_rng`` gives; the tests compare the two streams.
"""

from __future__ import annotations

from itertools import cycle

_MASK32 = 0xFFFFFFFF
_MASK64 = (1 << 64) - 1
_MASK128 = (1 << 128) - 1

# SeedSequence's hash constants (numpy/random/bit_generator.pyx, after M. E. O'Neill's seed_seq_fe)
_INIT_A = 0x43B0D7E5
_MULT_A = 0x931E8875
_INIT_B = 0x8B51F9DD
_MULT_B = 0x58F38DED
_MIX_MULT_L = 0xCA01F9DD
_MIX_MULT_R = 0x4973F715
_XSHIFT = 16
_POOL_SIZE = 4

#: PCG's default 128-bit LCG multiplier
_PCG_MULTIPLIER = (2549297995355413924 << 64) + 4865540595714422341


def _entropy_words(seed: int) -> list[int]:
    """The seed as little-endian 32-bit words, as SeedSequence takes an int (0 is one word)."""
    if seed < 0:
        raise ValueError("seed must be a non-negative integer")
    words = [seed & _MASK32]
    seed >>= 32
    while seed:
        words.append(seed & _MASK32)
        seed >>= 32
    return words


def seed_sequence_state(seed: int, words64: int) -> list[int]:
    """SeedSequence(seed).generate_state(words64, np.uint64) as Python ints."""
    entropy = _entropy_words(seed)
    hash_const = _INIT_A

    def hashmix(value: int) -> int:
        nonlocal hash_const
        value ^= hash_const
        hash_const = (hash_const * _MULT_A) & _MASK32
        value = (value * hash_const) & _MASK32
        return value ^ (value >> _XSHIFT)

    def mix(x: int, y: int) -> int:
        result = (_MIX_MULT_L * x - _MIX_MULT_R * y) & _MASK32
        return result ^ (result >> _XSHIFT)

    pool = [hashmix(entropy[i] if i < len(entropy) else 0) for i in range(_POOL_SIZE)]
    for src in range(_POOL_SIZE):
        for dst in range(_POOL_SIZE):
            if src != dst:
                pool[dst] = mix(pool[dst], hashmix(pool[src]))
    for src in range(_POOL_SIZE, len(entropy)):
        for dst in range(_POOL_SIZE):
            pool[dst] = mix(pool[dst], hashmix(entropy[src]))

    out_const = _INIT_B
    state32 = []
    for value, _ in zip(cycle(pool), range(2 * words64)):
        value ^= out_const
        out_const = (out_const * _MULT_B) & _MASK32
        value = (value * out_const) & _MASK32
        state32.append(value ^ (value >> _XSHIFT))
    return [state32[2 * i] | state32[2 * i + 1] << 32 for i in range(words64)]


class Pcg64Stream:
    """The uniform doubles of np.random.default_rng(seed), drawn one 64-bit output at a time."""

    def __init__(self, seed: int) -> None:
        seed_hi, seed_lo, inc_hi, inc_lo = seed_sequence_state(seed, 4)
        self._inc = (((inc_hi << 64) | inc_lo) << 1 | 1) & _MASK128
        self._state = 0
        self._step()
        self._state = (self._state + ((seed_hi << 64) | seed_lo)) & _MASK128
        self._step()

    def _step(self) -> None:
        self._state = (self._state * _PCG_MULTIPLIER + self._inc) & _MASK128

    def next_uint64(self) -> int:
        """PCG64's XSL-RR output of the next state."""
        self._step()
        state = self._state
        value = ((state >> 64) ^ state) & _MASK64
        rotation = state >> 122
        return ((value >> rotation) | (value << (64 - rotation))) & _MASK64

    def random(self, count: int) -> list[float]:
        """The next `count` doubles in [0, 1), as Generator.random draws them (53 high bits)."""
        return [(self.next_uint64() >> 11) * (1.0 / 9007199254740992.0) for _ in range(count)]
