import { defineConfig } from "vite";
import preact from "@preact/preset-vite";

// Tauri loads the built files from ui/dist; no inline scripts so the CSP can forbid them.
export default defineConfig({
  plugins: [preact()],
  clearScreen: false,
  server: { port: 5173, strictPort: true },
  build: { target: "es2021", outDir: "dist", emptyOutDir: true, assetsInlineLimit: 0, sourcemap: false },
  test: {
    globals: true,
    environment: "jsdom",
    include: ["src/**/*.test.{ts,tsx}"],
  },
});
