/*
 * _ctxcoder: the compiled kernel of the .kmq context codings (spec/kmq.md: coding 3 in section 5.2,
 * model 4, the model of each band of coding 4, in section 5.3.1, model 5, of coding 5, in 5.4.1, and models 6 and 7,
 * of coding 7, in 5.6.1 and 5.6.2).
 *
 * An adaptive binary range coder (LZMA-style carry handling, 32-bit range, 16-bit
 * probabilities) driven by a context model of already-decoded neighbours. The
 * per-pixel model is written once (code_pixel) and instantiated for encoding and
 * decoding and for each model, so they cannot drift apart. Everything is integer
 * arithmetic, and every name and constant below is the one the spec uses.
 *
 * The spec fixes what each model is, not where it lives: the tables below are laid out for the cache
 * (the four questions' models of one context side by side, tree rows by subtree, sized by the label
 * width), which changes no probability and no output byte.
 *
 * Python interface (model 3, the default, is coding 3's model; models 4 and 5 code one band of codings 4 and 5,
 * models 6 (k <= 256) and 7 one band of coding 7, which may also use models 4 and 5):
 *   encode(labels, width, height, k, model=3, vector=True, tight_buffer=False) -> bytes
 *       labels: a C-contiguous buffer of width*height unsigned labels < k, itemsize 1 or 2 (a label >= k raises
 *       ValueError before anything is coded).
 *       vector: code the tree walks of models 4 to 7 (labels of 1 byte) with AVX2 when the CPU has it
 *       (VECTOR_ENCODER says whether it does); the bytes are the same either way.
 *       tight_buffer (for tests): grow the output before each pixel to exactly the room PIXEL_BYTES_MAX promises,
 *       instead of doubling it, so that a pixel shifting out more raises MemoryError; the bytes are the same.
 *   decode(payload, width, height, k, out, model=3) -> None
 *       out: a writable C-contiguous buffer for width*height labels, itemsize 1 or 2.
 *       Raises ValueError if the payload ends early or has bytes left over, or if model is not
 *       3, 4, 5, 6 or 7 (6 with k <= 256); never reads outside `payload` and never writes outside `out`.
 *   Both release the GIL while they code.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- adaptive bit models (spec 5.3.3) ---- */
#define PROB_INIT 32768u
#define COUNT_LIMIT 60

typedef struct {
    uint16_t p; /* probability that the bit is 1, in units of 2^-16, always 1..65535 */
    uint16_t n; /* updates so far, saturating at COUNT_LIMIT */
} Bit;

#define RATE_TABLE 1024
static uint32_t RATE[RATE_TABLE];

static void init_rates(void) {
    for (int n = 0; n < RATE_TABLE; n++) RATE[n] = 131072u / (uint32_t)(2 * n + 3);
}

/* Adapt a model to `bit`; its count saturates at `limit` (COUNT_LIMIT in model 3). */
static inline __attribute__((always_inline)) void adapt_to(Bit *m, int bit, const int limit) {
    uint32_t r = RATE[m->n];
    if (bit)
        m->p = (uint16_t)(m->p + (((65536u - m->p) * r) >> 16));
    else
        m->p = (uint16_t)(m->p - ((m->p * r) >> 16));
    if (m->n < limit) m->n++;
}

static inline __attribute__((always_inline)) void adapt(Bit *m, int bit) { adapt_to(m, bit, COUNT_LIMIT); }

static void reset_bits(Bit *bits, size_t count) {
    for (size_t i = 0; i < count; i++) { bits[i].p = PROB_INIT; bits[i].n = 0; }
}

/* ---- logistic mixing (spec 5.3.4) ---- */
#define MIX_INPUTS 4
#define MIX_RATE 3
#define WEIGHT_INIT 16384
#define WEIGHT_LIMIT 8388608
static const int SQUASH_POINTS[33] = {1, 2, 3, 6, 10, 16, 27, 45, 73, 120, 194, 310, 488, 747, 1101, 1546, 2047,
                                      2549, 2994, 3348, 3607, 3785, 3901, 3975, 4024, 4050, 4068, 4079, 4085,
                                      4089, 4092, 4093, 4094};
static int16_t STRETCH[4096 + 2]; /* 2 spare entries: the vector encoder reads 4 bytes at STRETCH + i */

/* squash(d) as spec 5.2.5 defines it, by interpolation; the coders read it from SQUASH_TABLE (the same values,
   one load instead of two loads and two multiplies on every decision's critical path). */
static inline int squash_formula(int d) {
    if (d > 2047) d = 2047;
    if (d < -2047) d = -2047;
    int w = d & 127, i = (d >> 7) + 16; /* floor division: gcc and clang shift signed ints arithmetically */
    return (SQUASH_POINTS[i] * (128 - w) + SQUASH_POINTS[i + 1] * w + 64) >> 7;
}

static uint16_t SQUASH_TABLE[4095 + 1]; /* squash(d) at d + 2047 (1 spare entry: the vector encoder reads 4 bytes) */

static inline int squash(int d) {
    if (d > 2047) d = 2047;
    if (d < -2047) d = -2047;
    return SQUASH_TABLE[d + 2047];
}

static void init_stretch(void) {
    for (int x = -2047; x <= 2047; x++) SQUASH_TABLE[x + 2047] = (uint16_t)squash_formula(x);
    int next = 0;
    for (int x = -2047; x <= 2047; x++) {
        int v = squash(x);
        for (int i = next; i <= v; i++) STRETCH[i] = (int16_t)x;
        next = v + 1;
    }
    for (int i = next; i < 4096; i++) STRETCH[i] = 2047;
}

static inline int32_t floor_shift(int64_t v, int s) { /* floor(v / 2^s) */
    if ((int64_t)-1 >> 1 == -1) return (int32_t)(v >> s); /* arithmetic shift (gcc, clang): one instruction */
    return (int32_t)(v >= 0 ? v >> s : -((-v + ((int64_t)1 << s) - 1) >> s));
}

static inline int32_t floor_shift32(int32_t v, int s) { /* floor(v / 2^s) */
    if ((int32_t)-1 >> 1 == -1) return v >> s;
    return v >= 0 ? v >> s : -((-v + (1 << s) - 1) >> s);
}

/* ---- range coder (spec 5.3.1) ---- */
typedef struct {
    uint64_t low;       /* encoder */
    uint32_t range;
    uint8_t cache;
    uint64_t cache_size;
    int skip_first;     /* the first byte of the LZMA scheme is always 0 and is not stored */
    uint8_t *out;
    size_t out_len, out_cap;
    int oom;
    int tight;          /* tests: reserve exactly what a pixel may need, so that a bound too low cannot pass unseen */
    uint32_t code;      /* decoder */
    const uint8_t *in;
    size_t in_len, in_pos;
    int underrun;       /* the decoder needed a byte past the end of the payload */
} Coder;

/* More bytes than one pixel's code_bit calls can shift out beyond the pending carry run: a bit leaves at least
   1/65536 of a range of at least 2^24 (a tree model past depth 8 is unclamped), so it shifts out at most 2 bytes,
   and a pixel codes at most 4 questions and 16 tree bits (model 6: 7 climbing questions and 8 tree bits). */
#define PIXEL_BYTES_MAX 128

/* Make room for the pending carry run (cache_size bytes) and `more` bytes after it, so that put_byte never grows
   the buffer: the coding loops then call no function and keep their vector registers (a call would spill them
   all to the stack on every escaped label). Returns -1 (and sets oom) when the memory is not there. */
static __attribute__((noinline)) int reserve(Coder *c, size_t more) {
    if (c->oom) return -1;
    if (c->cache_size > SIZE_MAX / 2 - more || c->out_len > SIZE_MAX / 2 - more - c->cache_size) {
        c->oom = 1;
        return -1;
    }
    size_t need = c->out_len + c->cache_size + more, cap = c->out_cap ? c->out_cap : 65536;
    if (need <= c->out_cap && !c->tight) return 0;
    if (c->tight)
        cap = need;
    while (cap < need) cap *= 2;
    uint8_t *grown = (uint8_t *)realloc(c->out, cap);
    if (!grown) { c->oom = 1; return -1; }
    c->out = grown;
    c->out_cap = cap;
    return 0;
}

/* Whether `more` bytes (after the pending carry run) fit without reserve. */
static inline int has_room(const Coder *c, size_t more) {
    return c->out_cap - c->out_len > c->cache_size + more;
}

static inline void put_byte(Coder *c, uint8_t byte) {
    if (c->skip_first) { c->skip_first = 0; return; }
    if (c->out_len == c->out_cap) { c->oom = 1; return; } /* never: the walks reserve room before each pixel */
    c->out[c->out_len++] = byte;
}

static inline void shift_low(Coder *c) {
    if ((uint32_t)c->low < 0xFF000000u || (c->low >> 32) != 0) {
        uint8_t carry = (uint8_t)(c->low >> 32);
        uint8_t temp = c->cache;
        do {
            put_byte(c, (uint8_t)(temp + carry));
            temp = 0xFF;
        } while (--c->cache_size != 0);
        c->cache = (uint8_t)(c->low >> 24);
    }
    c->cache_size++;
    c->low = (c->low & 0x00FFFFFFu) << 8;
}

static inline uint8_t next_byte(Coder *c) {
    if (c->in_pos < c->in_len) return c->in[c->in_pos++];
    c->underrun = 1;
    return 0;
}

/* Code one bit with probability p (of a 1, in units of 2^-16, 1..65535); returns the bit. */
static inline __attribute__((always_inline)) int code_bit(const int ENC, Coder *c, uint32_t p, int bit) {
    uint32_t bound = (uint32_t)(((uint64_t)c->range * p) >> 16);
    if (ENC) {
        if (bit) {
            c->range = bound;
        } else {
            c->low += bound;
            c->range -= bound;
        }
        while (c->range < (1u << 24)) { c->range <<= 8; shift_low(c); }
    } else {
        if (c->code < bound) {
            c->range = bound;
            bit = 1;
        } else {
            c->code -= bound;
            c->range -= bound;
            bit = 0;
        }
        while (c->range < (1u << 24)) { c->range <<= 8; c->code = (c->code << 8) | next_byte(c); }
    }
    return bit;
}

/* ---- the models (model 3: spec 5.2.2 - 5.2.5; model 4: spec 5.3.x) ---- */
#define PATTERNS 1024

/* Model 4 (coding one band of coding 4): the same questions and tree as model 3, but each question
   is a learned mix of four models (pattern, (W, N), (NW, NE), runs) and a bias, refined by an APM. */
#define M4_QUESTION_LIMIT 255 /* count limit of the question models */
#define M4_TREE_LIMIT 30      /* count limit of the tree models (depth < 8) */
#define M4_TREE_RATE 2        /* tree mixer learning rate (model 3: MIX_RATE = 3) */
#define M4_INPUTS 5           /* question mixer: four models and a bias */
#define M4_BIAS 256           /* the bias input's stretched value */
#define M4_WEIGHT_INIT 22000  /* question mixer weights of the four models (the bias weight starts at 0) */
#define M4_APM_RATE 7
#define M4_RUN_CONTEXTS 36864 /* (above 0..8) * 16 + run (0..15), times 256 pattern bits */

/* Model 5 (coding one band of coding 5, spec 5.4.1): model 4 with joint contexts. The questions' third model
   is chosen by all four neighbours (W, N, NW, NE) instead of (NW, NE), and the tree mixes W, N and the joint
   pairs (W, N) and (NW, NE) instead of W, N, NW and NE. */
#define M5_QUAD_BITS 16  /* the (W, N, NW, NE) context: exact up to 4 * b = 16 bits, else hashed to 16 bits */
#define M5_JOINT_BITS 6  /* the tree's joint contexts reduce each label to its top 6 bits */
#define M5_HASH 0x9E3779B97F4A7C15ull

/* Model 6 (coding one band of coding 7, spec 5.6.1): model 5, but an escaped label may be coded from the bottom
   of the tree up. Most escaped labels of a smooth image differ from W only in their last bits (the palette is in
   label-tree order), so "which of W's ancestors holds the label" and then the bits below it take fewer decisions
   than the walk from the root. span[W], a running mean of that ancestor's height over the escapes after W, says
   whether it pays: the walk goes bottom-up while span[W] < M6_SPAN_LIMIT. Labels of at most 8 bits only. */
#define M6_SPAN_INIT 32   /* span[W] is in 1/16ths of a level: 32 = 2 levels */
#define M6_SPAN_LIMIT 32  /* bottom-up while the mean height is under 2 levels */
#define M6_SPAN_RATE 4    /* span += floor((16 * height - span) / 2^4) after each escape */

/* Model 4: the same logistic curve with 16-bit output (T16[i] = round(65536 / (1 + e^((16 - i) / 2)))). */
static const int SQUASH16_POINTS[33] = {22, 36, 60, 98, 162, 267, 439, 720, 1179, 1921, 3108, 4971, 7812, 11955,
                                        17625, 24743, 32768, 40793, 47911, 53581, 57724, 60565, 62428, 63615,
                                        64357, 64816, 65097, 65269, 65374, 65438, 65476, 65500, 65514};

static inline int squash16_formula(int d) { /* d already clamped to [-2047, 2047] */
    int w = d & 127, i = (d >> 7) + 16;
    return (SQUASH16_POINTS[i] * (128 - w) + SQUASH16_POINTS[i + 1] * w + 64) >> 7;
}

static uint16_t SQUASH16_TABLE[4095]; /* squash16(d) at d + 2047, filled at import like SQUASH_TABLE */

static void init_squash16(void) {
    for (int x = -2047; x <= 2047; x++) SQUASH16_TABLE[x + 2047] = (uint16_t)squash16_formula(x);
}

static inline int squash16(int d) { return SQUASH16_TABLE[d + 2047]; } /* d already clamped to [-2047, 2047] */

typedef struct {
    Bit same[4][PATTERNS];          /* "label = W / N / NW / NE?", context: the neighbour pattern */
    Bit *pair;                      /* [2^(2 nb)][4]: the same questions, context: reduced (W, N) */
    Bit *tree;                      /* [4][2^nb][row]: label bits at depth < 8, contexts W, N, NW, NE ([2]: model 5) */
    size_t row;                     /* the slots of one tree row (tree_row_slots) */
    Bit *deep;                      /* [2^b]: label bits at depth >= 8 (b > 8 only) */
    int32_t weights[8][MIX_INPUTS]; /* model 3: tree mixer weights per depth */
    /* models 4 and 5 */
    Bit *diag;                      /* [2^(2 nb)][4]: the questions, context: reduced (NW, NE); model 5: quad,
                                       [2^qb][4] */
    Bit *joint;                     /* model 5: [2][2^(2 jb)][row], the tree's (W, N) and (NW, NE) contexts */
    size_t joint_half;              /* 2^(2 jb) rows: where the (NW, NE) half starts */
    Bit *runs;                      /* [M4_RUN_CONTEXTS][4]: the questions, context: runs and pattern */
    int32_t tree_weights[8][4][MIX_INPUTS];  /* tree mixer weights per depth and number of questions */
    /* model 6 */
    int32_t climb_weights[8][4][MIX_INPUTS]; /* the mixer weights of "is the label below W's ancestor at height t + 1?" */
    size_t climb_offset;            /* a tree or joint row's climb models are its own slots plus this offset */
    uint16_t span[256];             /* per W: the running mean height of the escapes' ancestor, in 1/16ths */
    int32_t (*question_weights)[4][M4_INPUTS]; /* [PATTERNS][4]: question mixer weights */
    uint16_t (*apm)[4][33];         /* [PATTERNS]: the questions' probability refinement, per pattern */
    uint32_t (*path)[8];            /* vector encoder: the tree slot of each label's walk at depths 0..7 */
    uint8_t *coded;                 /* vector encoder: which depths of each label's walk are coded */
    int32_t lane_weights[4][MIX_INPUTS][8] __attribute__((aligned(32))); /* vector encoder: tree_weights[d][q][i]
                                       at [q][i][d], so that one load holds an input's weights at every depth */
    uint8_t *above;                 /* above_row's output for the row being coded (2 x width bytes) */
    Bit *memory;
    void *block;                    /* what malloc returned for memory (which is aligned to 64 bytes) */
} Model;

static inline int joint_bits(int bits) { return bits < M5_JOINT_BITS ? bits : M5_JOINT_BITS; }
static inline int node_bits(int bits) { return bits < 8 ? bits : 8; }

/* A tree row keeps the nodes of depth < 4 in its first 16 slots (one cache line) and each of the 16 subtrees
   below them in 2^(nb - 4) slots of its own, so a walk down the tree touches two cache lines of each row. */
static inline size_t tree_row_slots(int nb) { return nb <= 4 ? 16 : 16 + ((size_t)1 << nb); }

static inline __attribute__((always_inline)) uint32_t tree_slot(uint32_t node, int d, int nb) {
    if (d < 4) return node;
    uint32_t below = (uint32_t)d - 4;
    return 16 + (((node >> below) - 16) << (nb - 4)) + ((node & ((1u << below) - 1)) | (1u << below));
}

static int model_init(Model *m, int bits, int model) {
    /* model 5's tree uses only tree[0] (W) and tree[1] (N): its joint contexts replace tree[2] and tree[3] */
    int nb = node_bits(bits);
    m->row = tree_row_slots(nb);
    size_t pair = 4 * ((size_t)1 << 2 * nb), tree = (model >= 5 ? 2 : 4) * ((size_t)1 << nb) * m->row;
    size_t deep = bits > 8 ? ((size_t)1 << bits) : 0;
    size_t quad = (size_t)1 << (4 * bits < M5_QUAD_BITS ? 4 * bits : M5_QUAD_BITS);
    m->joint_half = model >= 5 ? ((size_t)1 << (2 * joint_bits(bits))) * m->row : 0;
    size_t diag = model >= 5 ? 4 * quad : model == 4 ? pair : 0, runs = model >= 4 ? 4 * M4_RUN_CONTEXTS : 0;
    size_t joint = 2 * m->joint_half;
    size_t climb = model == 6 ? tree + joint : 0; /* model 6: a second set of tree and joint rows, the climb models */
    m->block = malloc(sizeof(Bit) * (pair + tree + deep + diag + runs + joint + climb) + 64);
    m->question_weights = NULL;
    m->apm = NULL;
    m->path = NULL;
    m->coded = NULL;
    m->above = NULL;
    if (!m->block) return -1;
    m->memory = (Bit *)(((uintptr_t)m->block + 63) & ~(uintptr_t)63); /* every table below starts a cache line */
    m->pair = m->memory;
    if (model == 6) { /* the tree and joint rows last and side by side, so their climb rows sit at one offset */
        m->diag = m->pair + pair;
        m->runs = m->diag + diag;
        m->deep = m->runs + runs;
        m->tree = m->deep + deep;
        m->joint = m->tree + tree;
    } else {
        m->tree = m->pair + pair;
        m->deep = m->tree + tree;
        m->diag = m->deep + deep;
        m->runs = m->diag + diag;
        m->joint = m->runs + runs;
    }
    m->climb_offset = climb ? tree + joint : 0;
    reset_bits(m->memory, pair + tree + deep + diag + runs + joint + climb);
    for (int i = 0; i < 256; i++) m->span[i] = M6_SPAN_INIT;
    reset_bits(&m->same[0][0], 4 * PATTERNS);
    for (int d = 0; d < 8; d++)
        for (int i = 0; i < MIX_INPUTS; i++) m->weights[d][i] = WEIGHT_INIT;
    if (model >= 4) {
        m->question_weights = malloc(sizeof(*m->question_weights) * PATTERNS);
        m->apm = malloc(sizeof(*m->apm) * PATTERNS);
        if (!m->question_weights || !m->apm) {
            free(m->block);
            free(m->question_weights);
            free(m->apm);
            return -1;
        }
        for (int s = 0; s < PATTERNS; s++)
            for (int j = 0; j < 4; j++) {
                for (int i = 0; i < M4_INPUTS - 1; i++) m->question_weights[s][j][i] = M4_WEIGHT_INIT;
                m->question_weights[s][j][M4_INPUTS - 1] = 0;
                for (int i = 0; i < 33; i++) m->apm[s][j][i] = (uint16_t)SQUASH16_POINTS[i];
            }
        for (int d = 0; d < 8; d++)
            for (int q = 0; q < 4; q++)
                for (int i = 0; i < MIX_INPUTS; i++)
                    m->tree_weights[d][q][i] = m->climb_weights[d][q][i] = 65536 / MIX_INPUTS;
    }
    return 0;
}

static void model_free(Model *m) {
    free(m->above);
    free(m->path);
    free(m->coded);
    free(m->block);
    free(m->question_weights);
    free(m->apm);
}

static inline __attribute__((always_inline)) int code_same(const int ENC, Coder *c, Bit *a, Bit *b, int bit) {
    bit = code_bit(ENC, c, ((uint32_t)a->p + b->p + 1) >> 1, bit);
    adapt(a, bit);
    adapt(b, bit);
    return bit;
}

static inline __attribute__((always_inline)) int32_t clamp_weight(int32_t v) {
    return v > WEIGHT_LIMIT ? WEIGHT_LIMIT : v < -WEIGHT_LIMIT ? -WEIGHT_LIMIT : v;
}

/* Code a bit with the 12-bit mix of four models (model 3's mixer; model 4 changes rate and count limit).
   Weight i is w[i * stride]: the vector encoder keeps the tree's weights by lane (stride 8). */
static inline __attribute__((always_inline)) int code_strided(
    const int ENC, Coder *c, Bit **in, int32_t *w, const int stride, const int rate, const int limit, int bit)
{
    int st[MIX_INPUTS];
    int64_t dot = 0;
    for (int i = 0; i < MIX_INPUTS; i++) {
        st[i] = STRETCH[in[i]->p >> 4];
        dot += (int64_t)w[i * stride] * st[i];
    }
    int pm = squash(floor_shift(dot, 16));
    uint32_t p = (uint32_t)pm << 4;
    p = p < 32 ? 32 : p > 65504 ? 65504 : p;
    bit = code_bit(ENC, c, p, bit);
    int err = ((bit << 12) - pm) * rate;
    for (int i = 0; i < MIX_INPUTS; i++) {
        adapt_to(in[i], bit, limit);
        w[i * stride] = clamp_weight(w[i * stride] + floor_shift32(st[i] * err, 10)); /* |st * err| < 2^25 */
    }
    return bit;
}

static inline __attribute__((always_inline)) int code_mixed(
    const int ENC, Coder *c, Bit **in, int32_t *w, const int rate, const int limit, int bit)
{
    return code_strided(ENC, c, in, w, 1, rate, limit, bit);
}

/* Model 4's question: a learned mix of four models and a bias (weights w), refined by the APM row `apm`. */
static inline __attribute__((always_inline)) int code_question(
    const int ENC, Coder *c, Bit *a, Bit *b, Bit *t, Bit *u, int32_t *w, uint16_t *apm, int bit)
{
    int st[M4_INPUTS] = {STRETCH[a->p >> 4], STRETCH[b->p >> 4], STRETCH[t->p >> 4], STRETCH[u->p >> 4], M4_BIAS};
    int64_t dot = 0;
    for (int i = 0; i < M4_INPUTS; i++) dot += (int64_t)w[i] * st[i];
    int d = floor_shift(dot, 16);
    d = d > 2047 ? 2047 : d < -2047 ? -2047 : d;
    int pm = squash16(d);
    int at = d + 2048, lo = at >> 7, aw = at & 127;
    int pa = (apm[lo] * (128 - aw) + apm[lo + 1] * aw + 64) >> 7;
    int p = (pm + 3 * pa + 2) >> 2;
    p = p < 32 ? 32 : p > 65504 ? 65504 : p;
    bit = code_bit(ENC, c, (uint32_t)p, bit);
    adapt_to(a, bit, M4_QUESTION_LIMIT);
    adapt_to(b, bit, M4_QUESTION_LIMIT);
    adapt_to(t, bit, M4_QUESTION_LIMIT);
    adapt_to(u, bit, M4_QUESTION_LIMIT);
    int near = lo + (aw >> 6);
    if (bit)
        apm[near] = (uint16_t)(apm[near] + ((65535 - apm[near]) >> M4_APM_RATE));
    else
        apm[near] = (uint16_t)(apm[near] - (apm[near] >> M4_APM_RATE));
    int err = (bit << 16) - pm;
    for (int i = 0; i < M4_INPUTS; i++) w[i] = clamp_weight(w[i] + floor_shift32(st[i] * err, 14)); /* < 2^28 */
    return bit;
}


/* ---- the vector encoder (x86-64 with AVX2, chosen at run time) ----
   An encoder knows every bit of a label before it codes the first, so the probabilities of all the tree's
   depths can be computed at once, one depth a vector lane, and the models updated at once afterwards: every
   depth of one walk reads and writes models of its own (its own tree slot, its own mixer weights), so the
   order of their updates changes nothing. Only the range coder runs bit by bit. The arithmetic is the scalar
   code_mixed's, exactly: the 64-bit dot product floor(sum w * st / 2^16) is taken as
   sum (w >> 16) * st + floor(sum (w & 0xFFFF) * st / 2^16), which fits 32-bit lanes (|w| <= 2^23, |st| <= 2047). */
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define VECTOR_ENCODER 1
#include <immintrin.h>
#define VECTOR_TARGET __attribute__((target("avx2")))

/* Prepare a model for the vector encoder: the tree weights by lane, and each label's walk (its slots and which
   depths it codes), so that a walk needs no per-depth arithmetic. */
static int vector_init(Model *m, int bits, uint32_t k) {
    int nb = node_bits(bits);
    size_t labels = (size_t)1 << bits;
    for (int q = 0; q < 4; q++)
        for (int i = 0; i < MIX_INPUTS; i++)
            for (int d = 0; d < 8; d++) m->lane_weights[q][i][d] = m->tree_weights[d][q][i];
    m->path = malloc(sizeof(*m->path) * labels);
    m->coded = malloc(labels);
    if (!m->path || !m->coded) return -1;
    for (uint32_t value = 0; value < labels; value++) {
        uint32_t node = 1;
        uint8_t coded = 0;
        for (int d = 0; d < 8; d++) {
            m->path[value][d] = 0;
            if (d >= bits) continue;
            int rest = bits - 1 - d;
            if (((((node << 1) | 1u) << rest) & ((1u << bits) - 1u)) < k) {
                coded |= (uint8_t)(1u << d);
                m->path[value][d] = tree_slot(node, d, nb);
            }
            node = (node << 1) | ((value >> rest) & 1u);
        }
        m->coded[value] = coded;
    }
    return 0;
}

static inline __attribute__((always_inline)) VECTOR_TARGET __m256i stretch_of(__m256i bits) {
    __m256i index = _mm256_srli_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(0xFFFF)), 4);
    __m256i pair = _mm256_i32gather_epi32((const int *)STRETCH, index, 2);
    return _mm256_srai_epi32(_mm256_slli_epi32(pair, 16), 16);
}

/* RATE[n] for counts n < 32 (a tree model's count stops at M4_TREE_LIMIT), by four in-register table lookups
   instead of a gather: bit 3 of n picks between two 8-entry lookups, bit 4 between two pairs (7 % faster
   walks on pixels-l at k = 256 than the gather). */
#if M4_TREE_LIMIT >= 32
#error "rate_of looks up counts below 32 only"
#endif
static inline __attribute__((always_inline)) VECTOR_TARGET __m256i rate_of(__m256i n) {
    __m256 bit3 = _mm256_castsi256_ps(_mm256_slli_epi32(n, 28)), bit4 = _mm256_castsi256_ps(_mm256_slli_epi32(n, 27));
    __m256 low = _mm256_blendv_ps(
        _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)&RATE[0]), n)),
        _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)&RATE[8]), n)), bit3);
    __m256 high = _mm256_blendv_ps(
        _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)&RATE[16]), n)),
        _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)&RATE[24]), n)), bit3);
    return _mm256_castps_si256(_mm256_blendv_ps(low, high, bit4));
}

static inline __attribute__((always_inline)) VECTOR_TARGET __m256i adapted(__m256i bits, __m256i one, int limit) {
    __m256i low16 = _mm256_set1_epi32(0xFFFF);
    __m256i p = _mm256_and_si256(bits, low16), n = _mm256_srli_epi32(bits, 16);
    __m256i r = rate_of(n);
    __m256i up = _mm256_add_epi32(p, _mm256_srli_epi32(_mm256_mullo_epi32(_mm256_sub_epi32(_mm256_set1_epi32(65536), p), r), 16));
    __m256i down = _mm256_sub_epi32(p, _mm256_srli_epi32(_mm256_mullo_epi32(p, r), 16));
    p = _mm256_and_si256(_mm256_blendv_epi8(down, up, one), low16);
    n = _mm256_sub_epi32(n, _mm256_cmpgt_epi32(_mm256_set1_epi32(limit), n)); /* n + 1 while n < limit */
    return _mm256_or_si256(p, _mm256_slli_epi32(n, 16));
}

/* Code the tree walk of `value` (bits <= 8) as code_pixel's loop does for models 4 and 5; w: lane_weights[q] for
   the q + 1 questions this pixel asked. Lanes of depths that are not coded are computed but neither coded nor
   stored. */
static inline VECTOR_TARGET void encode_tree_vector(
    Coder *c, const Model *m, uint32_t value, Bit *tw, Bit *tn, Bit *tnw, Bit *tne, int32_t (*w)[8], int bits)
{
    const uint32_t coded = m->coded[value];
    const __m256i lanes = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i mask = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)coded), lanes), lanes);
    const __m256i rest = _mm256_sub_epi32(_mm256_set1_epi32(bits - 1), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256i bit = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)value), rest), _mm256_set1_epi32(1));
    const __m256i one = _mm256_cmpeq_epi32(bit, _mm256_set1_epi32(1));
    Bit *rows[MIX_INPUTS] = {tw, tn, tnw, tne};
    const uint32_t *slots = m->path[value];
    __m256i in[MIX_INPUTS], st[MIX_INPUTS], wv[MIX_INPUTS];
    __m256i high = _mm256_setzero_si256(), low = _mm256_setzero_si256();
    for (int i = 0; i < MIX_INPUTS; i++) {
        /* scalar loads: the models were just stored by earlier pixels, and a gather would wait for those stores */
        uint32_t v[8];
        for (int depth = 0; depth < 8; depth++) memcpy(&v[depth], &rows[i][slots[depth]], sizeof(Bit));
        in[i] = _mm256_setr_epi32((int)v[0], (int)v[1], (int)v[2], (int)v[3], (int)v[4], (int)v[5], (int)v[6], (int)v[7]);
        st[i] = stretch_of(in[i]);
        wv[i] = _mm256_load_si256((const __m256i *)w[i]);
        high = _mm256_add_epi32(high, _mm256_mullo_epi32(_mm256_srai_epi32(wv[i], 16), st[i]));
        low = _mm256_add_epi32(low, _mm256_mullo_epi32(_mm256_and_si256(wv[i], _mm256_set1_epi32(0xFFFF)), st[i]));
    }
    __m256i d = _mm256_add_epi32(high, _mm256_srai_epi32(low, 16));
    d = _mm256_max_epi32(_mm256_min_epi32(d, _mm256_set1_epi32(2047)), _mm256_set1_epi32(-2047));
    /* scalar loads rather than a gather: the probabilities wait on this, and eight loads come back sooner */
    int32_t at[8];
    _mm256_storeu_si256((__m256i *)at, _mm256_add_epi32(d, _mm256_set1_epi32(2047)));
    __m256i pm = _mm256_setr_epi32(SQUASH_TABLE[at[0]], SQUASH_TABLE[at[1]], SQUASH_TABLE[at[2]], SQUASH_TABLE[at[3]],
                                   SQUASH_TABLE[at[4]], SQUASH_TABLE[at[5]], SQUASH_TABLE[at[6]], SQUASH_TABLE[at[7]]);
    __m256i p = _mm256_max_epi32(_mm256_min_epi32(_mm256_slli_epi32(pm, 4), _mm256_set1_epi32(65504)),
                                 _mm256_set1_epi32(32));
    uint32_t probability[8];
    _mm256_storeu_si256((__m256i *)probability, p);
    for (int depth = 0; depth < bits; depth++)
        if (coded >> depth & 1u) code_bit(1, c, probability[depth], (int)(value >> (bits - 1 - depth)) & 1);
    __m256i err = _mm256_mullo_epi32(_mm256_sub_epi32(_mm256_slli_epi32(bit, 12), pm), _mm256_set1_epi32(M4_TREE_RATE));
    __m256i updated[MIX_INPUTS];
    for (int i = 0; i < MIX_INPUTS; i++) {
        updated[i] = adapted(in[i], one, M4_TREE_LIMIT);
        __m256i nw = _mm256_add_epi32(wv[i], _mm256_srai_epi32(_mm256_mullo_epi32(st[i], err), 10));
        nw = _mm256_max_epi32(_mm256_min_epi32(nw, _mm256_set1_epi32(WEIGHT_LIMIT)), _mm256_set1_epi32(-WEIGHT_LIMIT));
        _mm256_store_si256((__m256i *)w[i], _mm256_blendv_epi8(wv[i], nw, mask));
    }
    /* Store the updated models by depth: a 4 x 8 transpose in registers puts each depth's four models (W, N, NW, NE
       rows) in one 128-bit piece, taken apart by extracts (7 % faster than storing the vectors and reloading them
       a model at a time). */
    __m256i wn_low = _mm256_unpacklo_epi32(updated[0], updated[1]), wn_high = _mm256_unpackhi_epi32(updated[0], updated[1]);
    __m256i diag_low = _mm256_unpacklo_epi32(updated[2], updated[3]), diag_high = _mm256_unpackhi_epi32(updated[2], updated[3]);
    __m256i d04 = _mm256_unpacklo_epi64(wn_low, diag_low), d15 = _mm256_unpackhi_epi64(wn_low, diag_low);
    __m256i d26 = _mm256_unpacklo_epi64(wn_high, diag_high), d37 = _mm256_unpackhi_epi64(wn_high, diag_high);
    const __m128i by_depth[8] = {
        _mm256_castsi256_si128(d04), _mm256_castsi256_si128(d15), _mm256_castsi256_si128(d26),
        _mm256_castsi256_si128(d37), _mm256_extracti128_si256(d04, 1), _mm256_extracti128_si256(d15, 1),
        _mm256_extracti128_si256(d26, 1), _mm256_extracti128_si256(d37, 1)};
    for (int depth = 0; depth < bits; depth++) {
        if (!(coded >> depth & 1u)) continue;
        const __m128i four = by_depth[depth];
        uint32_t model[MIX_INPUTS] = {(uint32_t)_mm_cvtsi128_si32(four), (uint32_t)_mm_extract_epi32(four, 1),
                                      (uint32_t)_mm_extract_epi32(four, 2), (uint32_t)_mm_extract_epi32(four, 3)};
        const uint32_t slot = slots[depth]; /* read once: the stores below could alias it for all the compiler knows */
        for (int i = 0; i < MIX_INPUTS; i++) memcpy(&rows[i][slot], &model[i], sizeof(Bit));
    }
}
#endif

/* Model 6: after every escaped label, move span[W] towards 16 x the height of the label's lowest common ancestor
   with W (the bit length of label XOR W; 0 for W itself, which an encoder never escapes but a decoder accepts). */
static inline __attribute__((always_inline)) void learn_span(Model *m, uint32_t W, uint32_t label) {
    int height = label == W ? 0 : 32 - __builtin_clz(label ^ W);
    m->span[W] = (uint16_t)(m->span[W] + floor_shift32(16 * height - (int32_t)m->span[W], M6_SPAN_RATE));
}

/* Model 7's list of the distinct neighbours, in the order W, N, NW, NE (has_n: N is not W; has_nw: NW is neither). */
static inline __attribute__((always_inline)) void distinct_neighbours(
    uint32_t distinct[4], uint32_t W, uint32_t N, uint32_t NW, uint32_t NE, int has_n, int has_nw)
{
    int place = 1;
    distinct[0] = W;
    distinct[place] = N;
    place += has_n;
    distinct[place] = NW;
    place += has_nw;
    distinct[place] = NE;
}

/* Code one label (ENC: `value` is the label; decoding: `value` is ignored); returns the label.
   `runs` is the run context of models 4 and 5 (ignored by model 3). */
static inline __attribute__((always_inline)) uint32_t code_pixel(
    const int ENC, const int MODEL, const int VECTOR, Coder *c, Model *m, uint32_t value, uint32_t W, uint32_t N, uint32_t NW,
    uint32_t NE, uint32_t pattern, int bits, uint32_t k, int shift, uint32_t runs)
{
    int nb = node_bits(bits);
    uint32_t pair_index = ((W >> shift) << nb) | (N >> shift);
    Bit *pair = m->pair + 4 * (size_t)pair_index;
    int questions = 1; /* how many questions were coded (model 4's tree weights depend on it) */
    if (MODEL == 3) {
        if (code_same(ENC, c, &m->same[0][pattern], pair, ENC && value == W)) return W;
        if (N != W && code_same(ENC, c, &m->same[1][pattern], pair + 1, ENC && value == N)) return N;
        if (NW != W && NW != N && code_same(ENC, c, &m->same[2][pattern], pair + 2, ENC && value == NW))
            return NW;
        if (NE != W && NE != N && NE != NW &&
            code_same(ENC, c, &m->same[3][pattern], pair + 3, ENC && value == NE))
            return NE;
    } else {
        Bit *diag;
        if (MODEL == 4 || MODEL == 7) {
            diag = m->diag + 4 * (((NW >> shift) << nb) | (NE >> shift));
        } else { /* model 5: quad, the four neighbours' labels side by side, hashed when they need over 16 bits */
            uint64_t key = ((((uint64_t)W << bits | N) << bits | NW) << bits) | NE;
            diag = m->diag + 4 * (4 * bits <= M5_QUAD_BITS ? key : (key * M5_HASH) >> (64 - M5_QUAD_BITS));
        }
        Bit *run = m->runs + 4 * (size_t)runs;
        int32_t (*w)[M4_INPUTS] = m->question_weights[pattern];
#define QUESTION(j, v) code_question(ENC, c, &m->same[j][pattern], pair + (j), diag + (j), run + (j), w[j], \
                                     m->apm[pattern][j], ENC && value == (v))
        if (MODEL == 7) {
            /* "is the label one of the distinct neighbours?" first (question 3's models), and only then which one
               (questions 0, 1, 2 by the neighbour's place among them): an image whose labels are mostly none of
               their neighbours takes one decision where model 4 asks up to four */
            uint32_t distinct[4] = {W, 0, 0, 0};
            const int has_n = N != W, has_nw = NW != W && NW != N;
            int count = 1, among = 0;
            if (ENC) { /* the encoder makes the list only when the label is one of them */
                count += has_n + has_nw + (NE != W && NE != N && NE != NW);
                among = value == W || value == N || value == NW || value == NE;
            } else { /* the decoder before the answer, off its chain */
                if (has_n) distinct[count++] = N;
                if (has_nw) distinct[count++] = NW;
                if (NE != W && NE != N && NE != NW) distinct[count++] = NE;
            }
            questions = count; /* the tree's weights: as in model 4, by the number of distinct neighbours */
            if (code_question(ENC, c, &m->same[3][pattern], pair + 3, diag + 3, run + 3, w[3], m->apm[pattern][3],
                              among)) {
                if (ENC) distinct_neighbours(distinct, W, N, NW, NE, has_n, has_nw);
                for (int i = 0; i < count - 1; i++)
                    if (QUESTION(i, distinct[i])) return distinct[i];
                return distinct[count - 1];
            }
        } else {
            if (QUESTION(0, W)) return W;
            if (N != W) {
                questions++;
                if (QUESTION(1, N)) return N;
            }
            if (NW != W && NW != N) {
                questions++;
                if (QUESTION(2, NW)) return NW;
            }
            if (NE != W && NE != N && NE != NW) {
                questions++;
                if (QUESTION(3, NE)) return NE;
            }
        }
#undef QUESTION
    }
    /* the label itself, most significant bit first, as a walk down a binary tree;
       a 1 bit that would make the label >= k is not coded (it is 0) */
    size_t row = m->row, rows = (size_t)1 << nb;
    Bit *tw = m->tree + (W >> shift) * row;
    Bit *tn = m->tree + (rows + (N >> shift)) * row;
    Bit *tnw, *tne;
    if (MODEL == 5 || MODEL == 6) { /* the joint contexts take the places of NW and NE */
        int jb = joint_bits(bits), js = bits - jb;
        tnw = m->joint + (size_t)((W >> js) << jb | (N >> js)) * row;
        tne = m->joint + m->joint_half + (size_t)((NW >> js) << jb | (NE >> js)) * row;
    } else {
        tnw = m->tree + (2 * rows + (NW >> shift)) * row;
        tne = m->tree + (3 * rows + (NE >> shift)) * row;
    }
    uint32_t node = 1;
    int first_depth = 0;
    if (MODEL == 6 && m->span[W] < M6_SPAN_LIMIT) {
        /* bottom-up: the label's lowest common ancestor with W, asked from W's parent up (height t = 1, 2, ...):
           "is the label below W's ancestor at height t?", t < b; the answer at t = b is yes. A height whose
           other child holds only labels >= k is skipped (its answer is no). Then the bits below that ancestor:
           the first is the one W does not take, the rest are walked down as usual. */
        uint32_t differ = ENC ? value ^ W : 0;
        int height = bits;
        for (int t = 1; t < bits; t++) {
            uint32_t ancestor = (W >> t) | (1u << (bits - t));
            uint32_t other = (ancestor << 1) | (((W >> (t - 1)) & 1u) ^ 1u);
            if (((other << (t - 1)) & ((1u << bits) - 1u)) >= k) continue;
            uint32_t slot = tree_slot(ancestor, bits - t, nb) + (uint32_t)m->climb_offset;
            Bit *in[MIX_INPUTS] = {&tw[slot], &tn[slot], &tnw[slot], &tne[slot]};
            if (code_mixed(ENC, c, in, m->climb_weights[t - 1][questions - 1], M4_TREE_RATE, M4_TREE_LIMIT,
                           ENC && (differ >> t) == 0)) {
                height = t;
                break;
            }
        }
        node = ((W >> (height - 1)) ^ 1u) | (1u << (bits - height + 1));
        first_depth = bits - height + 1;
    }
#ifdef VECTOR_ENCODER
    else if (VECTOR && ENC && MODEL != 3 && bits <= 8) {
        encode_tree_vector(c, m, value, tw, tn, tnw, tne, m->lane_weights[questions - 1], bits);
        if (MODEL == 6) learn_span(m, W, value);
        return value;
    }
#endif
    for (int d = first_depth; d < bits; d++) {
        int rest = bits - 1 - d;
        int bit = ENC ? (int)((value >> rest) & 1u) : 0;
        if (((((node << 1) | 1u) << rest) & ((1u << bits) - 1u)) >= k) {
            bit = 0;
        } else if (d < 8) {
            uint32_t slot = tree_slot(node, d, nb);
            Bit *in[MIX_INPUTS] = {&tw[slot], &tn[slot], &tnw[slot], &tne[slot]};
            if (MODEL == 3)
                bit = code_mixed(ENC, c, in, m->weights[d], MIX_RATE, COUNT_LIMIT, bit);
#ifdef VECTOR_ENCODER
            else if (MODEL == 6 && VECTOR) /* the vector walks of this band keep the tree's weights by lane */
                bit = code_strided(ENC, c, in, &m->lane_weights[questions - 1][0][d], 8, M4_TREE_RATE, M4_TREE_LIMIT,
                                   bit);
#endif
            else
                bit = code_mixed(ENC, c, in, m->tree_weights[d][questions - 1], M4_TREE_RATE, M4_TREE_LIMIT, bit);
        } else {
            bit = code_bit(ENC, c, m->deep[node].p, bit);
            adapt(&m->deep[node], bit);
        }
        node = (node << 1) | (uint32_t)bit;
    }
    if (MODEL == 6) learn_span(m, W, node - (1u << bits));
    return node - (1u << bits);
}

/* The neighbours of spec 5.2.2 at (x, y): `up` is the row above, NULL in the first row (where N, NW and NE are
   W), and a missing left or upper-right neighbour is N. The walk and row_costs read them alike. */
#define READ_NEIGHBOURS(row, up, x, width, W, N, NW, NE)                                                   \
    do {                                                                                                   \
        if (!(up)) {                                                                                       \
            W = (x) ? (row)[(x) - 1] : 0;                                                                  \
            N = NW = NE = W;                                                                               \
        } else {                                                                                           \
            N = (up)[x];                                                                                   \
            W = (x) ? (row)[(x) - 1] : N;                                                                  \
            NW = (x) ? (up)[(x) - 1] : N;                                                                  \
            NE = (x) + 1 < (width) ? (up)[(x) + 1] : N;                                                    \
        }                                                                                                  \
    } while (0)

/* The parts of spec 5.2.2's pattern and model 4's runs that depend only on the two rows above a pixel, for a whole
   row before it is coded: in `bits`, bits 2, 3, 5 and 6 of the pattern ((N == NE), (N == NW), (N == NN),
   (NW == NE)); in `count`, how many of up[x .. x+7] equal up[x] in a row (the `above` of a pixel whose W is N).
   In the first row, where N, NW, NE and NN are all W, the four bits are set and the count is 0 (above is 0
   there). The inner pixels, whose NW, NE and up[x+7] exist, take branch-free loops that the compiler vectorizes
   (about 4 instructions a pixel); the row's two ends take the general path. Per pixel, the walk then does about
   30 instructions less than when it computed these itself: decoding 6-10 % faster at k = 64 (models 4-6). */
#define DEFINE_ABOVE_ROW(NAME, T)                                                                                  \
static void NAME(const T *up, const T *up2, size_t width, uint8_t *bits, uint8_t *count) {                         \
    if (!up) {                                                                                                     \
        memset(bits, 0x6C, width);                                                                                 \
        memset(count, 0, width);                                                                                   \
        return;                                                                                                    \
    }                                                                                                              \
    size_t inner_end = width > 8 ? width - 7 : 1; /* 1 <= x < inner_end: up[x - 1 .. x + 7] all exist */         \
    for (size_t x = 0; x < width; x++) {                                                                           \
        if (x == 1) x = inner_end > 1 ? inner_end : 1;                                                             \
        if (x >= width) break;                                                                                     \
        uint32_t N = up[x], NW = x ? up[x - 1] : N, NE = x + 1 < width ? up[x + 1] : N, NN = up2 ? up2[x] : N;     \
        uint32_t run = 1;                                                                                          \
        while (run < 8 && x + run < width && up[x + run] == N) run++;                                              \
        bits[x] = (uint8_t)((N == NE) << 2 | (N == NW) << 3 | (N == NN) << 5 | (NW == NE) << 6);                   \
        count[x] = (uint8_t)run;                                                                                   \
    }                                                                                                              \
    for (size_t x = 1; x < inner_end; x++) {                                                                       \
        uint8_t e = 1, run = 1;                                                                                    \
        for (int j = 1; j < 8; j++) { e &= up[x + j] == up[x]; run += e; }                                         \
        count[x] = run;                                                                                            \
    }                                                                                                              \
    if (up2)                                                                                                       \
        for (size_t x = 1; x < inner_end; x++)                                                                     \
            bits[x] = (uint8_t)((up[x] == up[x + 1]) << 2 | (up[x] == up[x - 1]) << 3 | (up[x] == up2[x]) << 5     \
                                | (up[x - 1] == up[x + 1]) << 6);                                                  \
    else                                                                                                           \
        for (size_t x = 1; x < inner_end; x++)                                                                     \
            bits[x] = (uint8_t)((up[x] == up[x + 1]) << 2 | (up[x] == up[x - 1]) << 3 | 1 << 5                     \
                                | (up[x - 1] == up[x + 1]) << 6);                                                  \
}
DEFINE_ABOVE_ROW(above_row_u8, uint8_t)
DEFINE_ABOVE_ROW(above_row_u16, uint16_t)

/* Walk the image in row-major order with the neighbours and pattern of spec 5.2.2 (and model 4's runs). The
   neighbours are those READ_NEIGHBOURS reads, carried along the row instead of read again: W is the label just
   coded, NW the last N and N the last NE, so a pixel reads only NE; what depends on the rows above alone comes
   from above_row. */
#define DEFINE_WALK(NAME, ENC, T, MODEL, VECTOR, ATTRIBUTES)                                              \
static ATTRIBUTES void NAME(Coder *c, Model *m, T *labels, size_t width, size_t height, uint32_t k, int bits) {      \
    int shift = bits > 8 ? bits - 8 : 0;                                                                   \
    uint8_t *bits_above = m->above, *count_above = m->above + width;                                       \
    for (size_t y = 0; y < height; y++) {                                                                  \
        T *row = labels + y * width;                                                                       \
        const T *up = y ? row - width : NULL;                                                              \
        if (sizeof(T) > 1)                                                                                 \
            above_row_u16((const uint16_t *)up, (const uint16_t *)(y > 1 ? row - 2 * width : NULL), width,  \
                          bits_above, count_above);                                                        \
        else                                                                                               \
            above_row_u8((const uint8_t *)up, (const uint8_t *)(y > 1 ? row - 2 * width : NULL), width,     \
                         bits_above, count_above);                                                         \
        uint32_t kind = 0, run = 0;                                                                        \
        /* x = 0: a missing left neighbour is N (0 in the first row, where N, NW and NE are W) */          \
        uint32_t N = up ? up[0] : 0, W = N, NW = N, WW = N;                                                \
        for (size_t x = 0; x < width; x++) {                                                               \
            uint32_t NE;                                                                                   \
            if (up) {                                                                                      \
                NE = x + 1 < width ? up[x + 1] : N;                                                        \
            } else {                                                                                       \
                N = NW = NE = W;                                                                           \
            }                                                                                              \
            uint32_t pattern = (uint32_t)(W == N) | (uint32_t)(W == NW) << 1 | (uint32_t)(W == WW) << 4    \
                | (uint32_t)(W == NE) << 7 | bits_above[x] | kind << 8;                                    \
            uint32_t runs = 0;                                                                             \
            if (MODEL >= 4) {                                                                              \
                uint32_t above = N == W ? count_above[x] : 0; /* how many of up[x .. x+7] equal W */      \
                runs = ((above * 16 + (run < 15 ? run : 15)) << 8) | (pattern & 255);                      \
            }                                                                                              \
            if (ENC && !has_room(c, PIXEL_BYTES_MAX) && reserve(c, PIXEL_BYTES_MAX) < 0) return;             \
            uint32_t s = code_pixel(ENC, MODEL, VECTOR, c, m, ENC ? row[x] : 0, W, N, NW, NE, pattern, bits, k,    \
                                    shift, runs);                                                          \
            if (!ENC) {                                                                                    \
                if (c->underrun) return;                                                                   \
                row[x] = (T)s;                                                                             \
            } else if (c->oom) {                                                                           \
                return;                                                                                    \
            }                                                                                              \
            kind = s == W ? 0 : s == N ? 1 : (s == NW || s == NE) ? 2 : 3;                                 \
            run = x > 0 && s == W ? run + 1 : 1;                                                           \
            WW = x ? W : s; /* the next pixel's: row[x - 1], or its own W at x = 1 */                     \
            W = s;                                                                                         \
            NW = N;                                                                                        \
            N = NE;                                                                                        \
        }                                                                                                  \
    }                                                                                                      \
}

DEFINE_WALK(encode3_u8, 1, uint8_t, 3, 0, )
DEFINE_WALK(encode3_u16, 1, uint16_t, 3, 0, )
DEFINE_WALK(decode3_u8, 0, uint8_t, 3, 0, )
DEFINE_WALK(decode3_u16, 0, uint16_t, 3, 0, )
DEFINE_WALK(encode4_u8, 1, uint8_t, 4, 0, )
DEFINE_WALK(encode4_u16, 1, uint16_t, 4, 0, )
DEFINE_WALK(decode4_u8, 0, uint8_t, 4, 0, )
DEFINE_WALK(decode4_u16, 0, uint16_t, 4, 0, )
DEFINE_WALK(encode5_u8, 1, uint8_t, 5, 0, )
DEFINE_WALK(encode5_u16, 1, uint16_t, 5, 0, )
DEFINE_WALK(decode5_u8, 0, uint8_t, 5, 0, )
DEFINE_WALK(decode5_u16, 0, uint16_t, 5, 0, )
DEFINE_WALK(encode6_u8, 1, uint8_t, 6, 0, )
DEFINE_WALK(encode6_u16, 1, uint16_t, 6, 0, )
DEFINE_WALK(decode6_u8, 0, uint8_t, 6, 0, )
DEFINE_WALK(decode6_u16, 0, uint16_t, 6, 0, )
DEFINE_WALK(encode7_u8, 1, uint8_t, 7, 0, )
DEFINE_WALK(encode7_u16, 1, uint16_t, 7, 0, )
DEFINE_WALK(decode7_u8, 0, uint8_t, 7, 0, )
DEFINE_WALK(decode7_u16, 0, uint16_t, 7, 0, )
#ifdef VECTOR_ENCODER
DEFINE_WALK(encode4_vector, 1, uint8_t, 4, 1, VECTOR_TARGET)
DEFINE_WALK(encode5_vector, 1, uint8_t, 5, 1, VECTOR_TARGET)
DEFINE_WALK(encode6_vector, 1, uint8_t, 6, 1, VECTOR_TARGET)
DEFINE_WALK(encode7_vector, 1, uint8_t, 7, 1, VECTOR_TARGET)
#endif

typedef void (*Walk)(Coder *, Model *, void *, size_t, size_t, uint32_t, int);

static Walk walk_of(int enc, int model, Py_ssize_t itemsize) {
    static const Walk walks[2][5][2] = {
        {{(Walk)decode3_u8, (Walk)decode3_u16}, {(Walk)decode4_u8, (Walk)decode4_u16},
         {(Walk)decode5_u8, (Walk)decode5_u16}, {(Walk)decode6_u8, (Walk)decode6_u16},
         {(Walk)decode7_u8, (Walk)decode7_u16}},
        {{(Walk)encode3_u8, (Walk)encode3_u16}, {(Walk)encode4_u8, (Walk)encode4_u16},
         {(Walk)encode5_u8, (Walk)encode5_u16}, {(Walk)encode6_u8, (Walk)encode6_u16},
         {(Walk)encode7_u8, (Walk)encode7_u16}},
    };
    return walks[enc][model - 3][itemsize == 2];
}

#ifdef VECTOR_ENCODER
static int vector_encoder_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
}
#else
static int vector_encoder_available(void) { return 0; }
#endif

static int label_bits_of(uint32_t k) {
    int b = 0;
    while (((uint32_t)1 << b) < k) b++;
    return b;
}

static int check_shape(Py_ssize_t width, Py_ssize_t height, unsigned long k, Py_buffer *labels) {
    if (width < 1 || height < 1 || k < 1 || k > 65536 || (labels->itemsize != 1 && labels->itemsize != 2) ||
        (k > 256 && labels->itemsize != 2) || (size_t)height > (size_t)PY_SSIZE_T_MAX / (size_t)width ||
        labels->len != width * height * labels->itemsize) {
        PyErr_SetString(PyExc_TypeError, "labels must be width*height items of 1 byte (k <= 256) or 2 bytes");
        return -1;
    }
    return 0;
}

static int check_model(int model, unsigned long k) {
    if (model < 3 || model > 7) {
        PyErr_Format(PyExc_ValueError, "model must be 3, 4, 5, 6 or 7, not %d", model);
        return -1;
    }
    if (model == 6 && k > 256) {
        PyErr_Format(PyExc_ValueError, "model 6 codes labels of at most 8 bits (k <= 256), not k = %lu", k);
        return -1;
    }
    return 0;
}

/* The index of the first label >= k, or -1. The walk indexes its tables by label, so a larger label would read and
   write outside them: encode refuses it rather than trust its caller. One pass for the largest label (which the
   compiler vectorizes), and a second only to find where, when there is one. */
static Py_ssize_t first_label_not_below(const Py_buffer *labels, uint32_t k) {
    Py_ssize_t count = labels->len / labels->itemsize;
    uint32_t largest = 0;
    if (labels->itemsize == 1) {
        const uint8_t *values = (const uint8_t *)labels->buf;
        uint8_t top = 0;
        for (Py_ssize_t i = 0; i < count; i++) top = values[i] > top ? values[i] : top;
        largest = top;
    } else {
        const uint16_t *values = (const uint16_t *)labels->buf;
        uint16_t top = 0;
        for (Py_ssize_t i = 0; i < count; i++) top = values[i] > top ? values[i] : top;
        largest = top;
    }
    if (largest < k) return -1;
    for (Py_ssize_t i = 0; i < count; i++) {
        uint32_t value = labels->itemsize == 1 ? ((const uint8_t *)labels->buf)[i] : ((const uint16_t *)labels->buf)[i];
        if (value >= k) return i;
    }
    return -1;
}

static PyObject *py_encode(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"labels", "width", "height", "k", "model", "vector", "tight_buffer", NULL};
    Py_buffer buf;
    Py_ssize_t width, height;
    unsigned long k;
    int model = 3, vector = 1, tight = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*nnk|ipp", keywords, &buf, &width, &height, &k, &model, &vector,
                                     &tight))
        return NULL;
    PyObject *result = NULL;
    if (check_model(model, k) < 0 || check_shape(width, height, k, &buf) < 0) goto done;
    Py_ssize_t bad = first_label_not_below(&buf, (uint32_t)k);
    if (bad >= 0) {
        PyErr_Format(PyExc_ValueError, "label at pixel %zd is not below k = %lu", bad, k);
        goto done;
    }
    if (k == 1) {
        result = PyBytes_FromStringAndSize(NULL, 0);
        goto done;
    }
    int bits = label_bits_of((uint32_t)k);
    Model m;
    Coder c;
    memset(&c, 0, sizeof c);
    c.range = 0xFFFFFFFFu;
    c.cache_size = 1;
    c.skip_first = 1;
    c.tight = tight;
    if (model_init(&m, bits, model == 7 ? 4 : model) < 0) { /* model 7 has model 4's tables */
        PyErr_NoMemory();
        goto done;
    }
    m.above = malloc(2 * (size_t)width);
    if (!m.above) {
        model_free(&m);
        PyErr_NoMemory();
        goto done;
    }
    Walk walk = walk_of(1, model, buf.itemsize);
#ifdef VECTOR_ENCODER
    if (vector && model != 3 && buf.itemsize == 1 && vector_encoder_available()) {
        if (vector_init(&m, bits, (uint32_t)k) < 0) {
            model_free(&m);
            PyErr_NoMemory();
            goto done;
        }
        static const Walk vector_walks[4] = {(Walk)encode4_vector, (Walk)encode5_vector, (Walk)encode6_vector,
                                             (Walk)encode7_vector};
        walk = vector_walks[model - 4];
    }
#endif
    Py_BEGIN_ALLOW_THREADS
    walk(&c, &m, buf.buf, (size_t)width, (size_t)height, (uint32_t)k, bits);
    if (reserve(&c, 5) == 0)
        for (int i = 0; i < 5; i++) shift_low(&c);
    Py_END_ALLOW_THREADS
    model_free(&m);
    if (c.oom)
        PyErr_NoMemory();
    else
        result = PyBytes_FromStringAndSize((const char *)c.out, (Py_ssize_t)c.out_len);
    free(c.out);
done:
    PyBuffer_Release(&buf);
    return result;
}

static PyObject *py_decode(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"payload", "width", "height", "k", "out", "model", NULL};
    Py_buffer payload, out;
    Py_ssize_t width, height;
    unsigned long k;
    int model = 3;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*nnkw*|i", keywords, &payload, &width, &height, &k, &out,
                                     &model))
        return NULL;
    PyObject *result = NULL;
    if (check_model(model, k) < 0 || check_shape(width, height, k, &out) < 0) goto done;
    if (k == 1) {
        if (payload.len != 0) {
            PyErr_Format(PyExc_ValueError, "a k = 1 context payload must be empty, this one has %zd bytes",
                         payload.len);
            goto done;
        }
        memset(out.buf, 0, (size_t)out.len);
        result = Py_NewRef(Py_None);
        goto done;
    }
    int bits = label_bits_of((uint32_t)k);
    Model m;
    Coder c;
    memset(&c, 0, sizeof c);
    c.range = 0xFFFFFFFFu;
    c.in = (const uint8_t *)payload.buf;
    c.in_len = (size_t)payload.len;
    if (payload.len < 4) {
        PyErr_Format(PyExc_ValueError, "the coded stream is %zd bytes, shorter than its 4-byte start", payload.len);
        goto done;
    }
    for (int i = 0; i < 4; i++) c.code = (c.code << 8) | next_byte(&c);
    if (model_init(&m, bits, model == 7 ? 4 : model) < 0) { /* model 7 has model 4's tables */
        PyErr_NoMemory();
        goto done;
    }
    m.above = malloc(2 * (size_t)width);
    if (!m.above) {
        model_free(&m);
        PyErr_NoMemory();
        goto done;
    }
    Walk walk = walk_of(0, model, out.itemsize);
    Py_BEGIN_ALLOW_THREADS
    walk(&c, &m, out.buf, (size_t)width, (size_t)height, (uint32_t)k, bits);
    Py_END_ALLOW_THREADS
    model_free(&m);
    if (c.underrun)
        PyErr_Format(PyExc_ValueError, "the coded stream ends early: its %zd bytes run out before the last label",
                     payload.len);
    else if (c.in_pos != c.in_len)
        PyErr_Format(PyExc_ValueError, "%zd bytes are left over after the last label (the stream is %zd bytes)",
                     (Py_ssize_t)(c.in_len - c.in_pos), payload.len);
    else
        result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&payload);
    PyBuffer_Release(&out);
    return result;
}

/* Coding 6 codes the transposed label image: dst = src.T, both 2-D with contiguous rows (any row strides, so a
   column strip of a larger image is a valid dst or src). In 8 x 8 tiles: a 2048 x 2048 image takes 2.5 ms, where
   numpy's strided copy takes 14 and 64 x 64 tiles 8 (their rows, 2048 bytes apart, share too few L1 sets). */
#define TRANSPOSE_BLOCK 8
#define DEFINE_TRANSPOSE(NAME, T)                                                                                  \
static void NAME(const char *src, Py_ssize_t src_stride, char *dst, Py_ssize_t dst_stride, Py_ssize_t rows,        \
                 Py_ssize_t cols) {                                                                                \
    for (Py_ssize_t r0 = 0; r0 < rows; r0 += TRANSPOSE_BLOCK) {                                                    \
        Py_ssize_t r1 = r0 + TRANSPOSE_BLOCK < rows ? r0 + TRANSPOSE_BLOCK : rows;                                 \
        for (Py_ssize_t c0 = 0; c0 < cols; c0 += TRANSPOSE_BLOCK) {                                                \
            Py_ssize_t c1 = c0 + TRANSPOSE_BLOCK < cols ? c0 + TRANSPOSE_BLOCK : cols;                             \
            for (Py_ssize_t c = c0; c < c1; c++) {                                                                 \
                T *out = (T *)(dst + c * dst_stride);                                                              \
                for (Py_ssize_t r = r0; r < r1; r++) out[r] = ((const T *)(src + r * src_stride))[c];              \
            }                                                                                                      \
        }                                                                                                          \
    }                                                                                                              \
}
DEFINE_TRANSPOSE(transpose_u8, uint8_t)
DEFINE_TRANSPOSE(transpose_u16, uint16_t)

static int check_matrix(const Py_buffer *view, const char *name) {
    if (view->ndim != 2 || (view->itemsize != 1 && view->itemsize != 2) || view->strides[1] != view->itemsize ||
        view->strides[0] < view->shape[1] * view->itemsize) {
        PyErr_Format(PyExc_TypeError, "%s must be a 2-D array of 1- or 2-byte items with contiguous rows", name);
        return -1;
    }
    return 0;
}

static PyObject *py_transpose(PyObject *self, PyObject *args) {
    PyObject *src_object, *dst_object;
    if (!PyArg_ParseTuple(args, "OO", &src_object, &dst_object)) return NULL;
    Py_buffer src, dst;
    if (PyObject_GetBuffer(src_object, &src, PyBUF_STRIDES) < 0) return NULL;
    if (PyObject_GetBuffer(dst_object, &dst, PyBUF_STRIDES | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&src);
        return NULL;
    }
    int fits = check_matrix(&src, "src") == 0 && check_matrix(&dst, "dst") == 0;
    if (fits && (src.itemsize != dst.itemsize || dst.shape[0] != src.shape[1] || dst.shape[1] != src.shape[0])) {
        PyErr_SetString(PyExc_TypeError, "dst must have src's item size and its shape reversed");
        fits = 0;
    }
    if (fits) {
        Py_BEGIN_ALLOW_THREADS
        (src.itemsize == 1 ? transpose_u8 : transpose_u16)((const char *)src.buf, src.strides[0], (char *)dst.buf,
                                                           dst.strides[0], src.shape[0], src.shape[1]);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    return fits ? Py_NewRef(Py_None) : NULL;
}

/* An estimate of each row's decoding time, for an encoder that cuts bands of equal cost (coding 7): the number of
   decisions a label takes if its escapes walk the whole tree (the questions asked, plus b for an escape), summed
   over the row. In models 4 to 6 the questions are asked neighbour by neighbour; in model 7 "one of them?" comes
   first, then which. On 4 MP images at k = 64 it put the two halves' costs within 1-4 % of their decoding
   times' ratio. Without branches (a noisy image's labels defeat the predictor), so that the compiler vectorizes
   the inner pixels of a row (no missing neighbour there): d1..d3 say which of N, NW, NE are distinct neighbours,
   e1..e4 whether the label is none of the first 1..4. */
static inline __attribute__((always_inline)) uint32_t decisions(
    uint32_t v, uint32_t W, uint32_t N, uint32_t NW, uint32_t NE, uint32_t bits, const int ESCAPE_FIRST)
{
    uint32_t d1 = N != W, d2 = (NW != W) & (NW != N), d3 = (NE != W) & (NE != N) & (NE != NW);
    uint32_t e1 = v != W, e2 = e1 & (v != N), e3 = e2 & (v != NW), e4 = e3 & (v != NE);
    if (ESCAPE_FIRST) { /* "one of them?", then which, up to the label's place among the distinct ones */
        uint32_t place = e1 * d1 + e2 * d2 + e3 * d3, last = d1 + d2 + d3;
        uint32_t which = place + 1 < last ? place + 1 : last;
        return 1 + e4 * bits + (1 - e4) * which;
    }
    return 1 + e1 * d1 + e2 * d2 + e3 * d3 + e4 * bits; /* W?, then N?, NW?, NE? where distinct, up to the label */
}

#define DEFINE_ROW_COSTS(NAME, T, ESCAPE_FIRST)                                                                    \
static void NAME(const T *labels, size_t width, size_t height, int bits, uint64_t *out) {                          \
    for (size_t y = 0; y < height; y++) {                                                                          \
        const T *row = labels + y * width, *up = y ? row - width : NULL;                                           \
        uint64_t cost = 0;                                                                                         \
        /* the inner pixels, 1 <= x < width - 1 below the first row, have all four neighbours: a branch-free loop */\
        int inner = up && width > 2;                                                                               \
        for (size_t x = 0; x < width; x++) {                                                                       \
            if (inner && x == 1) x = width - 1;                                                                    \
            uint32_t W, N, NW, NE;                                                                                 \
            READ_NEIGHBOURS(row, up, x, width, W, N, NW, NE);                                                      \
            cost += decisions(row[x], W, N, NW, NE, (uint32_t)bits, ESCAPE_FIRST);                                 \
        }                                                                                                          \
        if (inner)                                                                                                 \
            for (size_t x = 1; x < width - 1; x++)                                                                 \
                cost += decisions(row[x], row[x - 1], up[x], up[x - 1], up[x + 1], (uint32_t)bits, ESCAPE_FIRST);  \
        out[y] = cost;                                                                                             \
    }                                                                                                              \
}
DEFINE_ROW_COSTS(row_costs_u8, uint8_t, 0)
DEFINE_ROW_COSTS(row_costs_u16, uint16_t, 0)
DEFINE_ROW_COSTS(row_costs7_u8, uint8_t, 1)
DEFINE_ROW_COSTS(row_costs7_u16, uint16_t, 1)

static PyObject *py_row_costs(PyObject *self, PyObject *args) {
    Py_buffer labels, out;
    Py_ssize_t width, height;
    unsigned long k;
    int model = 5;
    if (!PyArg_ParseTuple(args, "y*nnkw*|i", &labels, &width, &height, &k, &out, &model)) return NULL;
    PyObject *result = NULL;
    if (check_model(model, k) < 0 || check_shape(width, height, k, &labels) < 0) goto done;
    if (out.len != height * (Py_ssize_t)sizeof(uint64_t)) {
        PyErr_SetString(PyExc_TypeError, "out must hold height 8-byte items");
        goto done;
    }
    int bits = label_bits_of((uint32_t)k);
    Py_BEGIN_ALLOW_THREADS
    if (labels.itemsize == 1)
        (model == 7 ? row_costs7_u8 : row_costs_u8)((const uint8_t *)labels.buf, (size_t)width, (size_t)height, bits,
                                                   (uint64_t *)out.buf);
    else
        (model == 7 ? row_costs7_u16 : row_costs_u16)((const uint16_t *)labels.buf, (size_t)width, (size_t)height,
                                                     bits, (uint64_t *)out.buf);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&labels);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"encode", (PyCFunction)(void (*)(void))py_encode, METH_VARARGS | METH_KEYWORDS,
     "encode(labels, width, height, k, model=3) -> bytes: context-code a label array with model 3, 4, 5, 6 or 7."},
    {"decode", (PyCFunction)(void (*)(void))py_decode, METH_VARARGS | METH_KEYWORDS,
     "decode(payload, width, height, k, out, model=3): decode labels into out (model 3, 4, 5, 6 or 7)."},
    {"row_costs", py_row_costs, METH_VARARGS,
     "row_costs(labels, width, height, k, out, model=5): each row's estimated decoding cost under model (3 to 7) into "
     "out (height uint64s)."},
    {"transpose", py_transpose, METH_VARARGS,
     "transpose(src, dst): dst[:] = src.T for 2-D arrays of 1- or 2-byte items with contiguous rows (coding 6)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_ctxcoder", "Compiled kernel of the .kmq context coding (spec section 5.3).", -1, methods,
};

PyMODINIT_FUNC PyInit__ctxcoder(void) {
    init_rates();
    init_stretch();
    init_squash16();
    PyObject *mod = PyModule_Create(&module);
    if (mod && PyModule_AddIntConstant(mod, "VECTOR_ENCODER", vector_encoder_available()) < 0) {
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
