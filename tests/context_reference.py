"""A pure-Python decoder of the context coding, written from spec/kmq.md sections 5.2, 5.3.1, 5.4.1, 5.5 and 5.6 alone.

Model 3 is coding 3's model (5.2); models 4, 5 and 6 are the models of the bands of
codings 4 (5.3.1), 5 (5.4.1) and 7 (5.6.1). decode_columns is coding 6 (5.5): a model byte and
the band layer of 5.3 over the transposed image, whose bands are decoded with model 4
or 5 and transposed back (tests/banded_reference.py is the band layer of codings 4, 5 and 7).
Slow (tens of microseconds per pixel) and only for tests: it checks that the spec
and the compiled kernel describe the same bitstream.
"""

from __future__ import annotations

SQUASH_POINTS = (1, 2, 3, 6, 10, 16, 27, 45, 73, 120, 194, 310, 488, 747, 1101, 1546, 2047,
                 2549, 2994, 3348, 3607, 3785, 3901, 3975, 4024, 4050, 4068, 4079, 4085,
                 4089, 4092, 4093, 4094)


class StreamError(ValueError):
    """The coded stream ends early or has bytes left over."""


def squash(d: int) -> int:
    d = max(-2047, min(2047, d))
    i = d // 128 + 16
    w = d - 128 * (d // 128)
    return (SQUASH_POINTS[i] * (128 - w) + SQUASH_POINTS[i + 1] * w + 64) >> 7


def _stretch_table() -> list[int]:
    table = []
    for q in range(4096):
        table.append(next((d for d in range(-2047, 2048) if squash(d) >= q), 2047))
    return table


STRETCH = _stretch_table()

T16 = (22, 36, 60, 98, 162, 267, 439, 720, 1179, 1921, 3108, 4971, 7812, 11955,
       17625, 24743, 32768, 40793, 47911, 53581, 57724, 60565, 62428, 63615,
       64357, 64816, 65097, 65269, 65374, 65438, 65476, 65500, 65514)


def squash16(d: int) -> int:
    i = d // 128 + 16
    w = d - 128 * (d // 128)
    return (T16[i] * (128 - w) + T16[i + 1] * w + 64) >> 7


class Model:
    """An adaptive bit model: p (of a 1, 16 bits) and a count."""

    __slots__ = ("p", "c", "limit")

    def __init__(self, limit: int = 60) -> None:
        self.p = 32768
        self.c = 0
        self.limit = limit

    def adapt(self, bit: int) -> None:
        rate = 131072 // (2 * self.c + 3)
        if bit:
            self.p += ((65536 - self.p) * rate) >> 16
        else:
            self.p -= (self.p * rate) >> 16
        if self.c < self.limit:
            self.c += 1


class RangeDecoder:
    def __init__(self, data: bytes) -> None:
        if len(data) < 4:
            raise StreamError("shorter than 4 bytes")
        self.data = data
        self.pos = 4
        self.range = 0xFFFFFFFF
        self.code = int.from_bytes(data[:4], "big")

    def bit(self, p: int) -> int:
        bound = (self.range * p) >> 16
        if self.code < bound:
            bit, self.range = 1, bound
        else:
            bit = 0
            self.code -= bound
            self.range -= bound
        while self.range < 1 << 24:
            if self.pos >= len(self.data):
                raise StreamError("the stream ends early")
            self.range = (self.range << 8) & 0xFFFFFFFF
            self.code = ((self.code << 8) | self.data[self.pos]) & 0xFFFFFFFF
            self.pos += 1
        return bit


def decode_context(payload: bytes, width: int, height: int, k: int, model: int = 3) -> list[int]:
    """Decode a context payload to width*height labels with model 3 (spec 5.2), 4 (5.3.1), 5 (5.4.1), 6 (5.6.1) or
    7 (5.6.2); StreamError as the spec rejects."""
    n = width * height
    if k == 1:
        if payload:
            raise StreamError("k = 1 payload is not empty")
        return [0] * n
    b = (k - 1).bit_length()
    shift = max(0, b - 8)
    rc = RangeDecoder(payload)
    same = [[Model() for _ in range(1024)] for _ in range(4)]
    pairm = [dict() for _ in range(4)]
    tree = [dict() for _ in range(4)]
    deep: dict[int, Model] = {}
    weights = [[16384] * 4 for _ in range(8)]

    # model 4 (5.3.1)
    limit_tree = 30 if model >= 4 else 60
    if model >= 4:
        same = [[Model(255) for _ in range(1024)] for _ in range(4)]
    diagm = [dict() for _ in range(4)]
    runm = [dict() for _ in range(4)]
    qw: dict[tuple[int, int], list[int]] = {}
    apm: dict[tuple[int, int], list[int]] = {}
    tw = [[[16384] * 4 for _ in range(4)] for _ in range(8)]
    # model 5 (5.4.1): quad replaces diag as the questions' third context; joint replaces tree[2] and tree[3]
    joint = [dict(), dict()]
    jb = min(b, 6)
    js = b - jb
    # model 6 (5.6.1): the climb models (shaped like tree[0], tree[1], joint[0], joint[1]), their weights, span
    climb = [dict() for _ in range(4)]
    kw = [[[16384] * 4 for _ in range(4)] for _ in range(7)]
    span = [32] * 256
    if model == 6 and b > 8:
        raise StreamError("model 6 with labels of more than 8 bits")

    def get(table: dict, key, limit: int = 60) -> Model:
        found = table.get(key)
        if found is None:
            found = table[key] = Model(limit)
        return found

    def question(j: int, pattern: int, pair: int, diag: int, runs: int) -> int:
        ms = [same[j][pattern], get(pairm[j], pair, 255), get(diagm[j], diag, 255), get(runm[j], runs, 255)]
        w = qw.setdefault((pattern, j), [22000, 22000, 22000, 22000, 0])
        a = apm.setdefault((j, pattern), list(T16))
        s = [STRETCH[m.p >> 4] for m in ms] + [256]
        d = min(max(sum(wi * si for wi, si in zip(w, s)) // 65536, -2047), 2047)
        q = squash16(d)
        t = d + 2048
        lo, f = t >> 7, t & 127
        pa = (a[lo] * (128 - f) + a[lo + 1] * f + 64) >> 7
        bit = rc.bit(min(max((q + 3 * pa + 2) >> 2, 32), 65504))
        for m in ms:
            m.adapt(bit)
        u = lo + (f >> 6)
        a[u] = a[u] + ((65535 - a[u]) >> 7) if bit else a[u] - (a[u] >> 7)
        e = bit * 65536 - q
        for i in range(5):
            w[i] = min(max(w[i] + (s[i] * e) // 16384, -8388608), 8388608)
        return bit

    def averaged(a: Model, c: Model) -> int:
        bit = rc.bit((a.p + c.p + 1) >> 1)
        a.adapt(bit)
        c.adapt(bit)
        return bit

    def mixed(models: list[Model], w: list[int]) -> int:
        s = [STRETCH[m.p >> 4] for m in models]
        q = squash(sum(wi * si for wi, si in zip(w, s)) // 65536)
        bit = rc.bit(min(max(q * 16, 32), 65504))
        for m in models:
            m.adapt(bit)
        e = ((bit * 4096) - q) * (2 if model >= 4 else 3)
        for i in range(4):
            w[i] = min(max(w[i] + (s[i] * e) // 1024, -8388608), 8388608)
        return bit

    L = [0] * n
    for y in range(height):
        kind = 0
        run = 0
        for x in range(width):
            def at(xx: int, yy: int) -> int:
                return L[yy * width + xx]

            if y == 0:
                W = at(x - 1, 0) if x >= 1 else 0
                N = NW = NE = W
                NN = N
            else:
                N = at(x, y - 1)
                W = at(x - 1, y) if x >= 1 else N
                NW = at(x - 1, y - 1) if x >= 1 else N
                NE = at(x + 1, y - 1) if x + 1 < width else N
                NN = at(x, y - 2) if y >= 2 else N
            WW = at(x - 2, y) if x >= 2 else W
            pattern = ((W == N) + 2 * (W == NW) + 4 * (N == NE) + 8 * (N == NW) + 16 * (W == WW)
                       + 32 * (N == NN) + 64 * (NW == NE) + 128 * (W == NE) + 256 * kind)
            pair = (W >> shift) * 256 + (N >> shift)
            if model >= 4:
                above = 0
                if y >= 1:
                    while above < 8 and x + above < width and at(x + above, y - 1) == W:
                        above += 1
                runs = (above * 16 + min(run, 15)) * 256 + pattern % 256
                diag = (NW >> shift) * 256 + (NE >> shift)
                if model in (5, 6):
                    key = (((W << b | N) << b | NW) << b) | NE
                    diag = key if 4 * b <= 16 else ((key * 0x9E3779B97F4A7C15) % 2**64) >> 48
                asked = [True, N != W, NW not in (W, N), NE not in (W, N, NW)]
                questions = sum(asked)

                def ask(j: int) -> int:
                    return question(j, pattern, pair, diag, runs)
            else:
                def ask(j: int) -> int:
                    return averaged(same[j][pattern], get(pairm[j], pair))
            s = None
            if model == 7:  # 5.6.2: "one of the distinct neighbours?" (question 3), then which (questions 0, 1, 2)
                distinct = [v for i, v in enumerate((W, N, NW, NE)) if v not in (W, N, NW, NE)[:i]]
                if ask(3):
                    s = distinct[-1]
                    for i, candidate in enumerate(distinct[:-1]):
                        if ask(i):
                            s = candidate
                            break
            elif ask(0):
                s = W
            elif N != W and ask(1):
                s = N
            elif NW not in (W, N) and ask(2):
                s = NW
            elif NE not in (W, N, NW) and ask(3):
                s = NE
            if s is None:
                node, first = 1, 0
                if model == 6 and span[W] < 32:  # bottom-up: the label's lowest common ancestor with W first
                    h = b
                    for t in range(1, b):
                        a = (W >> t) + (1 << (b - t))
                        o = 2 * a + (1 - ((W >> (t - 1)) & 1))
                        if (o << (t - 1)) - (1 << b) >= k:
                            continue
                        ms = [get(climb[0], (W, a), 30), get(climb[1], (N, a), 30),
                              get(climb[2], (W >> js, N >> js, a), 30), get(climb[3], (NW >> js, NE >> js, a), 30)]
                        if mixed(ms, kw[t - 1][questions - 1]):
                            h = t
                            break
                    node = ((W >> (h - 1)) ^ 1) + (1 << (b - h + 1))
                    first = b - h + 1
                for d in range(first, b):
                    rest = b - 1 - d
                    if ((node * 2 + 1) << rest) - (1 << b) >= k:
                        bit = 0
                    elif d < 8:
                        models = [get(tree[j], (v >> shift, node), limit_tree)
                                  for j, v in enumerate((W, N, NW, NE))]
                        if model in (5, 6):
                            models[2:] = [get(joint[0], (W >> js, N >> js, node), limit_tree),
                                          get(joint[1], (NW >> js, NE >> js, node), limit_tree)]
                        bit = mixed(models, tw[d][questions - 1] if model >= 4 else weights[d])
                    else:
                        deep_model = get(deep, node)
                        bit = rc.bit(deep_model.p)
                        deep_model.adapt(bit)
                    node = node * 2 + bit
                s = node - (1 << b)
                if model == 6:
                    span[W] += (16 * (s ^ W).bit_length() - span[W]) // 16
            L[y * width + x] = s
            kind = 0 if s == W else 1 if s == N else 2 if s in (NW, NE) else 3
            run = run + 1 if x > 0 and s == W else 1
    if rc.pos != len(payload):
        raise StreamError(f"{len(payload) - rc.pos} bytes left over")
    return L


#: The models a coding-6 payload may name in its first byte (spec 5.5).
COLUMN_MODELS = (4, 5)


def decode_columns(payload: bytes, width: int, height: int, k: int) -> list[int]:
    """The n labels, in pixel order, of a coding-6 (context-columns) payload of a width x height image (spec 5.5);
    StreamError for anything 5.5 rejects.

    The payload is a model byte (4 or 5) and then a coding-4/5 payload of the transposed image T, which is
    `height` labels wide and `width` labels high (T(x', y') = L(y', x')): at most `width` bands, band i holding
    the columns floor(i*width/B) <= x < floor((i+1)*width/B), each a standalone height x h_i image for the model.
    """
    n = width * height
    if k == 1:
        if payload:
            raise StreamError("k = 1 and the payload is not empty")
        return [0] * n
    if not payload:
        raise StreamError("k >= 2 and the payload is empty (no model byte)")
    model = payload[0]
    if model not in COLUMN_MODELS:
        raise StreamError(f"model byte {model} is not 4 or 5")
    rest = payload[1:]  # a payload of coding 4 or 5 (spec 5.3) for T: width_T = height, height_T = width
    width_t, height_t = height, width
    if len(rest) < 2:
        raise StreamError("no band count")
    bands = int.from_bytes(rest[:2], "big")
    if not (1 <= bands <= 64 and bands <= height_t):
        raise StreamError(f"band count {bands} out of range (1 to 64, at most the width {width})")
    table_end = 2 + 4 * bands
    if len(rest) < table_end:
        raise StreamError("band table cut short")
    lengths = [int.from_bytes(rest[2 + 4 * i : 6 + 4 * i], "big") for i in range(bands)]
    if 3 + 4 * bands + sum(lengths) != len(payload):
        raise StreamError("band lengths do not add up to the payload")
    labels = [0] * n
    offset = table_end
    for i, length in enumerate(lengths):
        start, stop = i * width // bands, (i + 1) * width // bands  # rows of T: columns of the image
        band = decode_context(rest[offset : offset + length], width_t, stop - start, k, model=model)
        offset += length
        for row in range(stop - start):  # row `row` of the band is T's row start + row, the image's column x
            x = start + row
            for y in range(height):
                labels[y * width + x] = band[row * width_t + y]  # L(x, y) = T(y, x)
    return labels
