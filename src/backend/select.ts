// Device selection, portable (no Node built-ins). The reference device is always there; other devices are
// registered by the entry point that can provide them (the cpu device by src/backend/index.ts on Node) and load on
// first use. The default is the first registered device that loads, else the reference device (with one line on
// stderr saying why). RETNET_BACKEND=<name> forces a choice where the environment has variables; 'native', the cpu
// device's old name, is accepted for one release with a deprecation line.

import { BackendError } from '../errors.js';
import type { Device } from './device.js';
import type { HostDevice } from './host/device.js';
import { referenceDevice } from './reference/device.js';

/** Device names getBackend accepts: 'reference', the registered ones, and 'native' (deprecated: 'cpu'). */
export type BackendName = 'cpu' | 'reference' | 'native' | (string & {});

/** Loads a device, or returns why it is unavailable. Called once, at first use. */
export type DeviceLoader = () => Device | string;

const loaders = new Map<string, DeviceLoader>();
/** Devices chosen only when named (never the default). */
const byNameOnly = new Set<string>();
const loaded = new Map<string, Device | string>();
let current: Device | null = null;
let warned = false;
let deprecationSaid = false;

/**
 * Makes a device selectable by name, and a candidate for the default in registration order unless `byNameOnly`.
 */
export function registerDevice(name: string, load: DeviceLoader, opts: { byNameOnly?: boolean } = {}): void {
  if (name === 'reference' || name === 'native') throw new BackendError(`registerDevice: '${name}' is reserved`);
  loaders.set(name, load);
  loaded.delete(name);
  if (opts.byNameOnly) byNameOnly.add(name);
  else byNameOnly.delete(name);
}

export function referenceBackend(): HostDevice {
  return referenceDevice();
}

/** The device registered as `name`, or why it is unavailable. */
function load(name: string): Device | string {
  let d = loaded.get(name);
  if (d === undefined) {
    const loader = loaders.get(name);
    d = loader ? loader() : `no ${name} device in this environment`;
    loaded.set(name, d);
  }
  return d;
}

/** Why the named device cannot be used, or null when it can. */
export function deviceUnavailableReason(name: string): string | null {
  const d = load(name);
  return typeof d === 'string' ? d : null;
}

function env(name: string): string | undefined {
  return globalThis.process?.env?.[name];
}

function canonical(name: string, where: string): string {
  if (name === 'native') {
    if (!deprecationSaid) {
      deprecationSaid = true;
      globalThis.process?.stderr?.write(`retnet: ${where} 'native' is deprecated: the device is now called 'cpu'\n`);
    }
    return 'cpu';
  }
  if (name === 'reference' || loaders.has(name)) return name;
  throw new BackendError(`${where} must be one of ${['reference', ...loaders.keys()].join(', ')}, got '${name}'`);
}

export function getBackend(name?: BackendName): Device {
  if (name !== undefined) {
    const n = canonical(name, 'the backend');
    if (n === 'reference') return referenceBackend();
    const d = load(n);
    if (typeof d === 'string') throw new BackendError(`the ${n} device is unavailable: ${d}`);
    return d;
  }
  if (current) return current;
  const forced = env('RETNET_BACKEND');
  if (forced !== undefined && forced !== '') {
    current = getBackend(canonical(forced, 'RETNET_BACKEND'));
    return current;
  }
  let reason: string | null = null;
  for (const n of loaders.keys()) {
    if (byNameOnly.has(n)) continue;
    const d = load(n);
    if (typeof d !== 'string') return (current = d);
    reason ??= d;
  }
  current = referenceBackend();
  if (reason !== null && !warned) {
    warned = true;
    globalThis.process?.stderr?.write(`retnet: using the reference backend (${reason})\n`);
  }
  return current;
}

/** Makes `name` the default device for tensors created without an explicit one. */
export function setBackend(name: BackendName): Device {
  current = getBackend(name);
  return current;
}
