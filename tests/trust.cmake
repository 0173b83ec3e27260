# A user's files and runs are never lost (issue 17): outputs, non-finite numbers, SIGTERM, --resume extension.
foreach(case outputs nonfinite signal extend)
  add_test(NAME trust_${case} COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/trust_test.sh $<TARGET_FILE:ulysses> ${case})
  set_tests_properties(trust_${case} PROPERTIES ENVIRONMENT "${UL_CLI_ENV}" PROCESSORS 2)
endforeach()
