// The model sizes both architectures share, by name. They are RetNet shapes: the paper's sizes as torchscale
// configures them (fairseq retnet_xl / retnet_3b / retnet_7b: GLU with value and FFN width ≈ 5/3·d, key head dim
// 256, about 12·d² parameters per layer, as the paper's allocation), and small CPU sizes with value and FFN width
// 2d. A RetNet preset is the shape itself; a Transformer preset is the shape parameter-matched to it
// (transformer/config.ts, matchRetNetShape).

/** d (embedDim), L (layers), H (heads), dv (valueDim) and the FFN width of a size. */
export interface PresetShape {
  embedDim: number;
  valueDim: number;
  heads: number;
  ffnDim: number;
  layers: number;
}

export const PRESETS: Record<string, PresetShape> = {
  tiny: { embedDim: 128, layers: 2, heads: 2, valueDim: 256, ffnDim: 256 },
  small: { embedDim: 256, layers: 4, heads: 4, valueDim: 512, ffnDim: 512 },
  base: { embedDim: 512, layers: 6, heads: 4, valueDim: 1024, ffnDim: 1024 },
  '1.3B': { embedDim: 2048, layers: 24, heads: 8, valueDim: 3456, ffnDim: 3456 },
  '2.7B': { embedDim: 2560, layers: 32, heads: 10, valueDim: 4280, ffnDim: 4280 },
  '6.7B': { embedDim: 4096, layers: 32, heads: 16, valueDim: 6912, ffnDim: 6912 },
};
