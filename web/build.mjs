// Builds the dashboard into visualization/internal/api/ui/dist, which the
// Go binary embeds (visualization/internal/api/page.go):
//
//   dist/index.html  the page (a Go html/template: refresh interval)
//   dist/app.js      src/main.js and Chart.js, bundled and minified
//   dist/style.css   src/style.css, minified
//
// "virtual:webtransport" resolves to src/transport/webtransport.js when
// that file exists (the QUIC issue delivers it) and to a stub exporting
// connectWebTransport = null otherwise, so the build never needs it.
// --watch rebuilds on change.
import * as esbuild from 'esbuild';
import { existsSync, mkdirSync, copyFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, '..', 'visualization', 'internal', 'api', 'ui', 'dist');
const wt = join(here, 'src', 'transport', 'webtransport.js');

const webTransport = {
  name: 'webtransport',
  setup(build) {
    build.onResolve({ filter: /^virtual:webtransport$/ }, () =>
      existsSync(wt) ? { path: wt } : { path: 'webtransport-stub', namespace: 'stub' });
    build.onLoad({ filter: /.*/, namespace: 'stub' }, () => ({
      contents: '// No WebTransport module in this build: the WebSocket carries live updates.\nexport const connectWebTransport = null;\n',
      loader: 'js',
    }));
  },
};

mkdirSync(out, { recursive: true });
const common = { bundle: true, minify: true, target: ['chrome110', 'firefox110', 'safari16'], logLevel: 'info', legalComments: 'eof' };
const js = { ...common, entryPoints: [join(here, 'src', 'main.js')], outfile: join(out, 'app.js'), format: 'iife', plugins: [webTransport] };
const css = { ...common, entryPoints: [join(here, 'src', 'style.css')], outfile: join(out, 'style.css') };

if (process.argv.includes('--watch')) {
  const a = await esbuild.context(js);
  const b = await esbuild.context(css);
  copyFileSync(join(here, 'src', 'index.html'), join(out, 'index.html'));
  await Promise.all([a.watch(), b.watch()]);
} else {
  await Promise.all([esbuild.build(js), esbuild.build(css)]);
  copyFileSync(join(here, 'src', 'index.html'), join(out, 'index.html'));
  console.log('built', out);
}
