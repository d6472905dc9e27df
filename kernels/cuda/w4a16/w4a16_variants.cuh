// File: kernels/cuda/w4a16/w4a16_variants.cuh
//
// The table of compiled W4A16 GEMM variants. Each instance file under
// instances/ defines one Variant; w4a16_gemm.cu lists them in preference
// order and picks the first whose shape constraints hold (no if-chains over
// sizes). Adding a variant = one instance file + one table row.
//
//   const Variant& v = kW4A16Mb1Bn128;      // declared below
//   v.launch(params, grid, stream);
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "kernels/cuda/w4a16/w4a16_kernel.cuh"

namespace qf::kernels::w4a16 {

struct Variant {
  const char* name;     // "mb1_bn128_bk128_s6"
  int bm, bn, bk;       // block tile: rows of A, columns of C, kernel rows per stage
  int threads;
  int stages;
  int min_blocks;       // launch bound: resident blocks per SM the registers are sized for
  size_t smem_bytes;    // dynamic shared memory
  const void* kernel;   // for cudaFuncSetAttribute / occupancy queries
  void (*launch)(const Params& p, int grid, cudaStream_t stream);
};

template <class Cfg>
void LaunchW4A16(const Params& p, int grid, cudaStream_t stream) {
  W4A16GemmKernel<Cfg><<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(p);
}

template <class Cfg>
Variant MakeVariant(const char* name) {
  return Variant{name,           Cfg::kBm,       Cfg::kBn,
                 Cfg::kBk,       Cfg::kThreads,  Cfg::kStages,
                 Cfg::kMinBlocks, Cfg::kSmemBytes, reinterpret_cast<const void*>(&W4A16GemmKernel<Cfg>),
                 &LaunchW4A16<Cfg>};
}

// Small m (memory bound): 2 x 4 warps, 128 x 128 stages, two blocks per SM.
using CfgMb1Bn128 = Config</*MB=*/1, /*WN=*/2, /*WK=*/4, /*KS=*/8, /*STAGES=*/6, /*MIN_BLOCKS=*/2>;
using CfgMb2Bn128 = Config<2, 2, 4, 8, 5, 2>;
// Larger m: 4 x 2 warps, 64 x 256 stages, one block per SM.
using CfgMb3Bn256 = Config<3, 4, 2, 4, 4, 1>;
using CfgMb4Bn256 = Config<4, 4, 2, 4, 4, 1>;
// Fallbacks for n % 256 != 0.
using CfgMb3Bn128 = Config<3, 2, 4, 8, 4, 1>;
using CfgMb4Bn128 = Config<4, 2, 4, 8, 4, 1>;

// Tuning-only alternatives (reachable by name): stage depth, tile shape,
// occupancy.
using CfgTuneMb1Bn128S4 = Config<1, 2, 4, 8, 4, 2>;
using CfgTuneMb1Bn256 = Config<1, 4, 2, 4, 6, 2>;
using CfgTuneMb1Bk64 = Config<1, 2, 4, 4, 8, 2>;
using CfgTuneMb2OneBlock = Config<2, 2, 4, 8, 8, 1>;
using CfgTuneMb2Bn256 = Config<2, 4, 2, 4, 5, 2>;
using CfgTuneMb4S3 = Config<4, 4, 2, 4, 3, 1>;

extern const Variant kW4A16Mb1Bn128;
extern const Variant kW4A16Mb2Bn128;
extern const Variant kW4A16Mb3Bn256;
extern const Variant kW4A16Mb4Bn256;
extern const Variant kW4A16Mb3Bn128;
extern const Variant kW4A16Mb4Bn128;
extern const Variant kW4A16TuneMb1Bn128S4;
extern const Variant kW4A16TuneMb1Bn256;
extern const Variant kW4A16TuneMb1Bk64;
extern const Variant kW4A16TuneMb2OneBlock;
extern const Variant kW4A16TuneMb2Bn256;
extern const Variant kW4A16TuneMb4S3;

}  // namespace qf::kernels::w4a16
