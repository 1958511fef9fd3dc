// Cubic B-spline interpolation of (multi-channel) images: the prefilter that turns samples into
// coefficients, and a sampler returning values and their spatial gradients at continuous indices.
// Both fixed and moving patches, and Static-mode feature maps, are read through these kernels, so
// the interpolant (and its derivative, eq. 8) is the same third-order B-spline everywhere.
#pragma once

#include <torch/torch.h>

#include <tuple>
#include <vector>

namespace impact
{

/** Cubic B-spline coefficients of an image.
 *  image: (*spatial, C) float32, spatial in tensor order (z, y, x), channels last.
 *  Returns a tensor of the same shape. Mirror boundary conditions, as ITK's B-spline decomposition. */
torch::Tensor
bsplineCoefficients(const torch::Tensor & image);

/** The same, overwriting `image` (contiguous float32, CPU): no second copy of a large feature map. */
void
bsplineCoefficientsInPlace(torch::Tensor & image);

/** Resamples coefficients on a grid whose axes follow the image's: output voxel (i_0, ..., i_{D-1})
 *  takes the value at continuous index (positions[0][i_0], ..., positions[D-1][i_{D-1}]) (x first).
 *  Separable, one pass per axis: about 4 multiply-adds per axis and output value instead of 4^D.
 *  Returns (*output spatial, C) float32, tensor order. Equal to bsplineSample at those indices. */
torch::Tensor
bsplineResample(const torch::Tensor & coefficients, const std::vector<std::vector<double>> & positions);

/** Samples coefficients at continuous indices.
 *  coefficients: (*spatial, C) float32 from bsplineCoefficients, D = 2 or 3 spatial axes.
 *  index:        (M, D) float32 or float64 continuous indices in ITK order (x, y, z).
 *  Returns values (M, C) and, when withGradient, the gradient with respect to the index (M, C, D)
 *  (an undefined tensor otherwise). Indices outside the grid are mirrored back into it. */
std::tuple<torch::Tensor, torch::Tensor>
bsplineSample(const torch::Tensor & coefficients, const torch::Tensor & index, bool withGradient);

} // namespace impact
