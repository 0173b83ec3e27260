# ZeRO stages 1/2 and optimizer offload (issue 8) through the CLI: same trajectories as
# --zero 0 on several meshes, per-rank state bytes, the initial weights' slices, checkpoints across
# stages and meshes.
set(UL_ZERO_ENV "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1;MPIRUN=${MPIEXEC_EXECUTABLE} --oversubscribe")
foreach(case trajectory stage3 memory init resume savemem eval3 families ckpt_every params)
  add_test(NAME zero_${case} COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/zero_test.sh $<TARGET_FILE:ulysses> ${case})
  set_tests_properties(zero_${case} PROPERTIES ENVIRONMENT "${UL_ZERO_ENV}" LABELS zero PROCESSORS 2)
endforeach()
# the same under AddressSanitizer + UBSan for the cases that move host memory most: the
# per-slice initial weights and --init range reads, and the streamed saves (chunked)
if(TARGET ulysses_asan)
  foreach(case init savemem)
    add_test(NAME zero_${case}_asan COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/zero_test.sh $<TARGET_FILE:ulysses_asan> ${case})
    set_tests_properties(zero_${case}_asan PROPERTIES ENVIRONMENT "${UL_ZERO_ENV};ASAN_OPTIONS=detect_leaks=0"
                         LABELS "zero;asan" PROCESSORS 2)
  endforeach()
endif()
