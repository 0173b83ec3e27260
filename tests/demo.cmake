# The demo's control experiment on a short run (issue 4).
add_test(NAME demo_exchange_vs_control COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/demo_test.sh $<TARGET_FILE:ulysses>)
set_tests_properties(demo_exchange_vs_control PROPERTIES PROCESSORS 2 ENVIRONMENT
  "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1;MPIRUN=${MPIEXEC_EXECUTABLE} --oversubscribe")
