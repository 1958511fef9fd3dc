#include "Distances.h"

#include <stdexcept>

namespace impact
{
namespace
{
constexpr double kEps = 1e-8;

// (N, C, *spatial) -> (N * prod(spatial), C): one feature vector per row.
torch::Tensor
rows(const torch::Tensor & x)
{
  return x.dim() == 2 ? x : x.flatten(2).transpose(1, 2).reshape({ -1, x.size(1) });
}

torch::Tensor
cosineDistance(const torch::Tensor & f, const torch::Tensor & m)
{
  const auto dot = (f * m).sum(1);
  return (1.0 - dot / (f.norm(2, 1) * m.norm(2, 1) + kEps)).mean();
}
} // namespace

const std::vector<std::string> &
distanceNames()
{
  static const std::vector<std::string> names{ "L1", "L2", "Cosine", "L1Cosine", "Dice", "NCC", "DotProduct" };
  return names;
}

Distance
parseDistance(const std::string & name)
{
  const auto & names = distanceNames();
  for (size_t i = 0; i < names.size(); ++i)
  {
    if (names[i] == name)
    {
      return static_cast<Distance>(i);
    }
  }
  std::string allowed;
  for (const auto & n : names)
  {
    allowed += (allowed.empty() ? "" : ", ") + n;
  }
  throw std::invalid_argument("unknown distance \"" + name + "\"; allowed: " + allowed);
}

std::string
toString(Distance distance)
{
  return distanceNames().at(static_cast<size_t>(distance));
}

torch::Tensor
distance(Distance kind, const torch::Tensor & fixed, const torch::Tensor & moving)
{
  TORCH_CHECK(fixed.sizes() == moving.sizes(), "distance: fixed features ", fixed.sizes(),
              " and moving features ", moving.sizes(), " differ in shape");
  TORCH_CHECK(fixed.dim() >= 2, "distance: features must be (N, C, *spatial), got ", fixed.sizes());
  const auto f = rows(fixed);
  const auto m = rows(moving);
  switch (kind)
  {
    case Distance::L1:
      return (f - m).abs().mean();
    case Distance::L2:
      return (f - m).square().mean();
    case Distance::Cosine:
      return cosineDistance(f, m);
    case Distance::L1Cosine:
      return (f - m).abs().mean() + cosineDistance(f, m);
    case Distance::Dice:
      return (1.0 - 2.0 * (f * m).sum(1) / (f.square().sum(1) + m.square().sum(1) + kEps)).mean();
    case Distance::NCC:
    {
      const auto fc = f - f.mean(0, true);
      const auto mc = m - m.mean(0, true);
      const auto corr = (fc * mc).sum(0) / (fc.norm(2, 0) * mc.norm(2, 0) + kEps);
      return 1.0 - corr.mean();
    }
    case Distance::DotProduct:
      return -(f * m).sum(1).mean() / static_cast<double>(f.size(1));
  }
  throw std::logic_error("unhandled distance");
}

} // namespace impact
