// A static file server on localhost (Node only): the example page, the browser bundle and a model directory for
// `npm run serve-web`, and the pages the browser tests load. localhost matters: WebGPU exists only in secure contexts,
// which a page from http://localhost (or 127.0.0.1) is. Paths are resolved inside their folder (no '..' escapes).

import { createReadStream, realpathSync, statSync } from 'node:fs';
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

/** One URL's answer: bytes in memory (a list of chunks: sent one by one, with no Content-Length), or a file. */
export type Route = { body: string | Uint8Array | readonly Uint8Array[]; type: string } | { file: string };

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
  const inside = (p: string, d: string) => p === d || p.startsWith(d.endsWith(sep) ? d : d + sep);
  const path = normalize(join(dir, name));
  if (!inside(path, normalize(dir))) return null;
  try {
    // A symbolic link inside the folder may point out of it: the real path must be inside the real folder too.
    if (!inside(realpathSync(path), realpathSync(dir))) return null;
    return statSync(path).isFile() ? path : null;
  } catch {
    return null;
  }
}

/** The example page's site: index.html at /, its script at /app.js, the model directory's files under /model/. */
export function pageSite(modelDir: string | null, html: string, app: Route): StaticSite {
  return {
    routes: { '/': { file: html }, '/app.js': app },
    dirs: modelDir ? { '/model/': modelDir } : {},
  };
}

/** Serves `site` on `host` (port 0: any free port); only GET and HEAD. */
export function startStaticServer(site: StaticSite, port = 0, host = '127.0.0.1'): Promise<RunningStatic> {
  const server = createServer((req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { 'content-type': 'text/plain', allow: 'GET, HEAD' }).end(`${req.method} is not served`);
      return;
    }
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
      const headers = { 'content-type': route.type, 'cache-control': 'no-store' };
      if (typeof route.body === 'string' || route.body instanceof Uint8Array)
        res.writeHead(200, { ...headers, 'content-length': String(Buffer.byteLength(route.body)) }).end(route.body);
      else {
        res.writeHead(200, headers);
        for (const chunk of route.body) res.write(chunk);
        res.end();
      }
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
    server.listen(port, host, () => {
      const { port: p } = server.address() as AddressInfo;
      const local = host === '127.0.0.1' || host === 'localhost' || host === '::1';
      resolve({
        url: `http://${local ? 'localhost' : host.includes(':') ? `[${host}]` : host}:${p}`,
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
