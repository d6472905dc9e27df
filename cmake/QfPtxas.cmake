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
  set(_qf_shadow ${CMAKE_BINARY_DIR}/cuda-toolkit)
  # The toolkit to shadow: the nvcc the user named, else the one on the usual
  # paths (not our own shadow's, which a re-configure finds in the cache).
  if(CMAKE_CUDA_COMPILER AND NOT CMAKE_CUDA_COMPILER MATCHES "^${_qf_shadow}/")
    set(_qf_nvcc ${CMAKE_CUDA_COMPILER} CACHE INTERNAL "")
  endif()
  find_program(_qf_nvcc NAMES nvcc HINTS ${CUDAToolkit_ROOT}/bin /usr/local/cuda/bin)
  if(NOT _qf_nvcc)
    message(FATAL_ERROR "QF_PTXAS is set but no nvcc was found to pair it with")
  endif()
  get_filename_component(_qf_nvcc_real ${_qf_nvcc} REALPATH)
  get_filename_component(_qf_toolkit ${_qf_nvcc_real} DIRECTORY)
  get_filename_component(_qf_toolkit ${_qf_toolkit} DIRECTORY)
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
  # Copied only when different, so a re-configure keeps the build (and ccache)
  # warm.
  foreach(f ${_qf_toolkit}/bin/nvcc ${_qf_toolkit}/bin/nvcc.profile ${QF_PTXAS})
    get_filename_component(_qf_name ${f} NAME)
    file(COPY_FILE ${f} ${_qf_shadow}/bin/${_qf_name} ONLY_IF_DIFFERENT RESULT _qf_cp)
    if(_qf_cp)
      message(FATAL_ERROR "QF_PTXAS: could not copy ${f} to ${_qf_shadow}/bin: ${_qf_cp}")
    endif()
  endforeach()
  foreach(tool nvcc ptxas)
    execute_process(COMMAND ${_qf_shadow}/bin/${tool} --version OUTPUT_VARIABLE _qf_out RESULT_VARIABLE _qf_rc)
    if(NOT _qf_rc EQUAL 0)
      message(FATAL_ERROR "QF_PTXAS: ${_qf_shadow}/bin/${tool} does not run")
    endif()
    string(REGEX MATCH "V[0-9.]+" _qf_${tool}_version "${_qf_out}")
  endforeach()
  set(CMAKE_CUDA_COMPILER ${_qf_shadow}/bin/nvcc CACHE FILEPATH "nvcc of the shadow toolkit (QF_PTXAS)" FORCE)
  # ccache tells compilers apart by the nvcc binary, which is the toolkit's in
  # both builds: key the CUDA objects on both versions instead, so that no
  # object assembled by one ptxas is served to a build with the other.
  if(CCACHE_PROGRAM)
    set(CMAKE_CUDA_COMPILER_LAUNCHER ${CMAKE_COMMAND} -E env
        "CCACHE_COMPILERCHECK=string:nvcc-${_qf_nvcc_version}-ptxas-${_qf_ptxas_version}" ${CCACHE_PROGRAM})
  endif()
  message(STATUS "qforge: CUDA kernels assembled by ptxas ${_qf_ptxas_version} (${QF_PTXAS})")
endif()
