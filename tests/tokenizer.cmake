# Hugging Face tokenizers (issue 18): ids and decoded text equal to the Python `tokenizers`
# library, installed from PyPI into the build tree on first use (tests/tokenizer_test.sh).
add_test(NAME tokenizer_hf COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer_test.sh $<TARGET_FILE:ulysses> ${CMAKE_BINARY_DIR})
set_tests_properties(tokenizer_hf PROPERTIES LABELS formats PROCESSORS 2 TIMEOUT 600)
if(TARGET ulysses_asan)
  # the same on the ASan/UBSan build, for six of the eleven tokenizer setups (bl_llama3 always
  # runs: the error cases use it)
  add_test(NAME tokenizer_hf_asan COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer_test.sh $<TARGET_FILE:ulysses_asan>
           ${CMAKE_BINARY_DIR} tokenizer_test_asan bl_qwen,bl_misc,bl_strip,sp_legacy,deepseek_tokenizer)
  set_tests_properties(tokenizer_hf_asan PROPERTIES LABELS formats PROCESSORS 2 TIMEOUT 600
                       ENVIRONMENT "ASAN_OPTIONS=detect_leaks=0")
endif()
# in process: BPE order and UTF-8 replacement by hand, hostile tokenizer.json files
add_test(NAME hf_tokenizer COMMAND test_hf_tokenizer)
set_tests_properties(hf_tokenizer PROPERTIES LABELS formats)
if(TARGET ulcore_asan)
  add_executable(test_hf_tokenizer_asan ${CMAKE_CURRENT_SOURCE_DIR}/test_hf_tokenizer.c ${CMAKE_CURRENT_SOURCE_DIR}/testutil.c)
  target_link_libraries(test_hf_tokenizer_asan PRIVATE ulcore_asan)
  target_include_directories(test_hf_tokenizer_asan PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
  add_test(NAME hf_tokenizer_asan COMMAND test_hf_tokenizer_asan)
  set_tests_properties(hf_tokenizer_asan PROPERTIES LABELS formats ENVIRONMENT "ASAN_OPTIONS=detect_leaks=1")
endif()
