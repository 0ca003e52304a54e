/* The CPU kernel of dream3d's hash encoding (see hashgrid.py for the parameterisation, which is
 * tinycudann's). Plain C99, no Python or torch headers: hashgrid_kernel.py compiles it with the
 * system C compiler and calls it through ctypes.
 *
 * hashgrid_pass loops over levels [level_begin, level_end) and, inside a level, over the points, so
 * the level's slice of the table stays in cache; callers run disjoint level ranges on different
 * threads (each level owns its output columns and its table rows, so nothing is shared).
 *
 *   x          (n, 3) points, row-major; clamped to [0, 1] (NaN counts as 0)
 *   table      (features, rows) feature-major: feature f of row r at table[f * rows + r]
 *   out        (n, levels * features) level-major: out[i, l * features + f]
 *   grad_table (features, rows), accumulated into
 */
#include <math.h>
#include <stdint.h>

#define PRIME_Y 2654435761u
#define PRIME_Z 805459861u

/* Row indices (within the level) and trilinear weights of the 8 corners of the cell around one
 * point; corner k = bx + 2 by + 4 bz, bit set = the +1 corner on that axis. */
static inline void cell_corners(const float *p, float scale, int hashed, uint32_t res, uint32_t size,
                                uint32_t mask, uint32_t idx[8], float w[8]) {
    uint32_t c[3];
    float wa[3][2];
    for (int d = 0; d < 3; d++) {
        float v = p[d];
        v = v >= 0.0f ? (v <= 1.0f ? v : 1.0f) : 0.0f; /* also maps NaN to 0 */
        float pos = v * scale + 0.5f;
        float fl = floorf(pos);
        c[d] = (uint32_t)(int32_t)fl;
        wa[d][1] = pos - fl;
        wa[d][0] = 1.0f - wa[d][1];
    }
    if (hashed) { /* tinycudann's spatial hash, uint32 arithmetic */
        uint32_t hx[2] = {c[0], c[0] + 1u};
        uint32_t hy[2] = {c[1] * PRIME_Y, (c[1] + 1u) * PRIME_Y};
        uint32_t hz[2] = {c[2] * PRIME_Z, (c[2] + 1u) * PRIME_Z};
        for (int k = 0; k < 8; k++) idx[k] = (hx[k & 1] ^ hy[(k >> 1) & 1] ^ hz[k >> 2]) & mask;
    } else { /* dense: x + y res + z res^2, mod size (only the +1 corners can reach it, once) */
        uint32_t r2 = res * res;
        uint32_t base = c[0] + c[1] * res + c[2] * r2;
        uint32_t step[8] = {0u, 1u, res, res + 1u, r2, r2 + 1u, r2 + res, r2 + res + 1u};
        for (int k = 0; k < 8; k++) {
            uint32_t i = base + step[k];
            idx[k] = i >= size ? i - size : i;
        }
    }
    for (int k = 0; k < 8; k++) w[k] = wa[0][k & 1] * wa[1][(k >> 1) & 1] * wa[2][k >> 2];
}

/* One level, all points, for a fixed feature count F (inlined with F = 1, 2, 4, 8, so the compiler
 * unrolls the feature loops). ``tab`` is the level's slice of the table, ``val`` the level's
 * columns of the (n, width) values. */
static inline void forward_level(const float *x, int64_t n, const float *tab, int64_t rows, int F,
                                 float *val, int64_t width, float scale, int hashed, uint32_t res,
                                 uint32_t size, uint32_t mask) {
    for (int64_t i = 0; i < n; i++) { /* val[i, f] = sum_k w_k tab[f, idx_k] */
        uint32_t idx[8];
        float w[8], acc[8] = {0.0f};
        cell_corners(x + 3 * i, scale, hashed, res, size, mask, idx, w);
        for (int k = 0; k < 8; k++)
            for (int f = 0; f < F; f++) acc[f] += w[k] * tab[f * rows + idx[k]];
        for (int f = 0; f < F; f++) val[i * width + f] = acc[f];
    }
}

static inline void backward_level(const float *x, int64_t n, float *tab, int64_t rows, int F,
                                  const float *val, int64_t width, float scale, int hashed, uint32_t res,
                                  uint32_t size, uint32_t mask) {
    for (int64_t i = 0; i < n; i++) { /* tab[f, idx_k] += w_k val[i, f] */
        uint32_t idx[8];
        float w[8];
        cell_corners(x + 3 * i, scale, hashed, res, size, mask, idx, w);
        for (int k = 0; k < 8; k++)
            for (int f = 0; f < F; f++) tab[f * rows + idx[k]] += w[k] * val[i * width + f];
    }
}

/* The encoding (backward = 0: table -> values) or its table gradient (backward = 1: values, the
 * output's gradient, accumulated into table, the table's gradient) over levels
 * [level_begin, level_end). */
void hashgrid_pass(int backward, const float *x, int64_t n, float *table, int64_t rows, int features,
                   int levels, int level_begin, int level_end, const float *scale,
                   const int32_t *resolution, const int32_t *size, const int64_t *offset,
                   const uint8_t *hashed, uint32_t mask, float *values) {
    const int64_t width = (int64_t)levels * features;
    for (int l = level_begin; l < level_end; l++) {
#define LEVEL_ARGS(F) x, n, table + offset[l], rows, F, values + (int64_t)l * F, width, scale[l], hashed[l], \
                      (uint32_t)resolution[l], (uint32_t)size[l], mask
#define PASS(F) (backward ? backward_level(LEVEL_ARGS(F)) : forward_level(LEVEL_ARGS(F)))
        switch (features) {
        case 1: PASS(1); break;
        case 2: PASS(2); break;
        case 4: PASS(4); break;
        default: PASS(8); break;
        }
#undef PASS
#undef LEVEL_ARGS
    }
}
