// An image as a tensor plus the physical geometry that maps its voxels to world coordinates.
#pragma once

#include <torch/torch.h>

#include <vector>

namespace impact
{

/** Geometry of a D-dimensional image grid, in ITK's x-first order:
 *  world = origin + direction * diag(spacing) * index. */
struct Geometry
{
  std::vector<int64_t> size;      // (D)
  std::vector<double>  origin;    // (D)
  std::vector<double>  spacing;   // (D)
  std::vector<double>  direction; // (D*D), row-major

  int
  dim() const
  {
    return static_cast<int>(size.size());
  }

  /** (D, D) float64: world offset -> continuous index offset, i.e. (direction * diag(spacing))^-1. */
  torch::Tensor
  worldToIndexMatrix() const;

  /** Continuous indices (N, D) of world points (N, D); both float64. */
  torch::Tensor
  worldToIndex(const torch::Tensor & points) const;

  /** World points (N, D) of continuous indices (N, D); both float64. */
  torch::Tensor
  indexToWorld(const torch::Tensor & indices) const;

  /** True for points (N, D) whose continuous index lies inside [0, size-1] on every axis. */
  torch::Tensor
  contains(const torch::Tensor & points) const;

  /** A grid with the same direction covering the same physical extent at another voxel size. */
  Geometry
  resampled(const std::vector<double> & voxelSize) const;

  /** (prod(size), D) float64 world coordinates of all voxels, x fastest. */
  torch::Tensor
  worldPoints() const;
};

/** Tensor shape of an image with this geometry: (size[D-1], ..., size[0]) (x fastest in memory). */
std::vector<int64_t>
tensorShape(const Geometry & geometry);

} // namespace impact
