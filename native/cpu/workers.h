// A pool of worker threads for the decode-size products, built so that a busy machine cannot stall them.
//
// OpenMP ends every parallel region with a barrier: the calling thread waits until every worker has arrived, even a
// worker that the OS has not yet run since it was woken. On a machine whose cores other processes also use, that
// wait is often a whole scheduler time slice, and a decode step has hundreds of products: BENCHMARKS.md records a
// step of the `base` model at 110-180 ms with two threads against 25-30 ms with one. Here the work is cut into
// chunks that threads claim one at a time; the caller claims chunks too and, once none is left, waits only for the
// chunks another thread has already claimed. A worker that wakes late finds nothing left and sleeps again, so it
// never delays the caller (bench/lowp_kernels.cc measures the two against each other). Between jobs a worker spins
// briefly before it sleeps, so that the next product of a decode step finds it awake (workers.cc kSpin).
#pragma once

#include <cstdint>

namespace retnet::workers {

// Runs body(chunk) for every chunk in [0, chunks) on up to `threads` threads (the caller is one of them) and returns
// when all have run. Chunks must be independent. Calls from several threads at once run one after the other.
void run(int64_t chunks, int threads, void (*body)(void* ctx, int64_t chunk), void* ctx);

// Lambda form.
template <class F>
void forChunks(int64_t chunks, int threads, F&& f) {
  run(chunks, threads, [](void* ctx, int64_t c) { (*static_cast<F*>(ctx))(c); }, &f);
}

}  // namespace retnet::workers
