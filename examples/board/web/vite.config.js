import { defineConfig } from 'vite';
import { svelte } from '@sveltejs/vite-plugin-svelte';
import { fileURLToPath } from 'node:url';

// Dev: `npm run dev` proxies the WebSocket and manifest to a board server on :3000.
const target = process.env.LIVEROOM_SERVER || 'http://127.0.0.1:3000';

export default defineConfig({
  base: '/',
  plugins: [svelte({ configFile: false })],
  resolve: {
    alias: {
      $live: fileURLToPath(new URL('./src/live/generated', import.meta.url)),
    },
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsDir: 'assets',
    sourcemap: false,
    target: 'es2022',
  },
  server: {
    proxy: {
      '/ws': { target, ws: true, changeOrigin: false },
      '/__live': { target },
    },
  },
});
