// File: kernels/plan/host_device.h
//
// QF_HOST_DEVICE marks the plan functions that the CUDA kernels call too:
// __host__ __device__ under nvcc, nothing in plain C++ (the CPU tests).
#pragma once

#if defined(__CUDACC__)
#define QF_HOST_DEVICE __host__ __device__
#else
#define QF_HOST_DEVICE
#endif
