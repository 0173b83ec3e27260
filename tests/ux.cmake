# The command line as a new user meets it (issue 17): help, --version, plan's exit status,
# eval on real data, the progress line.
foreach(case help plan eval progress)
  add_test(NAME ux_${case} COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/ux_test.sh $<TARGET_FILE:ulysses> ${case})
  set_tests_properties(ux_${case} PROPERTIES ENVIRONMENT
    "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1;MPIRUN=${MPIEXEC_EXECUTABLE} --oversubscribe")
endforeach()
set_tests_properties(ux_eval ux_progress PROPERTIES PROCESSORS 2)
