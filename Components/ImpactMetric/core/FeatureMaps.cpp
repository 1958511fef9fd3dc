#include "FeatureMaps.h"

#include "BSpline.h"

#include <cmath>

namespace impact
{
namespace
{
using torch::indexing::Slice;

// Weights that favour the centre of a tile output along one axis of length n: (n,) positive.
torch::Tensor
tileWeights(int64_t n)
{
  const auto j = torch::arange(n, torch::kFloat32);
  return 1.0f - (j - 0.5f * (n - 1)).abs() / (0.5f * (n + 1));
}

// Tile starts along an axis of n voxels for tiles of p voxels, overlapping by about half.
std::vector<int64_t>
tileStarts(int64_t n, int64_t p, int64_t stride)
{
  if (p >= n)
  {
    return { 0 };
  }
  const int64_t        step = std::max<int64_t>(stride, (p / 2) / stride * stride);
  std::vector<int64_t> starts;
  for (int64_t t = 0; t + p < n; t += step)
  {
    starts.push_back(t);
  }
  starts.push_back(n - p);
  return starts;
}
} // namespace

void
FeatureMap::finalize(bool keepFeatures)
{
  coefficients = bsplineCoefficients(features);
  if (!keepFeatures)
  {
    features = torch::Tensor();
  }
}

Geometry
modelGrid(const Geometry & geometry, const std::vector<double> & voxelSize)
{
  auto spacing = voxelSize;
  for (int a = static_cast<int>(spacing.size()); a < geometry.dim(); ++a)
  {
    spacing.push_back(geometry.spacing[a]); // a 2D model on a 3D image: keep the slice spacing
  }
  return geometry.resampled(spacing);
}

ResampledImage
resampleForModel(const torch::Tensor & coefficients, const Geometry & geometry, const std::vector<double> & voxelSize)
{
  ResampledImage out;
  out.geometry = modelGrid(geometry, voxelSize);
  const auto index = geometry.worldToIndex(out.geometry.worldPoints());
  out.values = std::get<0>(bsplineSample(coefficients, index, false)).reshape(tensorShape(out.geometry));
  return out;
}

std::vector<FeatureMap>
computeFeatureMaps(const Model &          model,
                   const ModelSpec &      spec,
                   const ResampledImage & image,
                   const ModelContext &   context,
                   int64_t                maxBatchVoxels)
{
  const int  bigD = image.geometry.dim();
  const int  d = spec.dimension;
  const bool slices = d < bigD;
  TORCH_CHECK(d <= bigD, "a ", d, "D model cannot run on a ", bigD, "D image");
  // Planes: (B, *spatial_d) with B = 1, or the slices along the third axis.
  const auto planes = slices ? image.values : image.values.unsqueeze(0);
  const auto b = planes.size(0);
  std::vector<int64_t> n(d), p(d); // x first
  for (int a = 0; a < d; ++a)
  {
    n[a] = planes.size(d - a);
    p[a] = (spec.patchSize[a] == 0 || spec.patchSize[a] >= n[a]) ? n[a] : spec.patchSize[a];
  }
  auto run = [&](const torch::Tensor & input) { // (B', *p) -> outputs (B', C, *o) on the CPU
    torch::InferenceMode guard;
    auto shape = input.unsqueeze(1).sizes().vec();
    shape[1] = spec.channels; // a grey image fed to a model that wants more channels
    auto outs = model.forward(input.unsqueeze(1).expand(shape).contiguous(), context);
    for (auto & o : outs)
    {
      o = o.to(torch::kCPU, torch::kFloat32);
    }
    return outs;
  };
  auto tile = [&](const torch::Tensor & src, const std::vector<int64_t> & start) {
    auto t = src;
    for (int a = 0; a < d; ++a)
    {
      t = t.narrow(d - a, start[a], p[a]);
    }
    return t;
  };

  // One tile first, to learn each output's channels, size and stride.
  const auto first = run(tile(planes.narrow(0, 0, 1), std::vector<int64_t>(d, 0)));
  struct Out
  {
    int                  output;
    std::vector<int64_t> o, s, e, shift; // tile output size, stride, global size, placement shift (x first)
    torch::Tensor        sum, weight;
  };
  std::vector<Out> outs;
  for (int k = 0; k < static_cast<int>(first.size()); ++k)
  {
    if (spec.layersMask.at(k) != '1')
    {
      continue;
    }
    Out out;
    out.output = k;
    std::vector<int64_t> shape{ b, first[k].size(1) };
    for (int a = 0; a < d; ++a)
    {
      const auto o = first[k].size(1 + d - a);
      const auto s = std::max<int64_t>(1, std::llround(static_cast<double>(p[a]) / o));
      out.o.push_back(o);
      out.s.push_back(s);
      out.e.push_back((n[a] + s - 1) / s);
      out.shift.push_back(std::llround((p[a] - o * s) / (2.0 * s)));
    }
    for (int a = d - 1; a >= 0; --a)
    {
      shape.push_back(out.e[a]);
    }
    out.sum = torch::zeros(shape, torch::kFloat32);
    out.weight = torch::zeros(std::vector<int64_t>(shape.begin() + 2, shape.end()), torch::kFloat32);
    outs.push_back(std::move(out));
  }

  // All (plane, tile) jobs, run in batches that respect the voxel budget.
  std::vector<std::vector<int64_t>> starts{ {} };
  for (int a = 0; a < d; ++a)
  {
    std::vector<std::vector<int64_t>> next;
    for (const auto & prefix : starts)
    {
      for (auto t : tileStarts(n[a], p[a], outs.front().s[a]))
      {
        auto s = prefix;
        s.push_back(t);
        next.push_back(s);
      }
    }
    starts = next;
  }
  int64_t tileVoxels = 1;
  for (auto v : p)
  {
    tileVoxels *= v;
  }
  const int64_t perBatch = std::max<int64_t>(1, maxBatchVoxels / tileVoxels);
  for (const auto & start : starts)
  {
    for (int64_t b0 = 0; b0 < b; b0 += perBatch)
    {
      const auto bn = std::min(perBatch, b - b0);
      const auto results = run(tile(planes.narrow(0, b0, bn), start));
      for (auto & out : outs)
      {
        auto r = results.at(out.output);
        auto w = torch::ones({ 1 }, torch::kFloat32);
        auto sumView = out.sum.narrow(0, b0, bn);
        auto weightView = out.weight;
        for (int a = 0; a < d; ++a)
        {
          // Tile output j lands on global index start/s + shift + j; keep what falls inside.
          const int64_t k0 = std::llround(static_cast<double>(start[a]) / out.s[a]) + out.shift[a];
          const int64_t lo = std::max<int64_t>(0, -k0), hi = std::min<int64_t>(out.o[a], out.e[a] - k0);
          const int     axis = d - a; // tensor axis of r is 1 + (d - a); of weight it is d - 1 - a
          r = r.narrow(1 + axis, lo, hi - lo);
          sumView = sumView.narrow(1 + axis, k0 + lo, hi - lo);
          weightView = weightView.narrow(axis - 1, k0 + lo, hi - lo);
          std::vector<int64_t> shape(d, 1);
          shape[axis - 1] = hi - lo;
          w = w * tileWeights(out.o[a]).narrow(0, lo, hi - lo).view(shape);
        }
        sumView.add_(r * w);
        weightView.add_(w);
      }
    }
  }

  std::vector<FeatureMap> maps;
  for (auto & out : outs)
  {
    FeatureMap map;
    auto       features = out.sum / out.weight.clamp_min(1e-12);         // (B, C, *e)
    features = slices ? features.movedim(1, -1) : features[0].movedim(0, -1); // channels last
    map.features = features.contiguous();
    map.geometry = image.geometry;
    std::vector<double> firstIndex(bigD, 0.0);
    for (int a = 0; a < d; ++a)
    {
      map.geometry.size[a] = out.e[a];
      map.geometry.spacing[a] = image.geometry.spacing[a] * out.s[a];
      firstIndex[a] = 0.5 * (out.s[a] - 1);
    }
    const auto origin = image.geometry.indexToWorld(torch::tensor(firstIndex, torch::kFloat64).unsqueeze(0))[0];
    map.geometry.origin = std::vector<double>(origin.data_ptr<double>(), origin.data_ptr<double>() + bigD);
    if (!torch::isfinite(map.features).all().item<bool>())
    {
      throw std::runtime_error("model \"" + spec.path + "\" returned NaN or Inf features in output " +
                               std::to_string(out.output + 1) + " (Static mode feature map)");
    }
    maps.push_back(std::move(map));
  }
  return maps;
}

void
PCAProjection::apply(FeatureMap & map) const
{
  if (!basis.defined())
  {
    return;
  }
  const auto c = map.features.size(-1);
  auto       shape = map.features.sizes().vec();
  shape.back() = basis.size(1);
  map.features = torch::matmul(map.features.reshape({ -1, c }) - mean, basis).reshape(shape).contiguous();
}

PCAProjection
applyPCA(FeatureMap & fixed, FeatureMap & moving, int64_t components)
{
  const auto c = fixed.features.size(-1);
  if (components <= 0 || components >= c)
  {
    return {};
  }
  const auto f = fixed.features.reshape({ -1, c });
  const auto m = moving.features.reshape({ -1, c });
  auto       rows = torch::cat({ f, m }).to(torch::kFloat64);
  if (rows.size(0) > 200000) // the covariance of a fixed random subset is plenty
  {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(0);
    rows = rows.index_select(0, torch::randperm(rows.size(0), gen, torch::kLong).narrow(0, 0, 200000));
  }
  const auto    mean = rows.mean(0, true);
  const auto    centred = rows - mean;
  const auto    cov = torch::matmul(centred.t(), centred) / std::max<int64_t>(1, rows.size(0) - 1);
  const auto    eig = torch::linalg_eigh(cov); // ascending eigenvalues
  PCAProjection projection;
  projection.basis = std::get<1>(eig).narrow(1, c - components, components).flip({ 1 }).to(torch::kFloat32);
  projection.mean = mean.to(torch::kFloat32);
  projection.apply(fixed);
  projection.apply(moving);
  return projection;
}

} // namespace impact
