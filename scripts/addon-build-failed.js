// Runs when `node-gyp rebuild` fails during `npm install`: the library still works on the reference backend, so the
// install succeeds and `retnet info` reports the missing addon.
console.warn(
  'retnet: the native addon could not be built (is libopenblas-dev installed? run scripts/setup.sh); ' +
    'falling back to the slower reference backend.',
);
