# cuDNN's fused attention for the CUDA backend (include/sgt/backend/cuda/cudnn_attention.hpp), optional.
# SGT_CUDNN: AUTO (the default) uses it when found, ON requires it, OFF leaves it out; without it the bf16
# attention core runs on our own kernels. Needs cuDNN 9 (cudnn.h and libcudnn.so.9) and the header-only
# cudnn-frontend (cudnn_frontend.h), from the system, from CUDNN_ROOT / CUDNN_FRONTEND_ROOT, or from the
# Python packages: `pip install nvidia-cudnn-cu13 nvidia-cudnn-frontend` (the wheels PyTorch also uses).
# A program built with it loads libcudnn.so.9 at start: point LD_LIBRARY_PATH at the library's folder
# (SGT_CUDNN_LIBRARY shows where it was found).
set(SGT_CUDNN AUTO CACHE STRING "cuDNN's fused attention: AUTO (when found), ON (required) or OFF")
set_property(CACHE SGT_CUDNN PROPERTY STRINGS AUTO ON OFF)
set(SGT_WITH_CUDNN OFF)
if(NOT SGT_CUDNN STREQUAL "OFF")
  # Where pip puts the wheels: site-packages/nvidia/cudnn/{include,lib} and site-packages/include.
  set(_sgt_py_hints "")
  find_program(_sgt_python NAMES python3 python)
  if(_sgt_python)
    execute_process(COMMAND ${_sgt_python} -c "import site,sys; print(';'.join(site.getsitepackages()+[site.getusersitepackages()]))"
                    OUTPUT_VARIABLE _sgt_py_sites OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    foreach(_site IN LISTS _sgt_py_sites)
      list(APPEND _sgt_py_hints ${_site}/nvidia/cudnn ${_site})
    endforeach()
  endif()
  # cuDNN itself: CUDNN_ROOT, then the CUDA toolkit's folders, then pip's; the library from beside the header.
  set(_sgt_hints ${CUDNN_ROOT} $ENV{CUDNN_ROOT} ${CUDAToolkit_INCLUDE_DIRS} ${CUDAToolkit_LIBRARY_ROOT} ${_sgt_py_hints})
  find_path(SGT_CUDNN_INCLUDE_DIR cudnn.h HINTS ${_sgt_hints} PATH_SUFFIXES include)
  if(SGT_CUDNN_INCLUDE_DIR)
    find_library(SGT_CUDNN_LIBRARY NAMES cudnn libcudnn.so.9 HINTS ${SGT_CUDNN_INCLUDE_DIR}/.. ${_sgt_hints}
                 PATH_SUFFIXES lib lib64 lib/x86_64-linux-gnu)
  endif()
  set(_sgt_hints ${CUDNN_FRONTEND_ROOT} $ENV{CUDNN_FRONTEND_ROOT} ${_sgt_py_hints})
  find_path(SGT_CUDNN_FRONTEND_INCLUDE_DIR cudnn_frontend.h HINTS ${_sgt_hints} PATH_SUFFIXES include)
  if(SGT_CUDNN_INCLUDE_DIR AND SGT_CUDNN_LIBRARY AND SGT_CUDNN_FRONTEND_INCLUDE_DIR)
    set(SGT_WITH_CUDNN ON)
    message(STATUS "sgt: cuDNN attention on (${SGT_CUDNN_LIBRARY}, frontend ${SGT_CUDNN_FRONTEND_INCLUDE_DIR})")
  elseif(SGT_CUDNN STREQUAL "ON")
    message(FATAL_ERROR "sgt: SGT_CUDNN=ON but cuDNN was not found (cudnn.h: ${SGT_CUDNN_INCLUDE_DIR}, "
      "libcudnn: ${SGT_CUDNN_LIBRARY}, cudnn_frontend.h: ${SGT_CUDNN_FRONTEND_INCLUDE_DIR}). "
      "pip install nvidia-cudnn-cu13 nvidia-cudnn-frontend, or set CUDNN_ROOT and CUDNN_FRONTEND_ROOT.")
  else()
    message(STATUS "sgt: cuDNN attention off (not found; SGT_CUDNN=AUTO). Our own attention kernels run.")
  endif()
endif()
if(SGT_WITH_CUDNN)
  target_sources(sgt_cuda_kernels PRIVATE include/sgt/backend/cuda/cudnn_attention.cpp)
  target_include_directories(sgt_cuda_kernels SYSTEM PRIVATE ${SGT_CUDNN_INCLUDE_DIR} ${SGT_CUDNN_FRONTEND_INCLUDE_DIR})
  target_link_libraries(sgt_cuda_kernels PUBLIC ${SGT_CUDNN_LIBRARY} CUDA::nvrtc)  # the frontend JIT-builds some engines
  # Every translation unit must agree on it: it decides which attention path runs and what the forward saves.
  target_compile_definitions(sgt_cuda INTERFACE SGT_WITH_CUDNN)
endif()
