import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// `npm run dev` serves the dashboard with hot reload against a tickstream on :8080.
export default defineConfig({
  plugins: [react()],
  base: "/",
  build: {
    outDir: process.env.TICKSTREAM_WEB_OUT ?? "dist",
    emptyOutDir: true,
    assetsDir: "assets",
    // Everything is bundled: the page makes no request outside its own server.
    assetsInlineLimit: 4096,
    sourcemap: false,
    chunkSizeWarningLimit: 400,
  },
  server: {
    proxy: {
      "/api": "http://127.0.0.1:8080",
      "/ws": { target: "ws://127.0.0.1:8080", ws: true },
    },
  },
  test: {
    include: ["src/**/*.test.ts"],
  },
});
