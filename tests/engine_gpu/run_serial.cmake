# Included by ctest after engine_gpu_test's discovered tests (CMakeLists.txt).
# ctest scripts have no if(TEST): a renamed test makes this a no-op, not an error.
set_tests_properties(GpuSessionTest.OutOfMemoryNamesTheLayerAndTheSize PROPERTIES RUN_SERIAL TRUE)
