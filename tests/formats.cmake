# File formats (safetensors, config.json, HF model dirs, token shards): round trips and
# hostile inputs. test_corrupt also runs against the sanitized library.
add_test(NAME formats COMMAND test_formats)
add_test(NAME corrupt COMMAND test_corrupt)
set_tests_properties(formats corrupt PROPERTIES LABELS formats)
if(TARGET ulcore_asan)
  add_executable(test_corrupt_asan ${CMAKE_CURRENT_SOURCE_DIR}/test_corrupt.c ${CMAKE_CURRENT_SOURCE_DIR}/testutil.c)
  target_link_libraries(test_corrupt_asan PRIVATE ulcore_asan)
  target_include_directories(test_corrupt_asan PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
  add_test(NAME corrupt_asan COMMAND test_corrupt_asan)
  set_tests_properties(corrupt_asan PROPERTIES LABELS formats ENVIRONMENT "ASAN_OPTIONS=detect_leaks=1")
endif()
