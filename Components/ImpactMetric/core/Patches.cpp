#include "Patches.h"

#include <cmath>

namespace impact
{

torch::Tensor
patchOffsets(const std::vector<int64_t> & patchSize, const std::vector<double> & voxelSize, const torch::Tensor & axes)
{
  const auto d = static_cast<int64_t>(patchSize.size());
  TORCH_CHECK(static_cast<int64_t>(voxelSize.size()) == d && axes.size(-2) == d,
              "patchOffsets: patch size, voxel size and axes disagree on the dimension");
  std::vector<torch::Tensor> coords; // tensor order: slowest (last ITK axis) first
  for (int64_t a = d - 1; a >= 0; --a)
  {
    coords.push_back((torch::arange(patchSize[a], torch::kFloat64) - 0.5 * (patchSize[a] - 1)) * voxelSize[a]);
  }
  auto grids = torch::meshgrid(coords, "ij");
  std::vector<torch::Tensor> xFirst(grids.rbegin(), grids.rend());
  const auto local = torch::stack(xFirst, -1).reshape({ -1, d }); // (P, d)
  return torch::matmul(local, axes.to(torch::kFloat64));          // (P, D) or (N, P, D)
}

torch::Tensor
randomPlanes(int64_t n, torch::Generator & generator)
{
  auto u = torch::randn({ n, 3 }, generator, torch::kFloat64);
  auto v = torch::randn({ n, 3 }, generator, torch::kFloat64);
  u = u / u.norm(2, 1, true).clamp_min(1e-12);
  v = v - (v * u).sum(1, true) * u;
  v = v / v.norm(2, 1, true).clamp_min(1e-12);
  return torch::stack({ u, v }, 1);
}

torch::Tensor
imageAxes(const std::vector<double> & direction, int d)
{
  const auto dim = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(direction.size()))));
  const auto m = torch::tensor(direction, torch::kFloat64).reshape({ dim, dim });
  return m.t().slice(0, 0, d).contiguous(); // column a of the direction is the world direction of axis a
}

} // namespace impact
