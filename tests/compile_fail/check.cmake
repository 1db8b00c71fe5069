# Compiles SOURCE (expected to fail) and checks that the compiler's output contains EXPECT. With EXPECT_SUCCESS
# set, the source (with its extra FLAGS) must compile instead: the control of a compile-fail test.
execute_process(COMMAND ${CXX} -std=c++20 -fsyntax-only ${FLAGS} ${SOURCE}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(EXPECT_SUCCESS)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${SOURCE} must compile, but:\n${err}")
  endif()
  message(STATUS "${SOURCE} compiles")
  return()
endif()
if(rc EQUAL 0)
  message(FATAL_ERROR "${SOURCE} compiled, but it must not")
endif()
string(FIND "${out}${err}" "${EXPECT}" pos)
if(pos EQUAL -1)
  message(FATAL_ERROR "the compiler's message for ${SOURCE} does not say '${EXPECT}':\n${err}")
endif()
message(STATUS "${SOURCE} is refused with: ${EXPECT}")
