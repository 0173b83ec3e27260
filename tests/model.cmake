# The whole model against Hugging Face transformers fixtures (issue 2).
foreach(fx hf_tiny hf_tiny_tied qwen2_tiny qwen3_tiny mistral_tiny)
  add_test(NAME model_hf_${fx} COMMAND $<TARGET_FILE:test_model_hf> ${UL_FIXTURES}/${fx})
  set_tests_properties(model_hf_${fx} PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=2")
endforeach()
