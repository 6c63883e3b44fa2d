// Deterministic build of the viewer component into ../build (committed; the Python package ships it).
// One main bundle, one module worker (the DICOM decoders) and the codecs' .wasm files; no dev server.
// Run: npm ci && npm run build   (the CI check .ci/check_viewer_bundle.sh compares sha256 sums).
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = process.env.VIEWER_BUILD_DIR || join(here, '..', 'build');
const cs = join(here, 'node_modules', '@cornerstonejs');

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, 'wasm'), { recursive: true });

const common = {
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['chrome110', 'firefox115', 'safari16'],
  minify: true,
  legalComments: 'external',
  sourcemap: false,
  logLevel: 'warning',
  // Emscripten glue mentions node modules on paths a browser never takes.
  external: ['fs', 'path', 'crypto', 'module', 'url', 'worker_threads'],
  define: { 'process.env.NODE_ENV': '"production"' },
  alias: { xmlbuilder2: join(here, 'src', 'stubs', 'xmlbuilder2.js') },
};

await build({ ...common, entryPoints: [join(here, 'src', 'main.js')], outfile: join(out, 'viewer.js') });
// The loader starts `new Worker(new URL('./decodeImageFrameWorker.js', import.meta.url))`: the
// worker must sit beside viewer.js under exactly that name.
await build({
  ...common,
  entryPoints: [join(cs, 'dicom-image-loader', 'dist', 'esm', 'decodeImageFrameWorker.js')],
  outfile: join(out, 'decodeImageFrameWorker.js'),
});

// Decoders the worker loads on demand (JPEG baseline, JPEG-LS, JPEG 2000, HTJ2K). The JPEG XL
// decoder (1 MB) is left out: no chest radiograph source here uses that transfer syntax.
const wasm = [
  ['codec-libjpeg-turbo-8bit', 'libjpegturbowasm_decode.wasm'],
  ['codec-charls', 'charlswasm_decode.wasm'],
  ['codec-openjpeg', 'openjpegwasm_decode.wasm'],
  ['codec-openjph', 'openjphjs.wasm'],
];
for (const [pkg, file] of wasm) copyFileSync(join(cs, pkg, 'dist', file), join(out, 'wasm', file));
for (const file of ['index.html', 'viewer.css']) copyFileSync(join(here, 'src', file), join(out, file));
