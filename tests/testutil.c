#include "testutil.h"

#include <math.h>

int tu_failures = 0;
int tu_checks = 0;

double tu_rel_err_f32(const float *a, const float *b, int64_t n, double floor) {
    double maxdiff = 0, maxref = floor;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= maxdiff)) maxdiff = d; /* NaN propagates */
        if (fabs((double)b[i]) > maxref) maxref = fabs((double)b[i]);
    }
    return maxdiff / maxref;
}

double tu_rel_err_f64(const float *a, const double *b, int64_t n, double floor) {
    double maxdiff = 0, maxref = floor;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= maxdiff)) maxdiff = d;
        if (fabs(b[i]) > maxref) maxref = fabs(b[i]);
    }
    return maxdiff / maxref;
}

int tu_finish(const char *name) {
    printf("%s: %d checks, %d failed\n", name, tu_checks, tu_failures);
    return tu_failures ? 1 : 0;
}
