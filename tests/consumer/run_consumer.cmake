# Builds and runs one consumer project. MODE=subdirectory: the consumer add_subdirectory()s the source tree.
# MODE=find_package: sgt is first installed to a temporary prefix, then found with find_package(sgt CONFIG).
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
function(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "command failed (${rc}): ${ARGV}")
  endif()
endfunction()
if(MODE STREQUAL "find_package")
  run(${CMAKE_COMMAND} -S "${SGT_SOURCE_DIR}" -B "${WORK_DIR}/sgt-build" -DSGT_BUILD_TESTS=OFF
      -DSGT_BUILD_EXAMPLES=OFF -DSGT_BUILD_BENCHMARKS=OFF -DSGT_ENABLE_CUDA=OFF
      -DCMAKE_INSTALL_PREFIX=${WORK_DIR}/prefix)
  run(${CMAKE_COMMAND} --install "${WORK_DIR}/sgt-build")
  run(${CMAKE_COMMAND} -S "${SGT_SOURCE_DIR}/tests/consumer/find_package" -B "${WORK_DIR}/build"
      -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix)
else()
  run(${CMAKE_COMMAND} -S "${SGT_SOURCE_DIR}/tests/consumer/subdirectory" -B "${WORK_DIR}/build"
      -DSGT_SOURCE_DIR=${SGT_SOURCE_DIR})
endif()
run(${CMAKE_COMMAND} --build "${WORK_DIR}/build")
run("${WORK_DIR}/build/consumer")
