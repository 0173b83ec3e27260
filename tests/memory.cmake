# Checkpoint offload and the memory planner (issue 8): one process (sp 1) and sp = 2.
add_test(NAME memory_sp1 COMMAND $<TARGET_FILE:test_memory>)
set_tests_properties(memory_sp1 PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=2")
add_test(NAME memory_sp2 COMMAND ${UL_MPIRUN} -np 2 $<TARGET_FILE:test_memory>)
set_tests_properties(memory_sp2 PROPERTIES ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1;OMPI_MCA_rmaps_base_oversubscribe=1" PROCESSORS 2)
