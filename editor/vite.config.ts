// Vite build of the editor; the control plane serves dist/ and answers /api on the same origin.
import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

export default defineConfig({
  plugins: [react()],
  build: { outDir: 'dist', emptyOutDir: true, chunkSizeWarningLimit: 2000 },
  // `npm run dev` proxies the API to a running `streamforge up` (default port 8080).
  server: {
    proxy: {
      '/api': { target: process.env.STREAMFORGE_URL ?? 'http://127.0.0.1:8080', ws: true },
    },
  },
});
