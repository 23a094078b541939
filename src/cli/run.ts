// Process entry of the CLI (bin/retnet.js runs the compiled copy; tests run this file through tsx).
import { main } from './main.js';

// A reader that goes away (`retnet info | head -1`) ends the command quietly, as a closed pipe ends a Unix tool.
for (const stream of [process.stdout, process.stderr])
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE') throw e;
    process.exit(process.exitCode ?? 0);
  });

process.exitCode = await main(process.argv.slice(2));
