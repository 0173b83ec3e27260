#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "core/threads.h"

#include <cblas.h>
#include <omp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>


/* CPUs this process may run on (its affinity mask, e.g. set by mpirun's binding); 0 if unknown */
static int affinity_cpus(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
    return CPU_COUNT(&set);
}

int ul_threads_setup(int node_rank, int local) {
    int n;
    const char *env = getenv("OMP_NUM_THREADS");
    if (env && atoi(env) > 0) {
        n = atoi(env);
    } else {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        n = (int)(cores / (local > 0 ? local : 1));
        if (n < 1) n = 1;
        /* more threads than the CPUs the rank is bound to would share them: use what it has,
         * and say how to get the rest (Open MPI binds each rank to one core by default when
         * it starts 2 or fewer) */
        int avail = affinity_cpus();
        if (avail > 0 && avail < n) {
            if (node_rank == 0)
                fprintf(stderr,
                        "ulysses: note: each rank may run on only %d CPU(s) of this host (the launcher's binding), "
                        "so it uses %d thread(s) instead of %d; the CPU work (CPU backend, --offload-optimizer's "
                        "AdamW, random initialization) runs faster with `mpirun --bind-to none` "
                        "(or --map-by slot:PE=%d)\n",
                        avail, avail, n, n);
            n = avail;
        }
        omp_set_num_threads(n);
    }
    openblas_set_num_threads(n);
    return n;
}
