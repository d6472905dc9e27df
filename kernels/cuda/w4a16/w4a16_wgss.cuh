// File: kernels/cuda/w4a16/w4a16_wgss.cuh
//
// MakeWgssVariant turns one WgssConfig of the dequantize-to-shared wgmma
// kernel (w4a16_wgss_kernel.cuh) into a row of the variant table; like the
// register-A wgmma kernel it takes the tiled kernel's Params and stream-K
// plan, so the host side is w4a16_gemm.cu's.
//
//   // instances/w4a16_wg_ss_t128_n256.cu
//   const Variant kW4A16WgSsT128N256 = MakeWgssVariant<WgssConfig<128, 256, 3, 4, 4, 1>>("wg_ss_t128_n256_o3_w4_a4");
#pragma once

#include "kernels/cuda/w4a16/w4a16_wgmma.cuh"  // EncodeActivationMap, WgmmaFamilyVariant
#include "kernels/cuda/w4a16/w4a16_wgss_kernel.cuh"

namespace qf::kernels::w4a16 {

template <class Cfg>
cudaError_t LaunchW4A16Wgss(const Params& p, int grid, cudaStream_t stream) {
  CUtensorMap a_map{};
  if (const cudaError_t e = EncodeActivationMap(&a_map, p.a, p.m, p.k, 64); e != cudaSuccess) return e;
  W4A16WgssKernel<Cfg><<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(p, a_map);
  return cudaSuccess;
}

template <class Cfg>
Variant MakeWgssVariant(const char* name) {
  return WgmmaFamilyVariant<Cfg>(name, reinterpret_cast<const void*>(&W4A16WgssKernel<Cfg>), &LaunchW4A16Wgss<Cfg>);
}

}  // namespace qf::kernels::w4a16
