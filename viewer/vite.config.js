// The viewer's build: plain ES modules bundled into hashed files under dist/assets/, which
// the API serves at /viewer/ (src/auditlog/viewer.py). scripts/setup.sh runs it.
import { defineConfig } from 'vite';

export default defineConfig({
  base: '/viewer/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    cssCodeSplit: false,
    // Chromium, Firefox and Safari know modulepreload: no polyfill in the bundle.
    modulePreload: { polyfill: false },
    // No inline assets: the Content-Security-Policy allows 'self' only (no data: URLs).
    assetsInlineLimit: 0,
    sourcemap: false,
  },
});
