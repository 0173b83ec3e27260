# Hugging Face tokenizers (issue 18): ids and decoded text equal to the Python `tokenizers`
# library, installed from PyPI into the build tree on first use (tests/tokenizer_test.sh).
add_test(NAME tokenizer_hf COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer_test.sh $<TARGET_FILE:ulysses> ${CMAKE_BINARY_DIR})
set_tests_properties(tokenizer_hf PROPERTIES LABELS formats PROCESSORS 2 TIMEOUT 600)
if(TARGET ulysses_asan)
  # the same on the ASan/UBSan build: the tokenizer.json, JSONL and UTF-8 parsers on every input above
  add_test(NAME tokenizer_hf_asan COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer_test.sh $<TARGET_FILE:ulysses_asan>
           ${CMAKE_BINARY_DIR} tokenizer_test_asan)
  set_tests_properties(tokenizer_hf_asan PROPERTIES LABELS formats PROCESSORS 2 TIMEOUT 600
                       ENVIRONMENT "ASAN_OPTIONS=detect_leaks=0")
endif()
