// Static mode (eq. 9-10): feature maps of a whole image, computed once per level at VoxelSize,
// whole-image or in overlapping tiles, optionally reduced by PCA, and kept as B-spline
// coefficients so that features and their spatial gradients can be read anywhere.
#pragma once

#include "ImageTensor.h"
#include "Model.h"

#include <vector>

namespace impact
{

/** One selected model output over an image grid. */
struct FeatureMap
{
  Geometry      geometry;     // of the feature voxels (strided models give a coarser grid)
  torch::Tensor features;     // (*spatial, C) float32, channels last
  torch::Tensor coefficients; // B-spline coefficients of `features`, same shape (set by finalize())

  /** Computes the B-spline coefficients; drops `features` unless keepFeatures. */
  void
  finalize(bool keepFeatures);
};

/** The image resampled at the model's VoxelSize, as fed to the model: (*spatial) float32, with its grid. */
struct ResampledImage
{
  Geometry      geometry;
  torch::Tensor values;
};

/** Resamples an image (given by its B-spline coefficients (*spatial, 1) and geometry) on a grid of
 *  the same direction and extent at `voxelSize` (model dimension d; a 2D model on a 3D image keeps
 *  the image's own spacing along the third axis). */
ResampledImage
resampleForModel(const torch::Tensor & coefficients, const Geometry & geometry, const std::vector<double> & voxelSize);

/** Runs `model` over a resampled image and returns one FeatureMap per '1' of spec.layersMask.
 *  PatchSize 0 on every axis runs the whole image at once; otherwise tiles of PatchSize overlap by
 *  half and are blended with weights that favour tile centres. A 2D model on a 3D image runs slice
 *  by slice along the third axis. `maxBatchVoxels` bounds the input voxels per model call. */
std::vector<FeatureMap>
computeFeatureMaps(const Model &          model,
                   const ModelSpec &      spec,
                   const ResampledImage & image,
                   const ModelContext &   context,
                   int64_t                maxBatchVoxels);

/** The grid a model sees: `geometry` at `voxelSize` (model dimension d; a 2D model on a 3D image
 *  keeps the image's own spacing along the third axis). */
Geometry
modelGrid(const Geometry & geometry, const std::vector<double> & voxelSize);

/** A projection onto principal components: features (*, C) -> (features - mean) basis, (*, K). */
struct PCAProjection
{
  torch::Tensor mean;  // (1, C)
  torch::Tensor basis; // (C, K); undefined = identity (no PCA)

  void
  apply(FeatureMap & map) const;
};

/** Fits the first `components` principal components on a fixed and a moving map together, so that
 *  the two stay comparable, and projects both. Returns the projection (for later moving maps). */
PCAProjection
applyPCA(FeatureMap & fixed, FeatureMap & moving, int64_t components);

} // namespace impact
