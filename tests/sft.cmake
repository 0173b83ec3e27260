# SFT data with loss masks (issue 18): chat / prompt-completion / pre-tokenized JSONL against
# transformers' apply_chat_template references (tests/fixtures/chat_sft), and the README's
# "Fine-tune a Hugging Face model" commands on the tiny Qwen2 model of tests/fixtures/chat_qwen2.
add_test(NAME sft_tokenize COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/sft_test.sh $<TARGET_FILE:ulysses> tokenize)
set_tests_properties(sft_tokenize PROPERTIES LABELS formats)
if(TARGET ulysses_asan) # the same on the ASan/UBSan build (the JSONL parsing and chat encoding)
  add_test(NAME sft_tokenize_asan COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/sft_test.sh $<TARGET_FILE:ulysses_asan> tokenize)
  set_tests_properties(sft_tokenize_asan PROPERTIES LABELS formats ENVIRONMENT "ASAN_OPTIONS=detect_leaks=0")
endif()
foreach(case finetune mesh)
  add_test(NAME sft_${case} COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/sft_test.sh $<TARGET_FILE:ulysses> ${case})
  set_tests_properties(sft_${case} PROPERTIES ENVIRONMENT "${UL_CLI_ENV}" PROCESSORS 2)
endforeach()
