/* CPU threads per rank: when the user has not set OMP_NUM_THREADS, the cores of a node
 * are split evenly among the ranks on it (OpenMP and OpenBLAS alike), so mpirun -np 2 on
 * 2 cores runs 1 thread per rank instead of oversubscribing; never more than the CPUs
 * the rank is bound to (a note on the first rank of each node says so). */
#ifndef UL_THREADS_H
#define UL_THREADS_H

/* node_rank, ranks_on_node: this rank on its host (comm/comm.h ul_node_rank). Returns the
 * thread count chosen for this rank. */
int ul_threads_setup(int node_rank, int ranks_on_node);

#endif
