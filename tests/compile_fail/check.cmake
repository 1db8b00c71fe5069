# Compiles SOURCE (expected to fail) and checks that the compiler's output contains EXPECT.
execute_process(COMMAND ${CXX} -std=c++20 -fsyntax-only ${FLAGS} ${SOURCE}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "${SOURCE} compiled, but it must not")
endif()
string(FIND "${out}${err}" "${EXPECT}" pos)
if(pos EQUAL -1)
  message(FATAL_ERROR "the compiler's message for ${SOURCE} does not say '${EXPECT}':\n${err}")
endif()
message(STATUS "${SOURCE} is refused with: ${EXPECT}")
