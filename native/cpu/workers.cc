// See workers.h. The claim counter holds the job's generation in its high 32 bits and the next chunk in its low 32,
// so a worker still holding an older job cannot claim a chunk of a newer one: its compare-and-swap fails.
#include "workers.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define RETNET_SPIN_PAUSE() _mm_pause()
#else
#define RETNET_SPIN_PAUSE() std::this_thread::yield()
#endif

namespace retnet::workers {
namespace {

struct Job {
  void (*body)(void*, int64_t);
  void* ctx;
  int64_t chunks;
};

class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

  void run(int64_t chunks, int threads, void (*body)(void*, int64_t), void* ctx) {
    std::lock_guard<std::mutex> serial(callMu_);
    grow(threads - 1);
    uint64_t gen;
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = Job{body, ctx, chunks};
      gen = gen_.load(std::memory_order_relaxed) + 1;
      gen_.store(gen, std::memory_order_release);
      done_.store(0, std::memory_order_relaxed);
      wanted_ = threads - 1;
      claim_.store(gen << 32, std::memory_order_release);
    }
    cv_.notify_all();
    work(gen, job_);
    // Only chunks already claimed by a worker remain; they finish without waiting for any other thread.
    while (done_.load(std::memory_order_acquire) < chunks) std::this_thread::yield();
  }

 private:
  // Claims and runs chunks of job `gen` until none is left.
  void work(uint64_t gen, const Job& job) {
    for (;;) {
      uint64_t v = claim_.load(std::memory_order_acquire);
      for (;;) {
        if ((v >> 32) != (gen & 0xffffffffu) || static_cast<int64_t>(v & 0xffffffffu) >= job.chunks) return;
        if (claim_.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel)) break;
      }
      job.body(job.ctx, static_cast<int64_t>(v & 0xffffffffu));
      done_.fetch_add(1, std::memory_order_acq_rel);
    }
  }

  void grow(int workers) {
    while (static_cast<int>(threads_.size()) < workers) {
      int index = static_cast<int>(threads_.size());
      threads_.emplace_back([this, index] { loop(index); });
    }
  }

  // Between jobs a worker first watches for the next one for kSpin, then sleeps on the condition variable: a decode
  // step's products come tens of microseconds apart, and waking a sleeping thread costs about as much as a small
  // product (the base model's ~25 µs).
  void loop(int index) {
    uint64_t seen = 0;
    for (;;) {
      const auto until = std::chrono::steady_clock::now() + kSpin;
      for (int i = 1; gen_.load(std::memory_order_acquire) == seen; i++) {
        RETNET_SPIN_PAUSE();
        if (i % 64 == 0 && std::chrono::steady_clock::now() > until) break;
      }
      Job job;
      uint64_t gen;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || (gen_.load(std::memory_order_relaxed) != seen && index < wanted_); });
        if (stop_) return;
        seen = gen = gen_.load(std::memory_order_relaxed);
        job = job_;
      }
      work(gen, job);
    }
  }

  // bench/lowp_kernels.cc (LOWP_RESIDENT=1, B 1, 2 threads, ms per product median, this stop's Intel Xeon, timing
  // lock) for a spin of 0 / 50 / 200 / 1000 µs: q4 [256, 2048] 0.012 / 0.007 / 0.007 / 0.007 (one thread 0.011), f32
  // 0.036 / 0.022 / 0.022 / 0.023 (one thread 0.043). 200 µs covers the gaps of JS between a 1.3B step's products.
  static constexpr std::chrono::microseconds kSpin{200};

  std::mutex callMu_;  // one job at a time
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::thread> threads_;
  Job job_{nullptr, nullptr, 0};
  std::atomic<uint64_t> gen_{0};  // written under mu_; read without it while spinning
  int wanted_ = 0;
  bool stop_ = false;
  std::atomic<uint64_t> claim_{0};
  std::atomic<int64_t> done_{0};
};

Pool& pool() {
  static Pool p;
  return p;
}

}  // namespace

void run(int64_t chunks, int threads, void (*body)(void*, int64_t), void* ctx) {
  if (chunks <= 0) return;
  if (threads <= 1 || chunks == 1) {
    for (int64_t c = 0; c < chunks; c++) body(ctx, c);
    return;
  }
  pool().run(chunks, threads, body, ctx);
}

}  // namespace retnet::workers
