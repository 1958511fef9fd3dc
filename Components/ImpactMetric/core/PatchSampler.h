// Jacobian mode's input path: patches of a B-spline image around sample points, written straight
// into the model's input tensor, and the chain rule that turns dS/d(patch) into dS/dy.
// One parallel loop per call, no (N*P, D) point tensors: patch geometry is expressed in continuous
// index offsets once, and when the patch axes follow the image axes (a model of the image's own
// dimension) the cubic weights are computed per patch axis, not per voxel.
#pragma once

#include "ImageTensor.h"

#include <torch/torch.h>

#include <vector>

namespace impact
{

/** Where the voxels of a patch lie relative to its centre, in continuous index units of one image. */
struct PatchLayout
{
  std::vector<int64_t> size; // (d) voxels per patch axis, x first; P = prod(size)
  /** (P, D) float64: one layout for every sample, or (N, P, D): one per sample (2D planes in 3D).
   *  Voxel p = i_0 + size_0 (i_1 + size_1 i_2) has offset offsets[p]. */
  torch::Tensor offsets;
  /** Set when offsets[p][a] depends on patch coordinate i_a only (axis-aligned patches of an image's
   *  own dimension): axisOffsets[a][i_a]. Enables the separable kernel. */
  std::vector<std::vector<double>> axisOffsets;

  int64_t
  voxels() const;
};

/** Axes of N random planes through 3D space: (N, 2, 3) float64 with orthonormal rows, so that a 2D
 *  model sees slices of every orientation, not only the principal ones. */
torch::Tensor
randomPlanes(int64_t n, torch::Generator & generator);

/** Axes of N planes, each one of the three axis planes of an image with this direction matrix
 *  (row-major 3x3) drawn at random: (N, 2, 3) float64, the two in-plane image axes in ITK order. */
torch::Tensor
principalPlanes(int64_t n, const std::vector<double> & direction, torch::Generator & generator);

/** The first d columns of a (D, D) row-major direction matrix, as (d, D) rows: the image's own axes. */
torch::Tensor
imageAxes(const std::vector<double> & direction, int d);

/** The layout of patches with `patchSize` voxels of `voxelSize` mm along world directions `axes`
 *  ((d, D) for all samples, or (N, d, D) per sample), in the index space of `geometry`. */
PatchLayout
patchLayout(const std::vector<int64_t> & patchSize,
            const std::vector<double> &  voxelSize,
            const torch::Tensor &        axes,
            const Geometry &             geometry);

struct PatchSamples
{
  torch::Tensor values;        // (N, P) float32, voxel order of PatchLayout (x fastest)
  torch::Tensor indexGradient; // (N, P, D) float32 d(value)/d(index); undefined without gradient
};

/** Samples the cubic B-spline image `coefficients` ((*spatial, 1) float32, from bsplineCoefficients)
 *  on patches centred on world points `centres` (N, D) float64. Equal, voxel by voxel, to
 *  bsplineSample at the centres' index plus the layout's offsets. */
PatchSamples
samplePatches(const torch::Tensor &  coefficients,
              const Geometry &       geometry,
              const torch::Tensor &  centres,
              const PatchLayout &    layout,
              bool                   withGradient);

/** eq. 8's inner sum: dS/dy_n = sum_p dS/d(patch)[n, p] * d(image)/d(index)[n, p] * W, with W the
 *  geometry's world-to-index matrix. patchGradient (N, P) any float type; returns (N, D) float64. */
torch::Tensor
chainPatchGradient(const torch::Tensor & patchGradient, const torch::Tensor & indexGradient, const Geometry & geometry);

} // namespace impact
