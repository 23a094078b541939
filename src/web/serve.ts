// A static file server on localhost (Node only): the example page, the browser bundle and a model directory for
// `npm run serve-web`, and the pages the browser tests load. localhost matters: WebGPU exists only in secure contexts,
// which a page from http://localhost (or 127.0.0.1) is. Paths are resolved inside their folder (no '..' escapes).

import { createReadStream, statSync } from 'node:fs';
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname, join, normalize, sep } from 'node:path';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.json': 'application/json',
  '.css': 'text/css',
  '.png': 'image/png',
};

/** One URL's answer: bytes in memory, or a file. */
export type Route = { body: string | Uint8Array; type: string } | { file: string };

export interface StaticSite {
  /** Exact URL paths ('/', '/retnet-web.js'). */
  routes?: Record<string, Route>;
  /** URL prefixes ('/model/') served from folders. */
  dirs?: Record<string, string>;
}

export interface RunningStatic {
  url: string;
  server: Server;
  close(): Promise<void>;
}

function fileIn(dir: string, rest: string): string | null {
  let name: string;
  try {
    name = decodeURIComponent(rest);
  } catch {
    return null; // a malformed %-escape names no file
  }
  const path = normalize(join(dir, name));
  if (path !== normalize(dir) && !path.startsWith(normalize(dir) + sep)) return null;
  try {
    return statSync(path).isFile() ? path : null;
  } catch {
    return null;
  }
}

/** Serves `site` on 127.0.0.1 (port 0: any free port). */
export function startStaticServer(site: StaticSite, port = 0): Promise<RunningStatic> {
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    let route: Route | undefined = site.routes?.[path];
    if (!route)
      for (const [prefix, dir] of Object.entries(site.dirs ?? {}))
        if (path.startsWith(prefix)) {
          const file = fileIn(dir, path.slice(prefix.length));
          if (file) route = { file };
          break;
        }
    if (!route) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`not found: ${path}`);
      return;
    }
    if ('body' in route) {
      res.writeHead(200, { 'content-type': route.type, 'cache-control': 'no-store' }).end(route.body);
      return;
    }
    const size = statSync(route.file).size;
    res.writeHead(200, {
      'content-type': TYPES[extname(route.file)] ?? 'application/octet-stream',
      'content-length': String(size),
      'cache-control': 'no-store',
    });
    createReadStream(route.file).pipe(res);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      const { port: p } = server.address() as AddressInfo;
      resolve({
        url: `http://localhost:${p}`,
        server,
        close: () =>
          new Promise<void>((done) => {
            server.closeAllConnections();
            server.close(() => done());
          }),
      });
    });
  });
}
