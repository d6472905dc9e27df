// File: kernels/cuda/w4a16/w4a16_wgmma.cuh
//
// MakeWgmmaVariant turns one WgConfig of the Hopper wgmma kernel
// (w4a16_wgmma_kernel.cuh) into a row of the variant table. The kernel takes
// the tiled kernel's Params and stream-K plan, so the host side (validation,
// plan, workspace, launch) is w4a16_gemm.cu's, unchanged.
//
//   // instances/w4a16_wg_t128_n256.cu
//   const Variant kW4A16WgT128 = MakeWgmmaVariant<WgConfig<128, 2, 5>>("wg_t128_n256_s5");
#pragma once

#include "kernels/cuda/w4a16/w4a16_variants.cuh"
#include "kernels/cuda/w4a16/w4a16_wgmma_kernel.cuh"

namespace qf::kernels::w4a16 {

template <class Cfg>
void LaunchW4A16Wgmma(const Params& p, int grid, cudaStream_t stream) {
  W4A16WgmmaKernel<Cfg><<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(p);
}

// sm_90: wgmma (the kernel traps in builds without sm_90a code).
template <class Cfg>
Variant MakeWgmmaVariant(const char* name) {
  return VariantOf<Cfg>(name, 90, reinterpret_cast<const void*>(&W4A16WgmmaKernel<Cfg>), &LaunchW4A16Wgmma<Cfg>);
}

}  // namespace qf::kernels::w4a16
