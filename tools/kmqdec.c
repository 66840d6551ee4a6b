/* kmqdec: a minimal .kmq version 1 decoder in C99, written from spec/kmq.md alone.
 *
 * It exists to show that the specification is enough to write a decoder, and to prove the
 * conformance suite against an implementation that shares no code with kmcodec:
 *
 *     cc -std=c99 -O2 -o kmqdec tools/kmqdec.c
 *     python tools/conformance.py --decoder "./kmqdec {in} {out}" --output-format raw
 *
 * Usage: kmqdec IN.kmq OUT.raw. On success it writes the decoded pixels of spec section 7
 * step 9 (channels bytes per pixel, row-major) and exits 0. A file it must reject gives one line
 * "kmqdec: KIND: what" on stderr (KIND is an error kind of spec section 9), exit code 1, and no
 * output file. Usage errors exit 2. The steps below follow section 7 in order.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PIXELS ((uint64_t)1 << 28) /* section 8: the reference default */

static const uint8_t SIGNATURE[8] = {0x89, 'K', 'M', 'Q', 0x0D, 0x0A, 0x1A, 0x0A};
static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

static uint32_t crc32(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    while (n--) c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const uint8_t *p) { return (uint64_t)be32(p) << 32 | be32(p + 4); }

static size_t read_full(FILE *f, uint8_t *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        size_t r = fread(buf + got, 1, n - got, f);
        if (r == 0) break;
        got += r;
    }
    return got;
}

static int reject(const char *kind, const char *what) {
    fprintf(stderr, "kmqdec: %s: %s\n", kind, what);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: kmqdec IN.kmq OUT.raw\n");
        return 2;
    }
    crc_init();
    FILE *in = fopen(argv[1], "rb");
    if (!in) return reject("io", "cannot open input");

    /* 1. signature */
    uint8_t h[36];
    size_t got = read_full(in, h, 8);
    if (got < 8) return memcmp(h, SIGNATURE, got) == 0 ? reject("truncated", "inside the signature")
                                                       : reject("signature", "not a KMQ file");
    if (memcmp(h, SIGNATURE, 8) != 0) return reject("signature", "bad signature");
    /* 2. version */
    if (read_full(in, h + 8, 1) < 1) return reject("truncated", "no version byte");
    if (h[8] != 1) return reject("version", "unsupported version");
    /* 3. rest of the header and its CRC */
    if (read_full(in, h + 9, 27) < 27) return reject("truncated", "inside the header");
    if (be32(h + 32) != crc32(h, 32)) return reject("checksum", "header CRC mismatch");
    /* 4. fields */
    unsigned channels = h[9], coding = h[10], label_bits = h[11];
    uint32_t width = be32(h + 12), height = be32(h + 16), k = be32(h + 20);
    uint64_t payload_length = be64(h + 24);
    if (channels != 3 && channels != 4) return reject("header", "channels must be 3 or 4");
    if (width == 0 || height == 0) return reject("header", "zero width or height");
    if (k == 0 || k > 65536) return reject("header", "k out of range");
    unsigned b = 0;
    while (((uint32_t)1 << b) < k) b++;
    if (label_bits != b) return reject("header", "label_bits is not ceil(log2 k)");
    if (coding != 0) return reject("coding", "unsupported coding");
    /* 5. limits, before any allocation: width*height < 2**64 always fits in 64 bits */
    uint64_t n = (uint64_t)width * height;
    if (n > MAX_PIXELS) return reject("limit", "too many pixels");
    uint64_t expected = (n * b + 7) / 8; /* n <= 2**28 and b <= 16: no overflow */
    if (payload_length != expected) return reject("header", "raw payload_length is not ceil(n*b/8)");
    /* 6. palette, payload, trailer */
    size_t palette_size = (size_t)k * channels, body = palette_size + (size_t)payload_length;
    uint8_t *buf = malloc(body + 4 + 1);
    if (!buf) return reject("io", "out of memory");
    if (read_full(in, buf, body + 4) < body + 4) return reject("truncated", "file ends early");
    if (be32(buf + body) != crc32(buf, body)) return reject("checksum", "trailer CRC mismatch");
    /* 8. nothing after the trailer */
    if (fgetc(in) != EOF) return reject("trailing", "bytes after the trailer");
    fclose(in);
    /* 7. labels: b bits each, MSB first; every label < k; zero padding */
    const uint8_t *palette = buf, *payload = buf + palette_size;
    uint8_t *pixels = malloc((size_t)n * channels); /* n >= 1 */
    if (!pixels) return reject("io", "out of memory");
    uint64_t bit = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint32_t label = 0;
        for (unsigned j = 0; j < b; j++, bit++) label = label << 1 | ((payload[bit >> 3] >> (7 - (bit & 7))) & 1);
        if (label >= k) return reject("label", "label >= k");
        memcpy(pixels + i * channels, palette + (size_t)label * channels, channels);
    }
    if (bit % 8 && (payload[bit >> 3] & (0xFF >> (bit % 8)))) return reject("padding", "non-zero padding bits");
    /* 9. write the pixels; remove a partial output if writing fails */
    FILE *out = fopen(argv[2], "wb");
    if (!out) return reject("io", "cannot create output");
    int ok = fwrite(pixels, 1, n * channels, out) == n * channels;
    ok = (fclose(out) == 0) && ok;
    if (!ok) {
        remove(argv[2]);
        return reject("io", "cannot write output");
    }
    free(pixels);
    free(buf);
    return 0;
}
