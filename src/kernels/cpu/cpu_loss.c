/* CPU cross-entropy on one tile of logits, fused with its backward. Rows in parallel;
 * the loss is summed in double in row order (independent of the thread count). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "kernels/cpu/cpu_internal.h"

void ul_cpu_cross_entropy(float *logits, const int32_t *labels, int64_t n, int64_t V, float dscale,
                          double *loss_sum, int64_t *count) {
    if (n <= 0) return;
    double *rl = ul_malloc((size_t)n * sizeof(double));  // [n] per-row loss (0 for ignored rows)
#pragma omp parallel for schedule(static) if (n * V > UL_CPU_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float *x = logits + i * V;  // [V]
        const int32_t lab = labels[i];
        if (lab == UL_IGNORE_INDEX) {
            memset(x, 0, (size_t)V * sizeof(float));
            rl[i] = 0.0;
            continue;
        }
        UL_ASSERT(lab >= 0 && (int64_t)lab < V, "cross_entropy: label %d out of range [0, %lld) at row %lld", lab,
                  (long long)V, (long long)i);
        float m = x[0];
        for (int64_t j = 1; j < V; j++) m = x[j] > m ? x[j] : m;
        const float xl = x[lab];
        double s = 0;
        for (int64_t j = 0; j < V; j++) {
            float e = expf(x[j] - m);
            x[j] = e;
            s += e;
        }
        rl[i] = (double)m + log(s) - (double)xl;
        const float c = (float)((double)dscale / s);
        for (int64_t j = 0; j < V; j++) x[j] *= c;
        x[lab] -= dscale;
    }
    double tot = 0;
    int64_t cnt = 0;
    for (int64_t i = 0; i < n; i++) {
        tot += rl[i];
        cnt += labels[i] != UL_IGNORE_INDEX;
    }
    free(rl);
    *loss_sum += tot;
    *count += cnt;
}
