// A static file server on 127.0.0.1 for the browser harness: the page, the three onnxruntime-web
// builds from node_modules, and the artifact sets to load. Nothing else is served; no path may
// leave its root.
//
//   /                      -> page/index.html
//   /page/<file>           -> tests/web/page/<file>
//   /ort/<version>/<file>  -> node_modules/ort-web-<version>/dist/<file>   (version: 1.17, 1.18, 1.19)
//   /sets/<i>/<file>       -> <the i-th set's directory>/<file>
//   /lookahead/onnx-lookahead-web.mjs -> the module given as options.lookaheadModule (if any)
//
// The responses carry COOP/COEP headers so that the page is cross-origin isolated
// (SharedArrayBuffer, and so WASM threads, are available if a caller asks for numThreads > 1).
//
// As a module: startServer(setDirs, {lookaheadModule}?) -> {url, close()}. On its own, for looking at the page by hand:
//   node tests/web/server.mjs DIR...   (prints the URL; Ctrl-C stops it)
import { createServer } from 'node:http';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const VERSIONS = { '1.17': '1.17.3', '1.18': '1.18.0', '1.19': '1.19.2' };

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
  '.map': 'application/json',
};

/** The file under `root` that `rel` names, or null when it would leave root. */
function inside(root, rel) {
  const full = path.resolve(root, '.' + path.posix.normalize('/' + rel));
  return full === root || full.startsWith(root + path.sep) ? full : null;
}

export const LOOKAHEAD_MODULE_URL = '/lookahead/onnx-lookahead-web.mjs';

function route(pathname, setDirs, lookaheadModule) {
  if (pathname === '/' || pathname === '/index.html') return path.join(HERE, 'page', 'index.html');
  if (pathname === LOOKAHEAD_MODULE_URL && lookaheadModule) return lookaheadModule;
  let m = pathname.match(/^\/page\/(.+)$/);
  if (m) return inside(path.join(HERE, 'page'), m[1]);
  m = pathname.match(/^\/ort\/([0-9.]+)\/(.+)$/);
  if (m && VERSIONS[m[1]]) return inside(path.join(HERE, 'node_modules', `ort-web-${m[1]}`, 'dist'), m[2]);
  m = pathname.match(/^\/sets\/(\d+)\/(.+)$/);
  if (m && Number(m[1]) < setDirs.length) return inside(setDirs[Number(m[1])], m[2]);
  return null;
}

export function startServer(setDirs = [], { lookaheadModule = null } = {}) {
  const roots = setDirs.map((d) => path.resolve(d));
  const module = lookaheadModule && path.resolve(lookaheadModule);
  const server = createServer(async (req, res) => {
    const headers = {
      'Cross-Origin-Opener-Policy': 'same-origin',
      'Cross-Origin-Embedder-Policy': 'require-corp',
      'Cross-Origin-Resource-Policy': 'same-origin',
    };
    try {
      const { pathname } = new URL(req.url, 'http://127.0.0.1');
      const file = route(decodeURIComponent(pathname), roots, module);
      if (req.method !== 'GET' || file === null || !(await stat(file)).isFile()) throw new Error('not found');
      const body = await readFile(file);
      // The onnxruntime-web builds never change under a URL: let the browser cache them (and its
      // compiled WASM code, so a page loaded afresh does not compile 11 MB again). Sets may.
      headers['Cache-Control'] = pathname.startsWith('/ort/') ? 'max-age=3600, immutable' : 'no-store';
      res.writeHead(200, { ...headers, 'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream' });
      res.end(body);
    } catch {
      res.writeHead(404, { ...headers, 'Cache-Control': 'no-store', 'Content-Type': 'text/plain' });
      res.end('not found\n');
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      resolve({
        url: `http://127.0.0.1:${port}`,
        close: () => new Promise((done) => { server.closeAllConnections?.(); server.close(() => done()); }),
      });
    });
  });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { url } = await startServer(process.argv.slice(2));
  console.log(`${url}/?ort=1.19  (sets at ${url}/sets/<i>/...)`);
}
