// Yielding to the event loop between model calls, portably: setImmediate where the runtime has it (Node: other
// I/O runs before the next call), else a zero-delay timer (browsers).

export function nextMacrotask(): Promise<void> {
  const immediate = (globalThis as { setImmediate?: (f: () => void) => unknown }).setImmediate;
  return new Promise((resolve) => (immediate ? immediate(resolve) : setTimeout(resolve, 0)));
}
