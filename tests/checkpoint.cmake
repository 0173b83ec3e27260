# Training-state checkpoints (issue 5): save / resume / rotate / validate, RoPE overrides.
# Units under mpirun (1 and 3 ranks), then end-to-end through the CLI (tests/test_checkpoint.sh).
set(UL_CKPT_ENV "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1")
foreach(np 1 3)
  add_test(NAME checkpoint_unit_np${np}
           COMMAND ${UL_MPIRUN} -np ${np} $<TARGET_FILE:test_checkpoint> ${CMAKE_CURRENT_BINARY_DIR}/ckpt_unit_np${np})
  set_tests_properties(checkpoint_unit_np${np} PROPERTIES ENVIRONMENT "${UL_CKPT_ENV}" LABELS checkpoint)
endforeach()
foreach(case exact mesh bad crash rotate rope)
  add_test(NAME checkpoint_${case}
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/test_checkpoint.sh $<TARGET_FILE:ulysses> ${case} ${UL_FIXTURES})
  set_tests_properties(checkpoint_${case} PROPERTIES
                       ENVIRONMENT "${UL_CKPT_ENV};MPIRUN=${MPIEXEC_EXECUTABLE} --oversubscribe" LABELS checkpoint)
endforeach()
set_tests_properties(checkpoint_mesh checkpoint_exact PROPERTIES PROCESSORS 2)
# the units against the sanitized library (leak checks off: MPI keeps its own allocations)
if(TARGET ulcore_asan)
  add_executable(test_checkpoint_asan ${CMAKE_CURRENT_SOURCE_DIR}/test_checkpoint.c ${CMAKE_CURRENT_SOURCE_DIR}/testutil.c)
  target_link_libraries(test_checkpoint_asan PRIVATE ulcore_asan)
  target_include_directories(test_checkpoint_asan PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
  add_test(NAME checkpoint_unit_asan
           COMMAND ${UL_MPIRUN} -np 2 $<TARGET_FILE:test_checkpoint_asan> ${CMAKE_CURRENT_BINARY_DIR}/ckpt_unit_asan)
  set_tests_properties(checkpoint_unit_asan PROPERTIES ENVIRONMENT "${UL_CKPT_ENV};ASAN_OPTIONS=detect_leaks=0"
                       LABELS "checkpoint;asan")
endif()
