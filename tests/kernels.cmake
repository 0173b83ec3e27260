# CPU kernels against float64 references and finite differences (tests/test_kernels.c).
add_test(NAME test_kernels COMMAND test_kernels)
set_tests_properties(test_kernels PROPERTIES LABELS "kernels" TIMEOUT 120)

# The same test on the AddressSanitizer/UBSan library, at smaller sizes.
if(TARGET ulcore_asan)
  add_executable(test_kernels_asan ${CMAKE_CURRENT_SOURCE_DIR}/test_kernels.c ${CMAKE_CURRENT_SOURCE_DIR}/testutil.c)
  target_link_libraries(test_kernels_asan PRIVATE ulcore_asan)
  target_include_directories(test_kernels_asan PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
  add_test(NAME test_kernels_asan COMMAND test_kernels_asan --small)
  set_tests_properties(test_kernels_asan PROPERTIES LABELS "kernels;asan" TIMEOUT 300)
endif()
