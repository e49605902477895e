#!/usr/bin/env node
// Entry point for the `berth` command: loads the TypeScript sources through tsx so a
// fresh clone runs after `npm ci` with no build step.
import { register } from 'tsx/esm/api';

register();
const { runCli } = await import('../src/cli/index.ts');
process.exitCode = await runCli(process.argv);
