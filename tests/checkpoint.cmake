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
