// The browser entry, `retnet/web` (an ES module bundle built with esbuild: `npm run build:web`): the portable core,
// the webgpu device and loadModel for a model directory over fetch or from picked files.
export * from './index.js';
export { requestWebGpu, WebGpuDevice, type GpuMemory, type WebGpuInfo } from './backend/webgpu/index.js';
export {
  loadModel,
  WebModel,
  type LoadModelOptions,
  type LogitsOptions,
  type LoadProgress,
  type ModelSource,
} from './web/model.js';
