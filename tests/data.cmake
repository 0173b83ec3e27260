add_test(NAME data COMMAND $<TARGET_FILE:test_data>)
