#!/usr/bin/env node
// The `retnet` command: runs the compiled CLI (built by `npm ci` / `npm run build`).
import '../dist/src/cli/run.js';
