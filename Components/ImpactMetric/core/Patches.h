// Where the voxels of a patch lie: offsets around a sample point, in world coordinates.
#pragma once

#include <torch/torch.h>

#include <vector>

namespace impact
{

/** World offsets of the voxels of a patch centred on the origin.
 *  patchSize, voxelSize: (d) in x-first order, d = the model's dimension.
 *  axes: (d, D) or (N, d, D) float64, the world direction of each patch axis (rows, unit length).
 *  Returns (P, D) or (N, P, D) float64, P = prod(patchSize), x varying fastest, so that a
 *  reshape to (..., p_{d-1}, ..., p_0) gives the patch in tensor order. */
torch::Tensor
patchOffsets(const std::vector<int64_t> & patchSize, const std::vector<double> & voxelSize, const torch::Tensor & axes);

/** Axes of N random planes through 3D space: (N, 2, 3) float64 with orthonormal rows, so that a 2D
 *  model sees slices of every orientation, not only the principal ones. */
torch::Tensor
randomPlanes(int64_t n, torch::Generator & generator);

/** The first d columns of a (D, D) row-major direction matrix, as (d, D) rows: the image's own axes. */
torch::Tensor
imageAxes(const std::vector<double> & direction, int d);

} // namespace impact
