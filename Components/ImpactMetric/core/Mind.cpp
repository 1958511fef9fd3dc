#include "Mind.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <stdexcept>

namespace impact
{
namespace
{
using Offset = std::vector<int64_t>; // per tensor axis (z, y, x in 3D)

// The 2 dim axis offsets ±d e_k in tensor order, negative first.
std::vector<Offset>
neighbourhood(int dimension, int dilation)
{
  std::vector<Offset> out;
  for (int axis = 0; axis < dimension; ++axis)
  {
    for (int sign : { -1, 1 })
    {
      Offset offset(dimension, 0);
      offset[axis] = sign * dilation;
      out.push_back(offset);
    }
  }
  return out;
}

// The offset pairs (a, b) whose patch distance forms one channel each, in the TorchScript export's order.
std::vector<std::pair<Offset, Offset>>
pairs(int dimension, int dilation, bool ssc)
{
  const auto                             hood = neighbourhood(dimension, dilation);
  std::vector<std::pair<Offset, Offset>> out;
  if (!ssc)
  {
    for (const auto & n : hood)
    {
      out.emplace_back(Offset(dimension, 0), n);
    }
    return out;
  }
  for (size_t i = 0; i < hood.size(); ++i)
  {
    for (size_t j = i + 1; j < hood.size(); ++j)
    {
      int64_t squared = 0;
      for (int a = 0; a < dimension; ++a)
      {
        squared += (hood[i][a] - hood[j][a]) * (hood[i][a] - hood[j][a]);
      }
      if (squared == 2 * dilation * dilation)
      {
        out.emplace_back(hood[i], hood[j]);
      }
    }
  }
  return out;
}

bool
positiveInteger(const std::string & s)
{
  return !s.empty() && s.size() < 4 && std::all_of(s.begin(), s.end(), [](unsigned char ch) { return std::isdigit(ch); }) &&
         std::stoi(s) > 0;
}

// Mean over a box of k voxels per spatial axis, stride 1, no padding: one pass per axis, each a sum
// of k shifted views (vectorised element-wise adds; pooling kernels are slow on small patches).
torch::Tensor
boxMean(torch::Tensor t, int dimension, int64_t k)
{
  for (int a = 0; a < dimension; ++a)
  {
    const auto axis = 2 + a;
    const auto length = t.size(axis) - k + 1;
    auto       sum = t.narrow(axis, 0, length).clone();
    for (int64_t j = 1; j < k; ++j)
    {
      sum.add_(t.narrow(axis, j, length));
    }
    t = sum;
  }
  return t.div_(static_cast<double>(k) * (dimension == 3 ? k * k : k));
}
} // namespace

std::optional<MindSpec>
builtinMind(const std::string & name)
{
  std::string upper(name);
  std::transform(upper.begin(), upper.end(), upper.begin(), [](unsigned char ch) { return std::toupper(ch); });
  MindSpec    spec;
  std::string variant;
  if (upper.rfind("MIND-SSC/", 0) == 0)
  {
    spec.ssc = true;
    variant = upper.substr(9);
  }
  else if (upper.rfind("MIND/", 0) == 0)
  {
    variant = upper.substr(5);
  }
  else
  {
    return std::nullopt;
  }
  const auto d = variant.find('D');
  if (variant.empty() || variant[0] != 'R' || d == std::string::npos || !positiveInteger(variant.substr(1, d - 1)) ||
      !positiveInteger(variant.substr(d + 1)))
  {
    throw std::runtime_error("built-in model \"" + name +
                             "\": expected MIND/R<radius>D<dilation> or MIND-SSC/R<radius>D<dilation> with positive "
                             "integers, e.g. MIND/R1D2 or MIND-SSC/R2D2 (and no file exists at that path)");
  }
  spec.radius = std::stoi(variant.substr(1, d - 1));
  spec.dilation = std::stoi(variant.substr(d + 1));
  return spec;
}

int64_t
mindChannels(const MindSpec & spec, int dimension)
{
  return static_cast<int64_t>(pairs(dimension, spec.dilation, spec.ssc).size());
}

std::vector<torch::Tensor>
mind(const torch::Tensor & x, const MindSpec & spec)
{
  const int dimension = static_cast<int>(x.dim()) - 2;
  TORCH_CHECK(dimension == 2 || dimension == 3,
              "built-in MIND expects (N, C, *spatial) with 2 or 3 spatial axes, got shape ",
              x.sizes());
  const auto           n = x.size(0);
  const auto           c = x.size(1);
  const auto           spatial = x.sizes().slice(2).vec();
  const int64_t        r = spec.radius;
  const int64_t        pad = spec.radius + spec.dilation;
  std::vector<int64_t> shape{ n * c, 1 };
  shape.insert(shape.end(), spatial.begin(), spatial.end());
  namespace F = torch::nn::functional;
  const auto padded = F::pad(x.reshape(shape),
                             F::PadFuncOptions(std::vector<int64_t>(2 * dimension, pad)).mode(torch::kReplicate));

  // box(S_u) per distinct difference vector u (first non-zero component positive), with where it starts.
  struct Field
  {
    torch::Tensor boxed;
    Offset        low; // padded-image index of the field's first voxel
  };
  std::map<Offset, Field>    fields;
  std::vector<torch::Tensor> distances;
  for (const auto & [a, b] : pairs(dimension, spec.dilation, spec.ssc))
  {
    Offset v(dimension);
    for (int k = 0; k < dimension; ++k)
    {
      v[k] = b[k] - a[k];
    }
    const auto firstNonZero = *std::find_if(v.begin(), v.end(), [](int64_t e) { return e != 0; });
    const bool flip = firstNonZero < 0; // D(x; a, b) = D(x; b, a): anchor the pair at b instead
    Offset     u = v;
    if (flip)
    {
      std::transform(v.begin(), v.end(), u.begin(), [](int64_t e) { return -e; });
    }
    const auto & anchor = flip ? b : a;
    auto &       field = fields[u];
    if (!field.boxed.defined())
    {
      // S_u(y) = (I(y) - I(y + u))^2 wherever y and y + u are inside the padded image.
      auto first = padded;
      auto second = padded;
      field.low.resize(dimension);
      for (int k = 0; k < dimension; ++k)
      {
        field.low[k] = std::max<int64_t>(0, -u[k]);
        const auto length = padded.size(2 + k) - std::abs(u[k]);
        first = first.narrow(2 + k, field.low[k], length);
        second = second.narrow(2 + k, field.low[k] + u[k], length);
      }
      field.boxed = boxMean((first - second).square(), dimension, 2 * r + 1);
    }
    // D(x; a, b) = box(S_u)(x + anchor), box centred: padded index x + pad - r + anchor.
    auto distance = field.boxed;
    for (int k = 0; k < dimension; ++k)
    {
      distance = distance.narrow(2 + k, pad - r + anchor[k] - field.low[k], spatial[k]);
    }
    distances.push_back(distance);
  }
  auto d = torch::cat(distances, 1);
  d = d - std::get<0>(d.min(1, true));
  auto                 variance = d.mean(1, true);
  std::vector<int64_t> levelShape(dimension + 2, 1);
  levelShape[0] = -1;
  // Per image of the batch, so that a patch's descriptor never depends on the other patches.
  const auto level = variance.flatten(1).mean(1).reshape(levelShape);
  variance = torch::maximum(torch::minimum(variance, level * 1000.0), level * 0.001 + 1e-12);
  auto                 out = torch::exp(-d / variance);
  std::vector<int64_t> outShape{ n, c * out.size(1) };
  outShape.insert(outShape.end(), spatial.begin(), spatial.end());
  return { out.reshape(outShape) };
}

} // namespace impact
