# Writes OUT (a header defining UL_GIT_COMMIT) from `git describe` of SRC at build time; the
# file is rewritten only when the text changes, so an unchanged commit rebuilds nothing.
# Without git or outside a git checkout (a source tarball) UL_GIT_COMMIT is "".
set(commit "")
find_program(GIT git)
if(GIT)
  execute_process(COMMAND ${GIT} -C ${SRC} describe --always --dirty --abbrev=12
                  OUTPUT_VARIABLE commit ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    set(commit "")
  endif()
endif()
set(text "#define UL_GIT_COMMIT \"${commit}\"\n")
if(EXISTS ${OUT})
  file(READ ${OUT} old)
endif()
if(NOT "${old}" STREQUAL "${text}")
  file(WRITE ${OUT} "${text}")
endif()
