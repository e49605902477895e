import type { Command } from 'commander';
import { maskedConfig } from '../config.ts';
import { openRuntime, startServer } from '../main.ts';
import { callServer, serverTarget } from './http.ts';
import type { GlobalOptions } from './index.ts';
import { configFor } from './index.ts';
import { CliError, cliLogger, EXIT, emit, type Io } from './output.ts';

/** `berth start`, `berth migrate`, `berth config print`. */
export function registerServerCommands(program: Command, io: Io, globals: () => GlobalOptions) {
  program
    .command('start')
    .description('Start Berth: applies migrations, runs the HTTP server and the job workers.')
    .option('--host <host>', 'address to listen on (BERTH_HOST, default 127.0.0.1)')
    .option('--port <port>', 'port to listen on (BERTH_PORT, default 8080)')
    .option('--data-dir <dir>', 'where the embedded database and generated keys live (BERTH_DATA_DIR, default ./data)')
    .action(async (opts: { host?: string; port?: string; dataDir?: string }) => {
      const g = globals();
      const config = configFor(io, g, { BERTH_HOST: opts.host, BERTH_PORT: opts.port, BERTH_DATA_DIR: opts.dataDir });
      const server = await startServer(config);
      const setup = await server.app.modules.setup.service.setupHint(server.url);
      const engine = config.DATABASE_URL ? 'server Postgres' : `embedded Postgres in ${config.dataDir}`;
      emit(
        io,
        Boolean(g.json),
        { url: server.url, engine, migrationsApplied: server.runtime.migrations.applied, setup },
        [
          `Berth ${server.url} is running (${engine}).`,
          server.runtime.migrations.applied.length
            ? `Applied ${server.runtime.migrations.applied.length} migration(s).`
            : 'Database schema is up to date.',
          setup ? setup.text : `API reference: ${server.url}/docs`,
        ].join('\n'),
      );
      await new Promise<void>((resolve) => {
        const shutdown = (signal: string) => {
          server.runtime.logger.info({ signal }, 'shutting down');
          server.stop().then(resolve, resolve);
        };
        process.once('SIGTERM', () => shutdown('SIGTERM'));
        process.once('SIGINT', () => shutdown('SIGINT'));
      });
    });

  program
    .command('migrate')
    .description('Apply pending database migrations and exit (refuses while a server holds the embedded database).')
    .action(async () => {
      const g = globals();
      const cfg = configFor(io, g);
      const runtime = await openRuntime(cfg, { purpose: 'migrate', logger: cliLogger(io, cfg) });
      await runtime.close();
      const { applied, current } = runtime.migrations;
      emit(
        io,
        Boolean(g.json),
        { applied, current },
        applied.length ? `Applied: ${applied.join(', ')} (now at ${current}).` : `Up to date (at ${current}).`,
      );
    });

  program
    .command('status')
    .description('Ask a running server whether it is up and its database reachable.')
    .option('--url <url>', 'server URL (BERTH_URL, default http://127.0.0.1:8080)')
    .action(async (opts: { url?: string }) => {
      const g = globals();
      const target = serverTarget(opts, io.env);
      const health = await callServer<{ status: string }>(target, 'GET', '/healthz');
      let ready: { status: string };
      try {
        ready = await callServer<{ status: string }>(target, 'GET', '/readyz');
      } catch (err) {
        if (err instanceof CliError && err.exitCode === EXIT.refused) ready = { status: 'database unreachable' };
        else throw err;
      }
      const ok = ready.status === 'ready';
      emit(
        io,
        Boolean(g.json),
        { url: target.url, live: health.status === 'ok', ready: ok },
        `${target.url}: ${ok ? 'ready' : ready.status}`,
      );
      // Already reported above: exit non-zero without printing again.
      if (!ok) throw new CliError('', EXIT.unreachable, 'not_ready');
    });

  const config = program.command('config').description('Inspect configuration.');
  config
    .command('print')
    .description('Print the effective configuration, with secrets masked.')
    .action(() => {
      const g = globals();
      const masked = maskedConfig(configFor(io, g));
      emit(
        io,
        Boolean(g.json),
        masked,
        Object.entries(masked)
          .map(([k, v]) => `${k}=${String(v)}`)
          .join('\n'),
      );
    });
}
