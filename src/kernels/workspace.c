/* What each backend allocates for itself, declared for the memory plan (kernels.h,
 * ul_kernels_workspace): the plan adds these items and knows no backend internals. Kept
 * next to the kernel interface so that it builds without the CUDA toolkit (`ulysses plan`
 * plans a GPU run on any machine). */
#include "kernels/kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const kernel_names[UL_AK_COUNT] = {"default", "fused",  "fused-red",
                                                      "deterministic", "simple", "simple-bwd"};
static const char *const fwd_names[UL_AF_COUNT] = {"ovpp", "serial"};
static const struct {
    const char *var;
    const char *const *names;
    int n;
} g_env[2] = {{"UL_ATTN_KERNEL", kernel_names, UL_AK_COUNT}, {"UL_ATTN_FWD", fwd_names, UL_AF_COUNT}};

/* the index of v in names[n], or -1 */
static int name_index(const char *const *names, int n, const char *v) {
    for (int i = 0; i < n; i++)
        if (strcmp(v, names[i]) == 0) return i;
    return -1;
}

/* names[n] joined by sep into out[size] */
static void join_names(const char *const *names, int n, const char *sep, char *out, size_t size) {
    if (size) out[0] = 0;
    for (int i = 0; i < n; i++) {
        const size_t at = strlen(out);
        snprintf(out + at, size - at, "%s%s", i ? sep : "", names[i]);
    }
}

/* the index of the variable's value in its names; 0 when unset or empty, -1 when unknown */
static int env_choice(int var) {
    const char *v = getenv(g_env[var].var);
    if (!v || !*v) return 0;
    return name_index(g_env[var].names, g_env[var].n, v);
}

int ul_attn_kernel_choice(void) { return env_choice(UL_ATTN_ENV_KERNEL); }
int ul_attn_fwd_choice(void) { return env_choice(UL_ATTN_ENV_FWD); }

void ul_attn_env_values(int var, const char *sep, char *out, size_t n) {
    join_names(g_env[var].names, g_env[var].n, sep, out, n);
}

/* The test knobs the kernels read (for the tests: to cover every variant on one machine):
 * UL_CPU_ATTN_ISA, a CPU attention variant; UL_CUDA_MATMUL_FALLBACK, every CUDA product on
 * the fallback kernel; UL_ATTN_DQ_HEADS, fewer key/value heads per fused backward launch;
 * UL_ATTN_PERSIST_CTAS, fewer CTAs for the persistent Hopper forward. */
static const char *const isa_names[] = {"avx512", "avx2", "base"};
static const char *const bool_names[] = {"0", "1"};
static const struct {
    const char *var;
    const char *const *names; /* the accepted values; NULL: a positive integer */
    int n;
} g_knobs[] = {{"UL_CPU_ATTN_ISA", isa_names, 3},
                {"UL_CUDA_MATMUL_FALLBACK", bool_names, 2},
                {"UL_ATTN_DQ_HEADS", NULL, 0},
                {"UL_ATTN_PERSIST_CTAS", NULL, 0}};

/* an unknown value is refused, not run as the default (a mistyped UL_ATTN_KERNEL=deterministic
 * would otherwise run the non-reproducible default; a mistyped knob would test, or run,
 * something else than asked) */
int ul_attn_env_check(UlError *e) {
    for (int var = 0; var < 2; var++) {
        if (env_choice(var) >= 0) continue;
        char list[256];
        ul_attn_env_values(var, ", ", list, sizeof list);
        return ul_err(e, "environment variable %s=%s: unknown value; expected one of %s (unset: %s)", g_env[var].var,
                      getenv(g_env[var].var), list, g_env[var].names[0]);
    }
    for (size_t k = 0; k < sizeof g_knobs / sizeof g_knobs[0]; k++) {
        const char *v = getenv(g_knobs[k].var);
        if (!v || !*v) continue;
        if (!g_knobs[k].names) {
            char *end;
            const long long n = strtoll(v, &end, 10);
            if (*end == 0 && n > 0) continue;
            return ul_err(e,
                          "environment variable %s=%s: expected a positive integer (a test knob; unset it to run "
                          "the default)",
                          g_knobs[k].var, v);
        }
        if (name_index(g_knobs[k].names, g_knobs[k].n, v) >= 0) continue;
        char list[64];
        join_names(g_knobs[k].names, g_knobs[k].n, ", ", list, sizeof list);
        return ul_err(e,
                      "environment variable %s=%s: unknown value; expected one of %s (a test knob; unset it to run "
                      "the default)",
                      g_knobs[k].var, v, list);
    }
    return 0;
}

static void item(UlWorkspace *w, int64_t bytes, const char *name) {
    if (w->n < UL_WORKSPACE_MAX) w->item[w->n++] = (UlWorkspaceItem){bytes, name};
}

int64_t ul_attn_dq_kv_heads(int64_t T, int64_t Hq_l, int64_t Hkv_l, int64_t d) {
    const int64_t per = Hq_l / Hkv_l * ((T + 63) / 64 * 64) * d * (int64_t)sizeof(float); /* one kv head's queries */
    const int64_t n = UL_ATTN_DQ_BUDGET / per;
    return n < 1 ? 1 : n > Hkv_l ? Hkv_l : n;
}

void ul_kernels_workspace(int cuda, int64_t T, int64_t Hq_l, int64_t Hkv_l, int64_t d, UlWorkspace *w) {
    const int64_t F = (int64_t)sizeof(float);
    w->n = 0;
    if (!cuda) {
        item(w, T * Hq_l * F, "attention backward D [T, Hq_l] (transient)");
        return;
    }
    item(w, UL_CUDA_WORKSPACE_BYTES, "cuBLASLt workspace");
    /* ul_cuda_scratch (kernels/cuda/cuda_ops.cu), grown by 1/4: the attention backward's
     * rowsum(dO * O) and, for the Hopper kernels, lse in log2 units, both f32 [Hq_l][T64]
     * (T64: T rounded up to 64), and at head dims 64 and 128 the fused Hopper backward's
     * fp32 dQ accumulator for the query heads of one launch [Hq_l / Hkv_l * kv][T64][d]
     * (kv = ul_attn_dq_kv_heads: at most UL_ATTN_DQ_BUDGET unless one key/value head's
     * queries need more) */
    const int64_t T64 = (T + 63) / 64 * 64, hopper = d == 64 || d == 128;
    const int64_t acc = hopper ? Hq_l / Hkv_l * ul_attn_dq_kv_heads(T, Hq_l, Hkv_l, d) * T64 * d * F : 0;
    const int64_t D_bytes = 2 * Hq_l * T64 * F + acc;
    item(w, D_bytes + D_bytes / 4 + 4096,
         hopper ? "attention scratch D, lse, dQ fp32 (a launch)" : "attention scratch D, lse [2][Hq_l][T]");
}
