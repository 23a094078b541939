// Where the host's time goes inside one function of a Node CPU profile (node --cpu-prof): self time of every function
// called (directly or not) from the frames named ROOT, summed by function and sorted, with the total under ROOT.
//   node scripts/cuda/cpuprof-top.mjs PROFILE.cpuprofile [ROOT=stepInPlace] [TOP=40]
import { readFileSync } from 'node:fs';

const [file, root = 'stepInPlace', top = '40'] = process.argv.slice(2);
const prof = JSON.parse(readFileSync(file, 'utf8'));
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
// Microseconds per sample of each node: the time deltas credited to the sample that follows them.
const selfUs = new Map();
prof.samples.forEach((id, i) => selfUs.set(id, (selfUs.get(id) ?? 0) + (prof.timeDeltas[i + 1] ?? 0)));
const totals = new Map();
let under = 0;
function walk(node, inside) {
  const f = node.callFrame;
  const now = inside || f.functionName === root;
  if (now) {
    const us = selfUs.get(node.id) ?? 0;
    const key = `${f.functionName || '(anonymous)'} ${f.url.split('/').slice(-2).join('/')}:${f.lineNumber + 1}`;
    totals.set(key, (totals.get(key) ?? 0) + us);
    under += us;
  }
  for (const c of node.children ?? []) walk(byId.get(c), now);
}
walk(prof.nodes[0], false);
process.stdout.write(`${(under / 1e3).toFixed(1)} ms of samples under ${root}\n`);
for (const [key, us] of [...totals].sort((a, b) => b[1] - a[1]).slice(0, Number(top)))
  process.stdout.write(
    `${(us / 1e3).toFixed(1).padStart(9)} ms ${((100 * us) / Math.max(under, 1)).toFixed(1).padStart(5)}%  ${key}\n`,
  );
