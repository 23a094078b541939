// Device selection on Node: the portable selection (select.ts) with the cpu device registered.
export * from './select.js';
export { cpuBackend, cpuInfo, cpuUnavailableReason, threadCount } from './cpu/index.js';
