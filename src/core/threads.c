#include "core/threads.h"

#include <cblas.h>
#include <mpi.h>
#include <omp.h>
#include <stdlib.h>
#include <unistd.h>

int ul_threads_setup(void) {
    MPI_Comm node;
    int local = 1;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    MPI_Comm_size(node, &local);
    MPI_Comm_free(&node);
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
