#!/usr/bin/env node
// Entry point for the `berth` command: loads the TypeScript sources through tsx so a
// fresh clone runs after `npm ci` with no build step.
import { register } from 'tsx/esm/api';

register();
const { runCli } = await import('../src/cli/index.ts');
const code = await runCli(process.argv);
process.exitCode = code;
// Let pending output flush; if a library left a handle open, exit anyway.
setTimeout(() => process.exit(code), 1000).unref();
