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
  if (keepFeatures)
  {
    coefficients = bsplineCoefficients(features);
    return;
  }
  coefficients = std::move(features).to(torch::kFloat32).contiguous();
  features = torch::Tensor();
  bsplineCoefficientsInPlace(coefficients);
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
  // The model grid keeps the image's direction, so index a of a model voxel depends on its index a
  // only: a separable resample.
  const int                        dim = geometry.dim();
  std::vector<std::vector<double>> positions(dim);
  for (int a = 0; a < dim; ++a)
  {
    auto steps = torch::zeros({ out.geometry.size[a], dim }, torch::kFloat64);
    steps.select(1, a).copy_(torch::arange(out.geometry.size[a], torch::kFloat64));
    const auto index = geometry.worldToIndex(out.geometry.indexToWorld(steps)).select(1, a).contiguous();
    positions[a].assign(index.const_data_ptr<double>(), index.const_data_ptr<double>() + index.numel());
  }
  out.values = bsplineResample(coefficients, positions).reshape(tensorShape(out.geometry));
  return out;
}

namespace
{
// How the tiles' results of one model output land on the output grid.
struct OutputPlacement
{
  int                  output{};
  std::vector<int64_t> tileOutput; // output voxels of one tile, per model axis (x first)
  std::vector<int64_t> stride;     // input voxels per output voxel
  std::vector<int64_t> gridSize;   // output voxels over the whole plane
  std::vector<int64_t> shift;      // output index of a tile's first output, relative to start / stride
  int64_t              channels{};
  torch::Tensor        sum;        // (C, planes * grid voxels): weighted sum of tile outputs
  torch::Tensor        weight;     // (planes * grid voxels): sum of the weights
  torch::Tensor        tileWeight; // (tile output voxels): favours tile centres
  bool                 wholePlane{}; // one tile per plane: the weights are 1

  // Whether a tile's output is the whole output grid, as when the whole image goes through at once.
  bool
  coversPlane() const
  {
    for (size_t a = 0; a < gridSize.size(); ++a)
    {
      if (!wholePlane || tileOutput[a] != gridSize[a] || shift[a] != 0)
      {
        return false;
      }
    }
    return true;
  }
};

// Input voxels per output voxel along each model axis (x first), of the model's coarsest selected
// output, measured on a small input of 32 voxels per axis.
std::vector<int64_t>
modelStride(const Model & model, const ModelSpec & spec, const ModelContext & context)
{
  std::vector<int64_t> shape{ 1, spec.channels };
  shape.insert(shape.end(), spec.dimension, 32);
  torch::InferenceMode guard;
  const auto           outputs = model.forward(torch::zeros(shape), context);
  std::vector<int64_t> stride(spec.dimension, 1);
  for (size_t k = 0; k < outputs.size(); ++k)
  {
    for (int a = 0; a < spec.dimension && spec.layersMask.at(k) == '1'; ++a)
    {
      const auto o = outputs[k].size(1 + spec.dimension - a);
      stride[a] = std::max<int64_t>(stride[a], std::llround(32.0 / std::max<int64_t>(o, 1)));
    }
  }
  return stride;
}

// Flat offsets (tensor order, x fastest) of a box of `box` voxels (x first) inside a grid of `grid`
// voxels (x first), shifted per job by `starts` (J, d): (J, prod(box)) int64, and which are inside.
std::pair<torch::Tensor, torch::Tensor>
boxIndices(const std::vector<int64_t> & box, const std::vector<int64_t> & grid, const torch::Tensor & starts)
{
  const auto    d = static_cast<int64_t>(box.size());
  const auto    jobs = starts.size(0);
  torch::Tensor flat = torch::zeros({ jobs, 1 }, torch::kLong);
  torch::Tensor inside = torch::ones({ jobs, 1 }, torch::kBool);
  for (int64_t a = d - 1; a >= 0; --a) // slowest axis first, so that x ends up fastest
  {
    const auto coordinate = starts.select(1, a).unsqueeze(1) + torch::arange(box[a], torch::kLong).unsqueeze(0);
    const auto ok = (coordinate >= 0) & (coordinate < grid[a]);
    flat = (flat.unsqueeze(2) * grid[a] + coordinate.unsqueeze(1)).reshape({ jobs, -1 });
    inside = (inside.unsqueeze(2) & ok.unsqueeze(1)).reshape({ jobs, -1 });
  }
  return { flat, inside };
}
} // namespace

std::vector<FeatureMap>
computeFeatureMaps(const Model &          model,
                   const ModelSpec &      spec,
                   const ResampledImage & image,
                   const ModelContext &   context,
                   int64_t                maxBatchVoxels)
{
  const int  imageDim = image.geometry.dim();
  const int  d = spec.dimension;
  const bool slices = d < imageDim;
  TORCH_CHECK(d <= imageDim, "a ", d, "D model cannot run on a ", imageDim, "D image");
  // Planes: (planes, *spatial_d): the image itself, or its slices along the third axis.
  const auto planes = (slices ? image.values : image.values.unsqueeze(0)).contiguous();
  const auto planeCount = planes.size(0);
  std::vector<int64_t> planeSize(d), tile(d); // x first
  int64_t              planeVoxels = 1, tileVoxels = 1;
  for (int a = 0; a < d; ++a)
  {
    planeSize[a] = planes.size(d - a);
    tile[a] = (spec.patchSize[a] == 0 || spec.patchSize[a] >= planeSize[a]) ? planeSize[a] : spec.patchSize[a];
    planeVoxels *= planeSize[a];
    tileVoxels *= tile[a];
  }
  std::vector<int64_t> tileShape{ -1, spec.channels }; // (jobs, C, *tile) in tensor order
  tileShape.insert(tileShape.end(), tile.rbegin(), tile.rend());
  auto run = [&](const torch::Tensor & tiles) { // (jobs, tile voxels) -> outputs (jobs, C_l, *o) on the CPU
    torch::InferenceMode guard;
    auto outs = model.forward(tiles.unsqueeze(1).expand({ -1, spec.channels, -1 }).reshape(tileShape), context);
    for (auto & o : outs)
    {
      o = o.to(torch::kCPU, torch::kFloat32);
    }
    return outs;
  };

  // Jobs: every (plane, tile start); tiles overlap by about half and are blended.
  // Tile starts are multiples of the model's stride, so that tiles' output grids coincide.
  const auto                        stride = modelStride(model, spec, context);
  std::vector<std::vector<int64_t>> startsPerAxis(d);
  for (int a = 0; a < d; ++a)
  {
    startsPerAxis[a] = tileStarts(planeSize[a], tile[a], stride[a]);
  }
  std::vector<std::vector<int64_t>> starts{ {} };
  for (int a = 0; a < d; ++a)
  {
    std::vector<std::vector<int64_t>> next;
    for (const auto & prefix : starts)
    {
      for (auto t : startsPerAxis[a])
      {
        auto s = prefix;
        s.push_back(t);
        next.push_back(s);
      }
    }
    starts = std::move(next);
  }
  const auto tilesPerPlane = static_cast<int64_t>(starts.size());
  auto       tileStart = torch::empty({ tilesPerPlane, d }, torch::kLong);
  for (int64_t t = 0; t < tilesPerPlane; ++t)
  {
    for (int a = 0; a < d; ++a)
    {
      tileStart[t][a] = starts[t][a];
    }
  }
  // The first batch's outputs tell each output's channels, size and stride (no separate probe run:
  // for a whole image, that would be a second forward pass over it).
  std::vector<OutputPlacement> placements;
  auto place = [&](const std::vector<torch::Tensor> & first) {
    for (int k = 0; k < static_cast<int>(first.size()); ++k)
    {
      if (spec.layersMask.at(k) != '1')
      {
        continue;
      }
      OutputPlacement out;
      out.output = k;
      out.channels = first[k].size(1);
      int64_t gridVoxels = 1;
      out.tileWeight = torch::ones({ 1 }, torch::kFloat32);
      for (int a = d - 1; a >= 0; --a) // tensor order for the weights
      {
        out.tileWeight =
          (out.tileWeight.unsqueeze(1) * tileWeights(first[k].size(2 + (d - 1 - a))).unsqueeze(0)).reshape({ -1 });
      }
      for (int a = 0; a < d; ++a)
      {
        const auto o = first[k].size(1 + d - a);
        const auto s = std::max<int64_t>(1, std::llround(static_cast<double>(tile[a]) / o));
        out.tileOutput.push_back(o);
        out.stride.push_back(s);
        out.gridSize.push_back((planeSize[a] + s - 1) / s);
        out.shift.push_back(std::llround((tile[a] - o * s) / (2.0 * s)));
        gridVoxels *= out.gridSize.back();
      }
      out.wholePlane = tilesPerPlane == 1;
      if (out.coversPlane())
      {
        out.sum = torch::empty({ planeCount * gridVoxels, out.channels }, torch::kFloat32); // channels last
      }
      else
      {
        out.sum = torch::zeros({ out.channels, planeCount * gridVoxels }, torch::kFloat32);
        out.weight = torch::zeros({ planeCount * gridVoxels }, torch::kFloat32);
      }
      placements.push_back(std::move(out));
    }
  };

  const int64_t jobsTotal = planeCount * tilesPerPlane;
  // Tiles (and slices) go through the model in batches, unless its outputs depend on the batch.
  const int64_t perBatch = model.mixesBatch(spec) ? 1 : std::max<int64_t>(1, maxBatchVoxels / tileVoxels);
  const auto    flatPlanes = planes.reshape({ -1 });
  for (int64_t first = 0; first < jobsTotal; first += perBatch)
  {
    const auto jobs = torch::arange(first, std::min(jobsTotal, first + perBatch), torch::kLong);
    const auto plane = jobs.div(tilesPerPlane, "floor");
    const auto start = tileStart.index_select(0, jobs.remainder(tilesPerPlane));
    torch::Tensor tiles; // (J, tile voxels)
    if (tilesPerPlane == 1 && tileVoxels == planeVoxels)
    {
      tiles = planes.narrow(0, first, jobs.size(0)).reshape({ jobs.size(0), -1 });
    }
    else
    {
      const auto input = boxIndices(tile, planeSize, start).first + (plane * planeVoxels).unsqueeze(1);
      tiles = flatPlanes.index_select(0, input.reshape({ -1 })).view({ jobs.size(0), -1 });
    }
    const auto results = run(tiles);
    if (placements.empty())
    {
      place(results);
    }
    for (auto & out : placements)
    {
      if (out.coversPlane())
      {
        // One tile per plane whose output is the output grid: nothing to blend (the weights cancel).
        const auto r = results.at(out.output).reshape({ jobs.size(0), out.channels, -1 }).transpose(1, 2);
        out.sum.view({ planeCount, -1, out.channels }).narrow(0, first, jobs.size(0)).copy_(r);
        continue;
      }
      // Tile output j lands on output index start / stride + shift + j; keep what falls inside.
      auto outStart = start.clone();
      for (int a = 0; a < d; ++a)
      {
        outStart.select(1, a).copy_(
          (start.select(1, a).to(torch::kDouble) / out.stride[a]).round().to(torch::kLong) + out.shift[a]);
      }
      const auto [target, inside] = boxIndices(out.tileOutput, out.gridSize, outStart);
      int64_t    gridVoxels = 1;
      for (auto g : out.gridSize)
      {
        gridVoxels *= g;
      }
      const auto r = results.at(out.output).reshape({ jobs.size(0), out.channels, -1 }); // (J, C, O)
      const auto weighted = (r * out.tileWeight).permute({ 1, 0, 2 }).reshape({ out.channels, -1 });
      const auto keep = inside.reshape({ -1 }).nonzero().squeeze(1);
      const auto where = (target + (plane * gridVoxels).unsqueeze(1)).reshape({ -1 }).index_select(0, keep);
      out.sum.index_add_(1, where, weighted.index_select(1, keep));
      out.weight.index_add_(0, where, out.tileWeight.repeat({ jobs.size(0) }).index_select(0, keep));
    }
  }

  std::vector<FeatureMap> maps;
  for (auto & out : placements)
  {
    FeatureMap map;
    // (C, planes, *grid) -> channels last: (*grid, C) or, slice by slice, (planes, *grid, C).
    std::vector<int64_t> shape{ planeCount };
    shape.insert(shape.end(), out.gridSize.rbegin(), out.gridSize.rend());
    shape.push_back(out.channels);
    auto features = out.coversPlane()
                      ? out.sum.view(shape) // already channels last
                      : out.sum.div_(out.weight.clamp_min(1e-12)).view({ out.channels, -1 }).t().reshape(shape);
    map.features = (slices ? features : features[0]).contiguous();
    out.sum = torch::Tensor(); // free the blending buffer before the next output is finished
    map.geometry = image.geometry;
    std::vector<double> firstIndex(imageDim, 0.0);
    for (int a = 0; a < d; ++a)
    {
      map.geometry.size[a] = out.gridSize[a];
      map.geometry.spacing[a] = image.geometry.spacing[a] * out.stride[a];
      firstIndex[a] = 0.5 * (out.stride[a] - 1);
    }
    const auto origin = image.geometry.indexToWorld(torch::tensor(firstIndex, torch::kFloat64).unsqueeze(0))[0];
    map.geometry.origin = std::vector<double>(origin.data_ptr<double>(), origin.data_ptr<double>() + imageDim);
    // A sum is finite when every term is (in float64 no finite float32 sum overflows): one pass, no mask.
    if (!std::isfinite(map.features.sum(torch::kFloat64).item<double>()))
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
