# Builds the CUDA kernels with a newer ptxas than the installed toolkit's.
#
# QF_PTXAS=<path to a ptxas binary> (e.g. the one scripts/fetch-ptxas.sh puts
# in .venv from NVIDIA's nvidia-cuda-nvcc PyPI wheel). Empty: the toolkit's own.
#
# nvcc runs the ptxas that sits next to it (its nvcc.profile puts its own bin
# directory first on PATH), so this makes a shadow toolkit in the build tree:
# every entry of the real toolkit linked, bin/ptxas replaced, bin/nvcc copied
# (nvcc resolves the toolkit from its own location). The front end, headers and
# runtime stay those of the installed toolkit; only the SASS generation is
# newer. Measured on the H200 (kernels/README.md, "The assembler"): ptxas 13.5
# against 13.0 took 1-4% off the decode kernels and met down at M = 1.
#
# Must run before the CUDA language is enabled (QfTorch.cmake).

set(QF_PTXAS "" CACHE FILEPATH "ptxas binary to build the CUDA kernels with (empty: the toolkit's)")
if(QF_PTXAS AND NOT QF_CUDA STREQUAL "OFF")
  if(NOT EXISTS ${QF_PTXAS})
    message(FATAL_ERROR "QF_PTXAS=${QF_PTXAS}: no such file (scripts/fetch-ptxas.sh downloads one)")
  endif()
  find_program(_qf_nvcc NAMES nvcc HINTS ${CUDAToolkit_ROOT}/bin /usr/local/cuda/bin)
  if(NOT _qf_nvcc)
    message(FATAL_ERROR "QF_PTXAS is set but no nvcc was found to pair it with")
  endif()
  get_filename_component(_qf_nvcc_real ${_qf_nvcc} REALPATH)
  get_filename_component(_qf_toolkit ${_qf_nvcc_real} DIRECTORY)
  get_filename_component(_qf_toolkit ${_qf_toolkit} DIRECTORY)
  set(_qf_shadow ${CMAKE_BINARY_DIR}/cuda-toolkit)
  file(MAKE_DIRECTORY ${_qf_shadow}/bin)
  file(GLOB _qf_entries RELATIVE ${_qf_toolkit} ${_qf_toolkit}/*)
  foreach(e IN LISTS _qf_entries)
    if(NOT e STREQUAL "bin" AND NOT EXISTS ${_qf_shadow}/${e})
      file(CREATE_LINK ${_qf_toolkit}/${e} ${_qf_shadow}/${e} SYMBOLIC)
    endif()
  endforeach()
  file(GLOB _qf_tools RELATIVE ${_qf_toolkit}/bin ${_qf_toolkit}/bin/*)
  foreach(t IN LISTS _qf_tools)
    if(t STREQUAL "nvcc" OR t STREQUAL "nvcc.profile" OR t STREQUAL "ptxas")
      continue()
    endif()
    if(NOT EXISTS ${_qf_shadow}/bin/${t})
      file(CREATE_LINK ${_qf_toolkit}/bin/${t} ${_qf_shadow}/bin/${t} SYMBOLIC)
    endif()
  endforeach()
  # Plain copies with fresh timestamps: ccache tells compilers apart by
  # mtime, and objects from the toolkit's ptxas must not be reused.
  execute_process(COMMAND cp -f ${_qf_toolkit}/bin/nvcc ${_qf_toolkit}/bin/nvcc.profile ${QF_PTXAS} ${_qf_shadow}/bin/
                  RESULT_VARIABLE _qf_cp)
  if(NOT _qf_cp EQUAL 0)
    message(FATAL_ERROR "QF_PTXAS: could not populate ${_qf_shadow}/bin")
  endif()
  execute_process(COMMAND ${_qf_shadow}/bin/ptxas --version OUTPUT_VARIABLE _qf_ptxas_version
                  RESULT_VARIABLE _qf_rc)
  if(NOT _qf_rc EQUAL 0)
    message(FATAL_ERROR "QF_PTXAS=${QF_PTXAS} does not run")
  endif()
  string(REGEX MATCH "V[0-9.]+" _qf_ptxas_version "${_qf_ptxas_version}")
  set(CMAKE_CUDA_COMPILER ${_qf_shadow}/bin/nvcc CACHE FILEPATH "nvcc of the shadow toolkit (QF_PTXAS)" FORCE)
  message(STATUS "qforge: CUDA kernels assembled by ptxas ${_qf_ptxas_version} (${QF_PTXAS})")
endif()
