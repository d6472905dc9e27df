# Included by ctest after engine_gpu_test's discovered tests (CMakeLists.txt).
set(_qf_serial GpuSessionTest.OutOfMemoryNamesTheLayerAndTheSize)
if(TEST ${_qf_serial})
  set_tests_properties(${_qf_serial} PROPERTIES RUN_SERIAL TRUE)
else()
  message(WARNING "run_serial.cmake: ${_qf_serial} was not discovered in engine_gpu_test; renamed?")
endif()
