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

// The TMA map of A (m x k, row-major; fp16, which serves bf16 as well: a
// tensor copy moves bytes) for the TMA variants (_tma, _mc2, wg_pc_*): boxes of
// `box_rows` rows x 64 k (128 bytes), 128-byte swizzle, rows past m read as
// zeros. cudaErrorInvalidValue when the driver rejects it (w4a16_tensor_map.cu).
cudaError_t EncodeActivationMap(CUtensorMap* map, const __half* a, int m, int k, int box_rows);

// p.pdl: as a programmatic dependent of the previous kernel on the stream
// (the kernel waits for it before its first copy; W4A16GemmArgs::pdl).
// `grid` counts stream-K blocks: clusters of Cfg::kCluster CTAs.
template <class Cfg>
cudaError_t LaunchW4A16Wgmma(const Params& p, int grid, cudaStream_t stream) {
  CUtensorMap a_map{};  // unused without TMA
  if constexpr (Cfg::kTma) {
    // One box per CTA of a cluster: its share of the tile's rows.
    const int box_rows = Cfg::kBm / Cfg::kCluster;
    if (const cudaError_t e = EncodeActivationMap(&a_map, p.a, p.m, p.k, box_rows); e != cudaSuccess) return e;
  }
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(grid * Cfg::kCluster), 1, 1);
  cfg.blockDim = dim3(Cfg::kThreads, 1, 1);
  cfg.dynamicSmemBytes = Cfg::kSmemBytes;
  cfg.stream = stream;
  cudaLaunchAttribute attrs[2] = {};
  int n_attrs = 0;
  if (p.pdl) {
    attrs[n_attrs].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attrs[n_attrs++].val.programmaticStreamSerializationAllowed = 1;
  }
  if constexpr (Cfg::kCluster > 1) {
    attrs[n_attrs].id = cudaLaunchAttributeClusterDimension;
    attrs[n_attrs++].val.clusterDim = {static_cast<unsigned>(Cfg::kCluster), 1, 1};
  }
  cfg.attrs = attrs;
  cfg.numAttrs = n_attrs;
  return cudaLaunchKernelEx(&cfg, &W4A16WgmmaKernel<Cfg>, p, a_map);
}

// sm_90 only, and only when the build has sm_90a code (CMake defines
// QF_W4A16_SM90A then): the kernel is a trap in every other target, including
// the sm_80 PTX that a newer device would JIT.
#ifdef QF_W4A16_SM90A
inline constexpr int kWgmmaMaxSm = 90;
#else
inline constexpr int kWgmmaMaxSm = 0;
#endif

// k and n up to 2^23: a tile's rows of A then span below 2^32 bytes
// (256 * k * 2), and so does a stage's weights (8 * n * 8).
inline constexpr int64_t kWgmmaMaxKn = int64_t{1} << 23;

// A table row of a wgmma-family kernel (this one or w4a16_wgss.cuh's): sm_90a
// only, split-K partials of whole tiles.
template <class Cfg>
Variant WgmmaFamilyVariant(const char* name, const void* kernel,
                           cudaError_t (*launch)(const Params&, int, cudaStream_t)) {
  Variant v = VariantOf<Cfg>(name, 90, kernel, launch);
  v.max_sm = kWgmmaMaxSm;
  v.full_tile_partials = true;
  v.max_kn = kWgmmaMaxKn;
  return v;
}

// A cluster variant's tile is its cluster's: Cfg::kCluster CTAs side by side.
template <class Cfg>
Variant MakeWgmmaVariant(const char* name) {
  Variant v =
      WgmmaFamilyVariant<Cfg>(name, reinterpret_cast<const void*>(&W4A16WgmmaKernel<Cfg>), &LaunchW4A16Wgmma<Cfg>);
  v.bn *= Cfg::kCluster;
  v.cluster = Cfg::kCluster;
  v.bf16 = Cfg::Elem::kBf16;
  return v;
}

// The 128 x 256 tiles (65-128 rows) take an even split from 84% of the SMs:
// 56 tiles split in halves over 112 of 132 SMs ran faster than stream-K over
// all 132, where most blocks end inside a second tile. H100, M = 128, decode
// loop (bench/results/w4a16_h100_m128_grids.log): 4096 x 14336 44.5 us
// against 50.5 on the producer tiles, 46.4 against 48.1 on the cp.async
// ones; 5120 x 14336 51.3-51.6 against 56.3-56.5 and 54.4 against 54.5.
// As planned, 4096, 5120 and 6144 x 14336 at M = 128 then ran 3-7% faster
// than the table's picks before in fp16 (w4a16_h100_even_split_84.log), and
// 4096 x 14336 10% faster in bf16 (w4a16_h100_even_split_bf16.log).
inline constexpr int64_t kT128N256EvenFillPct = 84;

inline Variant WithEvenFill(Variant v, int64_t pct) {
  v.even_fill_pct = pct;
  return v;
}

}  // namespace qf::kernels::w4a16
