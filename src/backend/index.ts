// Device selection on Node: the portable selection (select.ts) with the cpu device registered (the default when its
// addon loads), then the cuda device (by name only).
export * from './select.js';
export { cpuBackend, cpuInfo, cpuUnavailableReason, threadCount } from './cpu/index.js';
export { cudaBackend, cudaUnavailableReason } from './cuda/index.js';
