// Launch shapes shared by the kernel files.
#pragma once

#include <algorithm>
#include <cstdint>

namespace retnet::cuda {

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n elements: enough to fill the device several times over, no more.
inline unsigned gridFor(int64_t n) {
  int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>(blocks, 1), 132 * 16));
}

// Programmatic dependent launch (Hopper): a kernel launched by launchDependent may start while the kernel before it
// on the stream still runs, once that kernel's blocks have all run pdlTrigger() (or ended); it must run pdlWait()
// before it reads anything an earlier kernel wrote (the wait returns once those kernels are complete and their writes
// visible). Only gemv16 is launched so (its weight loads do not depend on earlier kernels); the kernels that come
// before it in a decode step trigger at their start. Both are no-ops where nothing is launched dependently.
__device__ __forceinline__ void pdlTrigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdlWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Block-wide sum of one value per thread (blockDim.x a multiple of 32, at most 1024); every thread gets the total.
template <typename T>
__device__ T blockSum(T v) {
  __shared__ T part[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // part may still be read by a previous call
  if (lane == 0) part[warp] = v;
  __syncthreads();
  int warps = (blockDim.x + 31) >> 5;
  T t = lane < warps ? part[lane] : T(0);
  for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
  return t;
}

template <typename T>
__device__ T blockMax(T v) {
  __shared__ T part[32];
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) part[warp] = v;
  __syncthreads();
  int warps = (blockDim.x + 31) >> 5;
  T t = lane < warps ? part[lane] : part[0];
  for (int o = 16; o > 0; o >>= 1) t = max(t, __shfl_xor_sync(0xffffffffu, t, o));
  return t;
}

}  // namespace retnet::cuda
