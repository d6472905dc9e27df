// File: kernels/cuda/w4a16/w4a16_wgmma_ptx.cuh
//
// Hopper-only inline-PTX wrappers of the wgmma kernels (sm_90a): warpgroup
// MMA with register or shared-memory A, its fences and wait groups, the
// 128-byte-swizzle shared-memory descriptor, TMA tensor copies (with
// multicast), the in-flight mbarrier wait, and setmaxnreg with the wait of a
// warpgroup that raised it.
#pragma once

#include <cuda.h>  // CUtensorMap
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cuda/w4a16/w4a16_ptx.cuh"

namespace qf::kernels::w4a16 {

// QF_SM90A: wgmma exists only in sm_90a code (arch-specific features); other
// targets compile these variants to a trap and the host never selects them
// below sm_90 (the project builds 90a for Hopper).
#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define QF_SM90A(...) __trap()
#else
#define QF_SM90A(...) __VA_ARGS__
#endif

// ---------------------------------------------------------------- PTX wrappers
// https://docs.nvidia.com/cuda/parallel-thread-execution/#asynchronous-warpgroup-level-matrix-instructions

// Orders this warpgroup's register writes (A fragments, accumulators) before
// the wgmma that follow.
__device__ __forceinline__ void WgmmaFence() { QF_SM90A(asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory")); }
__device__ __forceinline__ void WgmmaCommit() {
  QF_SM90A(asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"));
}
template <int kPending>
__device__ __forceinline__ void WgmmaWait() {
  QF_SM90A(asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory"));
}

// Register reallocation between the warpgroups of a block (every thread of
// the warpgroup executes it): the producer gives registers back (dec) and the
// consumers take them (inc), so the launch bound's per-thread share no longer
// caps the accumulators. ptxas allocates the code after each to its count.
template <int kRegs>
__device__ __forceinline__ void SetMaxNRegDec() {
  static_assert(kRegs % 8 == 0 && kRegs >= 24 && kRegs <= 256, "setmaxnreg takes multiples of 8 in [24, 256]");
  QF_SM90A(asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs)));
}
template <int kRegs>
__device__ __forceinline__ void SetMaxNRegInc() {
  static_assert(kRegs % 8 == 0 && kRegs >= 24 && kRegs <= 256, "setmaxnreg takes multiples of 8 in [24, 256]");
  QF_SM90A(asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs)));
}

// MbarWait for a warpgroup that raised its registers with SetMaxNRegInc.
// ptxas allocates any region that can reach a trap to the launch bound's
// per-thread count (ptxas 13.5: 168 registers at 384 threads, whatever the
// setmaxnreg; the 256-row tiles then spilled and serialized their wgmma), so
// the timeout gives the registers back before it traps. Every thread of the
// warpgroup waits on the same phase, so all of them reach the `dec`.
template <int kRegs>
__device__ __forceinline__ void MbarWaitRaised(uint32_t bar, uint32_t parity) {
  MbarWait(bar, parity, [] { SetMaxNRegDec<kRegs>(); });
}

// Makes the compiler treat `r` as rewritten here, so no read of an
// accumulator moves above the wgmma wait that completes it.
template <int N>
__device__ __forceinline__ void FenceRegs(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}

// Shared-memory matrix descriptor of a K-major operand in 128-byte swizzle
// atoms (8 rows x 128 bytes, 1024-byte aligned): start address, leading byte
// offset 16 (unused by swizzled K-major layouts), stride 1024 bytes between
// 8-row groups, swizzle mode 1 (128 B) in bits 62-63. Stepping 16 kernel rows
// = 32 bytes along the atom adds 2 to the encoded start address.
__device__ __forceinline__ uint64_t SmemDescSw128(uint32_t smem_addr) {
  return static_cast<uint64_t>((smem_addr & 0x3FFFFu) >> 4) | (uint64_t{16 >> 4} << 16) |
         (uint64_t{1024 >> 4} << 32) | (uint64_t{1} << 62);
}

// 16-byte async copy that reads `src_bytes` (16 or 0) and zero-fills the rest.
__device__ __forceinline__ void CpAsync16Zfill(void* smem, const void* gmem, uint32_t src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(SmemAddr(smem)), "l"(gmem), "r"(src_bytes));
}

// TMA tensor copy of one box of A (2-D map: k inner, rows outer) into shared
// memory, completing on `bar`. Rows past the map's m arrive as zeros.
__device__ __forceinline__ void TmaLoad2d(void* smem, const CUtensorMap* map, int k0, int row0, uint64_t* bar) {
  QF_SM90(asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::
          "r"(SmemAddr(smem)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(k0), "r"(row0), "r"(SmemAddr(bar))
      : "memory"));
}

// The same copy multicast to the CTAs of `cta_mask` in the cluster: the box
// lands at the same shared-memory offset in each of them and completes on the
// mbarrier at `bar`'s offset there.
__device__ __forceinline__ void TmaLoad2dMulticast(void* smem, const CUtensorMap* map, int k0, int row0, uint64_t* bar,
                                                   uint16_t cta_mask) {
  QF_SM90(asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
      " [%0], [%1, {%2, %3}], [%4], %5;\n" ::"r"(SmemAddr(smem)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(k0), "r"(row0), "r"(SmemAddr(bar)), "h"(cta_mask)
      : "memory"));
}

// The cluster barrier halves (ClusterArrive, ClusterWait) are
// w4a16_ptx.cuh's; the pairs meet there only after initializing their
// barriers and before exit (the ring's slots go back through empty mbarriers).

// Waits for phase `parity` of `bar` with the retry loop inside one asm block:
// a C++ loop around try_wait is control flow that ptxas answers by draining
// the wgmma in flight (C7517); this form keeps them in flight. A phase that
// never completes traps after 2^26 tries instead of hanging the GPU.
__device__ __forceinline__ void MbarWaitInFlight(uint32_t bar, uint32_t parity) {
  QF_SM90(asm volatile(
      "{\n"
      "  .reg .pred p;\n"
      "  .reg .u32 n;\n"
      "  mov.u32 n, 0;\n"
      "WAIT:\n"
      "  mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      "  @p bra.uni DONE;\n"
      "  add.u32 n, n, 1;\n"
      "  setp.gt.u32 p, n, 0x4000000;\n"
      "  @p trap;\n"
      "  bra.uni WAIT;\n"
      "DONE:\n"
      "}\n" ::"r"(bar),
      "r"(parity)
      : "memory"));
}
__device__ __forceinline__ void MbarWaitInFlight(uint64_t* bar, uint32_t parity) { MbarWaitInFlight(SmemAddr(bar), parity); }

// The accumulator operands of one wgmma: QF_WG_D<n> is the PTX list
// "{%0, ..., %n-1}", QF_WG_ACC<n>(d) the matching read-write constraints, so
// the register-A and shared-A forms below share them.
#define QF_WG_ACC8(d, i) \
  "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
#define QF_WG_ACC32(d, i) QF_WG_ACC8(d, i), QF_WG_ACC8(d, i + 8), QF_WG_ACC8(d, i + 16), QF_WG_ACC8(d, i + 24)
#define QF_WG_ACC64(d) QF_WG_ACC32(d, 0), QF_WG_ACC32(d, 32)
#define QF_WG_ACC128(d) QF_WG_ACC32(d, 0), QF_WG_ACC32(d, 32), QF_WG_ACC32(d, 64), QF_WG_ACC32(d, 96)
#define QF_WG_D32 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define QF_WG_D64 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
#define QF_WG_D128 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}"

// D[64 x N] += A[64 x 16] (registers) * B[16 x N] (shared memory,
// descriptor), fp16 or (kBf16) bf16 inputs; QF_WG_RS(shape, type, D-list,
// first A operand) spells one such instruction.
#define QF_WG_RS(shape, ty, dlist, a0, a1, a2, a3, b) \
  "wgmma.mma_async.sync.aligned." shape ".f32." ty "." ty " " dlist ", {" a0 ", " a1 ", " a2 ", " a3 "}, " b ", 1, 1, 1, 0;\n"
template <bool kBf16 = false>
__device__ __forceinline__ void WgmmaM64N64K16(float (&d)[32], const uint32_t (&a)[4], uint64_t desc_b) {
#define QF_WG_ASM(ty)                                                                               \
  QF_SM90A(asm volatile(QF_WG_RS("m64n64k16", ty, QF_WG_D32, "%32", "%33", "%34", "%35", "%36") \
                        : QF_WG_ACC32(d, 0)                                                         \
                        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b)))
  if constexpr (kBf16) {
    QF_WG_ASM("bf16");
  } else {
    QF_WG_ASM("f16");
  }
#undef QF_WG_ASM
}

template <bool kBf16 = false>
__device__ __forceinline__ void WgmmaM64N128K16(float (&d)[64], const uint32_t (&a)[4], uint64_t desc_b) {
#define QF_WG_ASM(ty)                                                                                \
  QF_SM90A(asm volatile(QF_WG_RS("m64n128k16", ty, QF_WG_D64, "%64", "%65", "%66", "%67", "%68") \
                        : QF_WG_ACC64(d)                                                             \
                        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b)))
  if constexpr (kBf16) {
    QF_WG_ASM("bf16");
  } else {
    QF_WG_ASM("f16");
  }
#undef QF_WG_ASM
}

template <bool kBf16 = false>
__device__ __forceinline__ void WgmmaM64N256K16(float (&d)[128], const uint32_t (&a)[4], uint64_t desc_b) {
#define QF_WG_ASM(ty)                                                                                     \
  QF_SM90A(asm volatile(QF_WG_RS("m64n256k16", ty, QF_WG_D128, "%128", "%129", "%130", "%131", "%132") \
                        : QF_WG_ACC128(d)                                                                 \
                        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b)))
  if constexpr (kBf16) {
    QF_WG_ASM("bf16");
  } else {
    QF_WG_ASM("f16");
  }
#undef QF_WG_ASM
}
#undef QF_WG_RS

// D[64 x N] += A[64 x 16] * B[16 x N], both operands in shared memory
// (descriptors, K-major, no transpose): the dequantize-to-shared kernel.
__device__ __forceinline__ void WgmmaSsM64N128K16(float (&d)[64], uint64_t desc_a, uint64_t desc_b) {
  QF_SM90A(asm volatile("wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 " QF_WG_D64
                        ", %64, %65, 1, 1, 1, 0, 0;\n"
                        : QF_WG_ACC64(d)
                        : "l"(desc_a), "l"(desc_b)));
}
__device__ __forceinline__ void WgmmaSsM64N256K16(float (&d)[128], uint64_t desc_a, uint64_t desc_b) {
  QF_SM90A(asm volatile("wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16 " QF_WG_D128
                        ", %128, %129, 1, 1, 1, 0, 0;\n"
                        : QF_WG_ACC128(d)
                        : "l"(desc_a), "l"(desc_b)));
}

template <int BT, bool kBf16 = false>
__device__ __forceinline__ void WgmmaM64K16(float (&d)[BT / 2], const uint32_t (&a)[4], uint64_t desc_b) {
  static_assert(BT == 64 || BT == 128 || BT == 256, "compiled wgmma widths");
  if constexpr (BT == 64) {
    WgmmaM64N64K16<kBf16>(d, a, desc_b);
  } else if constexpr (BT == 128) {
    WgmmaM64N128K16<kBf16>(d, a, desc_b);
  } else {
    WgmmaM64N256K16<kBf16>(d, a, desc_b);
  }
}

// N adjacent 32-bit words from shared memory in one load (N * 4-byte aligned).
template <int N>
__device__ __forceinline__ void LoadWords(const uint32_t* src, uint32_t (&w)[N]) {
  static_assert(N == 1 || N == 2, "one 4- or 8-byte load");
  if constexpr (N == 1) {
    w[0] = *src;
  } else {
    const uint2 v = *reinterpret_cast<const uint2*>(src);
    w[0] = v.x;
    w[1] = v.y;
  }
}

}  // namespace qf::kernels::w4a16
