// See workers.h. The claim counter holds the job's generation in its high 32 bits and the next chunk in its low 32,
// so a worker still holding an older job cannot claim a chunk of a newer one: its compare-and-swap fails.
#include "workers.h"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

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
      gen = ++gen_;
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

  void loop(int index) {
    uint64_t seen = 0;
    for (;;) {
      Job job;
      uint64_t gen;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || (gen_ != seen && index < wanted_); });
        if (stop_) return;
        seen = gen = gen_;
        job = job_;
      }
      work(gen, job);
    }
  }

  std::mutex callMu_;  // one job at a time
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::thread> threads_;
  Job job_{nullptr, nullptr, 0};
  uint64_t gen_ = 0;
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
