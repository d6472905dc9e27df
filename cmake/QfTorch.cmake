# Finds libtorch from the PyPI `torch` package and defines qf::torch.
#
# CPU builds (CI, laptops) link only libtorch_cpu + libc10: no CUDA runtime is
# needed to load the engine module. CUDA builds (QF_CUDA=ON/AUTO with nvcc and a
# CUDA libtorch) go through TorchConfig.cmake, which brings torch_cuda.
#
# Input: QF_PYTHON (default: <source>/.venv/bin/python, then python3) or
# Torch_DIR / CMAKE_PREFIX_PATH.
# Output: target qf::torch, variable QF_HAVE_CUDA (ON when CUDA sources build).

if(NOT QF_PYTHON)
  if(EXISTS ${CMAKE_SOURCE_DIR}/.venv/bin/python)
    set(QF_PYTHON ${CMAKE_SOURCE_DIR}/.venv/bin/python)
  else()
    find_program(QF_PYTHON NAMES python3 REQUIRED)
  endif()
endif()
execute_process(
  COMMAND ${QF_PYTHON} -c "import torch, os; print(os.path.dirname(torch.__file__))"
  OUTPUT_VARIABLE QF_TORCH_ROOT OUTPUT_STRIP_TRAILING_WHITESPACE
  RESULT_VARIABLE _qf_torch_rc ERROR_QUIET)
if(NOT _qf_torch_rc EQUAL 0 OR NOT EXISTS ${QF_TORCH_ROOT}/lib/libtorch_cpu.so)
  message(FATAL_ERROR "libtorch not found through ${QF_PYTHON}: run scripts/setup.sh "
                      "(it installs the PyPI torch package into .venv)")
endif()

set(QF_HAVE_CUDA OFF)
if(NOT QF_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER AND EXISTS ${QF_TORCH_ROOT}/lib/libtorch_cuda.so)
    # Only where a GPU build is wanted: CI's test build keeps QF_CUDA=OFF to
    # stay lean (its CUDA compile check, scripts/check_cuda.sh, asks for ON).
    set(QF_HAVE_CUDA ON)
  elseif(QF_CUDA STREQUAL "ON")
    message(FATAL_ERROR "QF_CUDA=ON but nvcc or a CUDA libtorch is missing")
  endif()
endif()

if(QF_HAVE_CUDA)
  if(NOT CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 90a 80)
  endif()
  enable_language(CUDA)
  set(CMAKE_CUDA_STANDARD 20)
  find_package(CUDAToolkit REQUIRED)
  list(APPEND CMAKE_PREFIX_PATH ${QF_TORCH_ROOT}/share/cmake)
  set(TORCH_CUDA_ARCH_LIST "9.0a;8.0")
  find_package(Torch REQUIRED)
  add_library(qf_torch INTERFACE)
  target_link_libraries(qf_torch INTERFACE ${TORCH_LIBRARIES} CUDA::cudart)
  target_include_directories(qf_torch SYSTEM INTERFACE ${TORCH_INCLUDE_DIRS})
  target_compile_definitions(qf_torch INTERFACE QF_WITH_CUDA=1)
else()
  add_library(qf_torch INTERFACE)
  target_include_directories(qf_torch SYSTEM INTERFACE
    ${QF_TORCH_ROOT}/include ${QF_TORCH_ROOT}/include/torch/csrc/api/include)
  target_link_libraries(qf_torch INTERFACE
    ${QF_TORCH_ROOT}/lib/libtorch_cpu.so ${QF_TORCH_ROOT}/lib/libc10.so)
  target_link_options(qf_torch INTERFACE "LINKER:-rpath,${QF_TORCH_ROOT}/lib")
endif()
add_library(qf::torch ALIAS qf_torch)
message(STATUS "qforge: libtorch at ${QF_TORCH_ROOT}, CUDA kernels: ${QF_HAVE_CUDA}")
