// File: kernels/cuda/w4a16/w4a16_ptx.cuh
//
// Inline-PTX wrappers shared by every W4A16 kernel: async copies (cp.async,
// Hopper bulk copies), mbarriers, the cluster barrier, programmatic dependent
// launch, ldmatrix and the m16n8k16 mma. One instruction each, named after it;
// the comments say what each one orders and why a kernel uses that form.
// The warpgroup (wgmma) and tensor-map (TMA) forms are in w4a16_wgmma_ptx.cuh.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

namespace qf::kernels::w4a16 {

// ---------------------------------------------------------------- PTX wrappers

__device__ __forceinline__ uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte async copy global -> shared, bypassing L1 (.cg): every byte is
// consumed from shared memory once.
__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(SmemAddr(smem)), "l"(gmem));
}

// An L2 eviction policy for data read exactly once per call (the weights when
// m fits one chunk): evict_first keeps them from pushing the activations and
// scales, which every block re-reads, out of L2.
__device__ __forceinline__ uint64_t EvictFirstPolicy() {
  uint64_t pol;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(pol));
  return pol;
}

__device__ __forceinline__ uint64_t EvictNormalPolicy() {
  uint64_t pol;
  asm volatile("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;\n" : "=l"(pol));
  return pol;
}

__device__ __forceinline__ void CpAsync16Hint(void* smem, const void* gmem, uint64_t policy) {
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;\n" ::"r"(SmemAddr(smem)), "l"(gmem),
               "l"(policy));
}

__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

// QF_SM90: the bulk-copy path exists only in sm_90 builds; an sm_80 build of
// a TMA variant compiles to a trap and the host never selects it there.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
#define QF_SM90(...) __trap()
#else
#define QF_SM90(...) __VA_ARGS__
#endif

// ---- Hopper bulk copies (TMA engine, non-tensor form) completing on an
// mbarrier: one lane moves a whole contiguous row, so the 255 other threads
// spend no issue slots on address arithmetic.
// https://docs.nvidia.com/cuda/parallel-thread-execution/#data-movement-and-conversion-instructions-cp-async-bulk
__device__ __forceinline__ void MbarInit(uint64_t* bar, uint32_t count) {
  QF_SM90(asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(SmemAddr(bar)), "r"(count) : "memory"));
}

// The mbarrier and bulk-copy wrappers take shared-memory addresses (32-bit,
// SmemAddr) or pointers: a kernel that computes the addresses once saves the
// generic-to-shared conversion (S2UR of the CTA id and a LEA) per call.
//
// Arrives once and announces `bytes` of bulk-copy traffic for this phase.
__device__ __forceinline__ void MbarArriveExpectTx(uint32_t bar, uint32_t bytes) {
  QF_SM90(asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory"));
}
__device__ __forceinline__ void MbarArriveExpectTx(uint64_t* bar, uint32_t bytes) {
  MbarArriveExpectTx(SmemAddr(bar), bytes);
}

// kCluster: acquire at cluster scope, for phases that other blocks of the
// cluster complete (st.async into this block); else the default, acquire at
// CTA scope (this block's own bulk copies).
template <bool kCluster = false>
__device__ __forceinline__ bool MbarTryWait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
#define QF_MBAR_TRY_WAIT(SEM)                                                  \
  QF_SM90(asm volatile("{\n"                                                   \
                       "  .reg .pred p;\n"                                     \
                       "  mbarrier.try_wait.parity" SEM ".shared::cta.b64 p, [%1], %2;\n" \
                       "  selp.u32 %0, 1, 0, p;\n"                             \
                       "}\n"                                                   \
                       : "=r"(done)                                            \
                       : "r"(bar), "r"(parity)                                 \
                       : "memory"))
  if constexpr (kCluster) {
    QF_MBAR_TRY_WAIT(".acquire.cluster");
  } else {
    QF_MBAR_TRY_WAIT("");
  }
#undef QF_MBAR_TRY_WAIT
  return done != 0;
}

// Waits for phase `parity` of `bar`. A phase that never completes (a byte
// count that does not match the copies) traps instead of hanging the GPU;
// `before_trap` runs first (MbarWaitRaised hands registers back there).
template <bool kCluster = false, class BeforeTrap>
__device__ __forceinline__ void MbarWait(uint32_t bar, uint32_t parity, BeforeTrap before_trap) {
  for (uint32_t tries = 0; !MbarTryWait<kCluster>(bar, parity); ++tries) {
    if (tries > (1u << 24)) {
      before_trap();
      __trap();
    }
  }
}
template <bool kCluster = false>
__device__ __forceinline__ void MbarWait(uint32_t bar, uint32_t parity) {
  MbarWait<kCluster>(bar, parity, [] {});
}
__device__ __forceinline__ void MbarWait(uint64_t* bar, uint32_t parity) { MbarWait(SmemAddr(bar), parity); }

// The cluster barrier, split: every thread of every CTA of the cluster arrives
// and later waits (acquire) for all the arrivals. ClusterArrive releases its
// earlier memory accesses to the cluster (ptxas 13.0 and 13.5: MEMBAR.ALL.GPU
// first, each thread waiting until they are visible device-wide);
// ClusterArriveRelaxed orders execution only (no MEMBAR), for barriers whose
// peers need no data from before it.
__device__ __forceinline__ void ClusterArrive() {
  QF_SM90(asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory"));
}
__device__ __forceinline__ void ClusterArriveRelaxed() {
  QF_SM90(asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory"));
}
__device__ __forceinline__ void ClusterWait() {
  QF_SM90(asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory"));
}

// Arrives once on `bar` (release at CTA scope).
__device__ __forceinline__ void MbarArrive(uint32_t bar) {
  QF_SM90(asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory"));
}

// Address of the same shared-memory location in block `rank` of the cluster.
__device__ __forceinline__ uint32_t MapShared(uint32_t smem, uint32_t rank) {
  uint32_t r = smem;
  QF_SM90(asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(r) : "r"(smem), "r"(rank)));
  return r;
}

// Arrives once on `bar` (release at CTA scope) when `pred` holds; predicated
// rather than branched, so the caller's wgmma pipeline sees no control flow.
// kCluster: `bar` is a shared::cluster address (MapShared), in this block or
// another of its cluster, as the arrivals that free a multicast ring slot are
// usually made (no MEMBAR); what they order is this warp's retired wgmma reads
// of the slot before the peer's next copies into it.
template <bool kCluster = false>
__device__ __forceinline__ void MbarArriveIf(uint32_t bar, bool pred) {
#define QF_MBAR_ARRIVE_IF(SPACE)                                                \
  QF_SM90(asm volatile("{\n"                                                    \
                       "  .reg .pred p;\n"                                      \
                       "  setp.ne.u32 p, %1, 0;\n"                              \
                       "  @p mbarrier.arrive" SPACE ".b64 _, [%0];\n"           \
                       "}\n" ::"r"(bar),                                        \
                       "r"(static_cast<uint32_t>(pred))                         \
                       : "memory"))
  if constexpr (kCluster) {
    QF_MBAR_ARRIVE_IF(".shared::cluster");
  } else {
    QF_MBAR_ARRIVE_IF(".shared::cta");
  }
#undef QF_MBAR_ARRIVE_IF
}
__device__ __forceinline__ void MbarArriveIf(uint64_t* bar, bool pred) { MbarArriveIf(SmemAddr(bar), pred); }

// Arrives once on `bar` when every cp.async this thread issued so far has
// landed; the arrival is counted in the barrier's initial count (.noinc).
__device__ __forceinline__ void CpAsyncMbarArrive(uint64_t* bar) {
  QF_SM90(asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(SmemAddr(bar)) : "memory"));
}

__device__ __forceinline__ void BulkCopy(uint32_t smem, const void* gmem, uint32_t bytes, uint32_t bar, uint64_t policy) {
  QF_SM90(asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;\n" ::
          "r"(smem),
      "l"(gmem), "r"(bytes), "r"(bar), "l"(policy)
      : "memory"));
}
__device__ __forceinline__ void BulkCopy(void* smem, const void* gmem, uint32_t bytes, uint64_t* bar, uint64_t policy) {
  BulkCopy(SmemAddr(smem), gmem, bytes, SmemAddr(bar), policy);
}

// Programmatic dependent launch (sm_90). Everything a kernel does before
// GridDependencyWait may overlap the previous kernel on the stream, so the
// streaming and decode kernels read only weights there (no kernel writes
// them), the wgmma kernel nothing at all, and each touches A, the bias, C
// and the split-K workspace after it. It returns once that kernel has
// completed and its writes are visible; at once when the launch was not
// programmatic.
__device__ __forceinline__ void GridDependencyWait() { QF_SM90(asm volatile("griddepcontrol.wait;\n" ::: "memory")); }

// Lets the next kernel on the stream launch (if it was launched as a
// programmatic dependent) once every block of this grid has run this.
// Issued after the main loop: the next grid then launches during our
// epilogue and its blocks take multiprocessors as ours retire. Issued at
// the start, its blocks took the free slots during our main loop and
// competed with it: slower on the H200 (kernels/MEASUREMENTS.md), before
// the grid planner held each grid to its planned blocks per multiprocessor.
// The 8-row decode kernel now issues it at the start
// (DecodeConfig::kEarlyDependents).
__device__ __forceinline__ void AllowDependents() { QF_SM90(asm volatile("griddepcontrol.launch_dependents;\n" :::)); }

// Orders this thread's generic-proxy shared-memory writes before later
// async-proxy (bulk copy) writes to the same bytes.
__device__ __forceinline__ void FenceProxyAsync() {
  QF_SM90(asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"));
}

// Four 8x8 b16 matrices; lane l supplies the row address of matrix l/8.
// https://docs.nvidia.com/cuda/parallel-thread-execution/#warp-level-matrix-instructions-ldmatrix
__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SmemAddr(smem)));
}

// D = A * B + D, 16x8x16, fp16 (or, kBf16, bf16) inputs, fp32 accumulators;
// the two input types share every fragment layout:
// https://docs.nvidia.com/cuda/parallel-thread-execution/#warp-level-matrix-fragment-mma-16816-float
template <bool kBf16 = false>
__device__ __forceinline__ void Mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (kBf16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// (a & b) | c in one instruction (LUT 0xEA = (0xF0 & 0xCC) | 0xAA).
__device__ __forceinline__ uint32_t AndOr(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(r) : "r"(a), "r"(b), "r"(c));
  return r;
}

}  // namespace qf::kernels::w4a16
