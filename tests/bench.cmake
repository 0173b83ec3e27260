# bench/maxseq.py's search and time budget on the CPU backend (issue 8; the GPU run is a benchmark, not a test).
add_test(NAME bench_maxseq_cpu COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/maxseq_test.sh $<TARGET_FILE:ulysses>)
set_tests_properties(bench_maxseq_cpu PROPERTIES PROCESSORS 2 ENVIRONMENT
  "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1;MPIRUN=${MPIEXEC_EXECUTABLE} --oversubscribe")
