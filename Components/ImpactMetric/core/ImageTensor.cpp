#include "ImageTensor.h"

#include <cmath>

namespace impact
{
namespace
{
torch::Tensor
vec(const std::vector<double> & v)
{
  return torch::tensor(v, torch::kFloat64);
}

torch::Tensor
indexToWorldMatrix(const Geometry & g)
{
  const auto d = g.dim();
  return vec(g.direction).reshape({ d, d }) * vec(g.spacing).unsqueeze(0);
}
} // namespace

torch::Tensor
Geometry::worldToIndexMatrix() const
{
  return torch::linalg_inv(indexToWorldMatrix(*this));
}

torch::Tensor
Geometry::worldToIndex(const torch::Tensor & points) const
{
  return torch::matmul(points - vec(origin), worldToIndexMatrix().t());
}

torch::Tensor
Geometry::indexToWorld(const torch::Tensor & indices) const
{
  return torch::matmul(indices, indexToWorldMatrix(*this).t()) + vec(origin);
}

torch::Tensor
Geometry::contains(const torch::Tensor & points) const
{
  const auto idx = worldToIndex(points);
  const auto upper = torch::tensor(size, torch::kFloat64) - 1.0;
  // A little tolerance so that points on the border (as elastix' samplers produce) count as inside.
  return ((idx >= -1e-6) & (idx <= upper + 1e-6)).all(1);
}

Geometry
Geometry::resampled(const std::vector<double> & voxelSize) const
{
  Geometry out = *this;
  const auto d = dim();
  for (int a = 0; a < d; ++a)
  {
    const double extent = size[a] * spacing[a];
    out.size[a] = std::max<int64_t>(1, static_cast<int64_t>(std::llround(extent / voxelSize[a])));
    out.spacing[a] = voxelSize[a];
  }
  // Keep the centre of the physical extent where it was.
  std::vector<double> shiftIndex(d);
  for (int a = 0; a < d; ++a)
  {
    shiftIndex[a] = 0.5 * ((size[a] - 1) * spacing[a] - (out.size[a] - 1) * out.spacing[a]);
  }
  for (int r = 0; r < d; ++r)
  {
    double s = 0;
    for (int c = 0; c < d; ++c)
    {
      s += direction[r * d + c] * shiftIndex[c];
    }
    out.origin[r] = origin[r] + s;
  }
  return out;
}

torch::Tensor
Geometry::worldPoints() const
{
  std::vector<torch::Tensor> axes;
  const auto shape = tensorShape(*this);
  for (auto s : shape)
  {
    axes.push_back(torch::arange(s, torch::kFloat64));
  }
  auto grids = torch::meshgrid(axes, "ij"); // slowest axis first
  std::vector<torch::Tensor> xyz(grids.rbegin(), grids.rend());
  return indexToWorld(torch::stack(xyz, -1).reshape({ -1, dim() }));
}

std::vector<int64_t>
tensorShape(const Geometry & geometry)
{
  return { geometry.size.rbegin(), geometry.size.rend() };
}

} // namespace impact
