#include "core/threads.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <unistd.h>

#include "comm/comm.h"

int ul_threads_setup(void) {
    int node_rank = 0, local = 1;
    ul_node_rank(&node_rank, &local);
    int n;
    const char *env = getenv("OMP_NUM_THREADS");
    if (env && atoi(env) > 0) {
        n = atoi(env);
    } else {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        n = (int)(cores / (local > 0 ? local : 1));
        if (n < 1) n = 1;
        omp_set_num_threads(n);
    }
    openblas_set_num_threads(n);
    return n;
}
