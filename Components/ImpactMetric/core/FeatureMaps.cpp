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

namespace
{
// Phase 1, the tile plan: the planes the model runs on (the image, or its slices along the third
// axis for a 2D model on a 3D image), the tile size, and every tile's start. Tiles overlap by
// about half and start at multiples of the model's stride, so that their output grids coincide.
struct TilePlan
{
  torch::Tensor        planes;        // (planes, *spatial_d) float32
  int64_t              planeCount{};
  std::vector<int64_t> planeSize;     // voxels per model axis, x first
  std::vector<int64_t> tile;          // tile voxels per model axis, x first
  int64_t              planeVoxels{}, tileVoxels{};
  torch::Tensor        tileStart;     // (tiles per plane, d) int64, x first
  int64_t              tilesPerPlane{};

  int64_t
  jobs() const
  {
    return planeCount * tilesPerPlane;
  }
};

TilePlan
planTiles(const Model & model, const ModelSpec & spec, const ResampledImage & image, const ModelContext & context)
{
  const int d = spec.dimension;
  TilePlan  plan;
  plan.planes = (d < image.geometry.dim() ? image.values : image.values.unsqueeze(0)).contiguous();
  plan.planeCount = plan.planes.size(0);
  plan.planeVoxels = plan.tileVoxels = 1;
  for (int a = 0; a < d; ++a)
  {
    const auto size = plan.planes.size(d - a);
    plan.planeSize.push_back(size);
    plan.tile.push_back((spec.patchSize[a] == 0 || spec.patchSize[a] >= size) ? size : spec.patchSize[a]);
    plan.planeVoxels *= size;
    plan.tileVoxels *= plan.tile.back();
  }
  const auto                        stride = modelStride(model, spec, context);
  std::vector<std::vector<int64_t>> starts{ {} }; // the product of the per-axis starts
  for (int a = 0; a < d; ++a)
  {
    std::vector<std::vector<int64_t>> next;
    for (const auto & prefix : starts)
    {
      for (auto t : tileStarts(plan.planeSize[a], plan.tile[a], stride[a]))
      {
        next.push_back(prefix);
        next.back().push_back(t);
      }
    }
    starts = std::move(next);
  }
  plan.tilesPerPlane = static_cast<int64_t>(starts.size());
  plan.tileStart = torch::empty({ plan.tilesPerPlane, d }, torch::kLong);
  for (int64_t t = 0; t < plan.tilesPerPlane; ++t)
  {
    for (int a = 0; a < d; ++a)
    {
      plan.tileStart[t][a] = starts[t][a];
    }
  }
  return plan;
}

// Phase 2, placement: the first batch's outputs tell each selected output's channels, size and
// stride (no separate probe run: for a whole image, that would be a second forward pass over it).
std::vector<OutputPlacement>
placeOutputs(const TilePlan & plan, const ModelSpec & spec, const std::vector<torch::Tensor> & firstBatch)
{
  const int                    d = spec.dimension;
  std::vector<OutputPlacement> placements;
  for (int k = 0; k < static_cast<int>(firstBatch.size()); ++k)
  {
    if (spec.layersMask.at(k) != '1')
    {
      continue;
    }
    const auto &    result = firstBatch[k]; // (J, C, *tile output) in tensor order
    OutputPlacement out;
    out.output = k;
    out.channels = result.size(1);
    out.tileWeight = torch::ones({ 1 }, torch::kFloat32);
    for (int a = d - 1; a >= 0; --a) // tensor order for the weights
    {
      out.tileWeight =
        (out.tileWeight.unsqueeze(1) * tileWeights(result.size(2 + (d - 1 - a))).unsqueeze(0)).reshape({ -1 });
    }
    int64_t gridVoxels = 1;
    for (int a = 0; a < d; ++a)
    {
      const auto outputVoxels = result.size(1 + d - a);
      const auto voxelStride = std::max<int64_t>(1, std::llround(static_cast<double>(plan.tile[a]) / outputVoxels));
      out.tileOutput.push_back(outputVoxels);
      out.stride.push_back(voxelStride);
      out.gridSize.push_back((plan.planeSize[a] + voxelStride - 1) / voxelStride);
      out.shift.push_back(std::llround((plan.tile[a] - outputVoxels * voxelStride) / (2.0 * voxelStride)));
      gridVoxels *= out.gridSize.back();
    }
    out.wholePlane = plan.tilesPerPlane == 1;
    if (out.coversPlane())
    {
      out.sum = torch::empty({ plan.planeCount * gridVoxels, out.channels }, torch::kFloat32); // channels last
    }
    else
    {
      out.sum = torch::zeros({ out.channels, plan.planeCount * gridVoxels }, torch::kFloat32);
      out.weight = torch::zeros({ plan.planeCount * gridVoxels }, torch::kFloat32);
    }
    placements.push_back(std::move(out));
  }
  return placements;
}

// Phase 3, blending: adds one batch of tile outputs (J, C, *tile output) into the output grid.
// `firstJob` is the batch's first job; `plane` and `start` (J, d) say where each tile was.
void
blendBatch(OutputPlacement &     out,
           const TilePlan &      plan,
           int64_t               firstJob,
           const torch::Tensor & plane,
           const torch::Tensor & start,
           const torch::Tensor & result)
{
  const auto jobs = start.size(0);
  if (out.coversPlane())
  {
    // One tile per plane whose output is the output grid: nothing to blend (the weights cancel).
    const auto r = result.reshape({ jobs, out.channels, -1 }).transpose(1, 2);
    out.sum.view({ plan.planeCount, -1, out.channels }).narrow(0, firstJob, jobs).copy_(r);
    return;
  }
  // Tile output j lands on output index start / stride + shift + j; keep what falls inside.
  auto outputStart = start.clone();
  for (size_t a = 0; a < out.stride.size(); ++a)
  {
    const auto axis = static_cast<int64_t>(a);
    outputStart.select(1, axis).copy_(
      (start.select(1, axis).to(torch::kDouble) / out.stride[a]).round().to(torch::kLong) + out.shift[a]);
  }
  const auto [target, inside] = boxIndices(out.tileOutput, out.gridSize, outputStart);
  const auto gridVoxels = c10::multiply_integers(out.gridSize);
  const auto weighted =
    (result.reshape({ jobs, out.channels, -1 }) * out.tileWeight).permute({ 1, 0, 2 }).reshape({ out.channels, -1 });
  const auto keep = inside.reshape({ -1 }).nonzero().squeeze(1);
  const auto where = (target + (plane * gridVoxels).unsqueeze(1)).reshape({ -1 }).index_select(0, keep);
  out.sum.index_add_(1, where, weighted.index_select(1, keep));
  out.weight.index_add_(0, where, out.tileWeight.repeat({ jobs }).index_select(0, keep));
}

// Phase 4, assembly: the blended sums as a channels-last FeatureMap on the output's grid.
FeatureMap
assembleMap(OutputPlacement & out, const TilePlan & plan, const ModelSpec & spec, const ResampledImage & image)
{
  const int  imageDim = image.geometry.dim();
  const int  d = spec.dimension;
  FeatureMap map;
  // (C, planes, *grid) -> channels last: (*grid, C) or, slice by slice, (planes, *grid, C).
  std::vector<int64_t> shape{ plan.planeCount };
  shape.insert(shape.end(), out.gridSize.rbegin(), out.gridSize.rend());
  shape.push_back(out.channels);
  auto features = out.coversPlane()
                    ? out.sum.view(shape) // already channels last
                    : out.sum.div_(out.weight.clamp_min(1e-12)).view({ out.channels, -1 }).t().reshape(shape);
  map.features = (d < imageDim ? features : features[0]).contiguous();
  out.sum = torch::Tensor(); // free the blending buffer before the next output is finished
  map.geometry = image.geometry;
  std::vector<double> firstIndex(imageDim, 0.0); // the centre of the first output voxel's input
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
  return map;
}
} // namespace

std::vector<FeatureMap>
computeFeatureMaps(const Model &          model,
                   const ModelSpec &      spec,
                   const ResampledImage & image,
                   const ModelContext &   context,
                   int64_t                maxBatchVoxels)
{
  TORCH_CHECK(spec.dimension <= image.geometry.dim(), "a ", spec.dimension, "D model cannot run on a ",
              image.geometry.dim(), "D image");
  const auto plan = planTiles(model, spec, image, context);
  std::vector<int64_t> tileShape{ -1, spec.channels }; // (jobs, C, *tile) in tensor order
  tileShape.insert(tileShape.end(), plan.tile.rbegin(), plan.tile.rend());
  // Jobs are every (plane, tile start). Tiles (and slices) go through the model in batches, unless
  // its outputs depend on the batch.
  const int64_t perBatch = model.mixesBatch(spec) ? 1 : std::max<int64_t>(1, maxBatchVoxels / plan.tileVoxels);
  const auto    flatPlanes = plan.planes.reshape({ -1 });
  std::vector<OutputPlacement> placements;
  for (int64_t first = 0; first < plan.jobs(); first += perBatch)
  {
    const auto    jobs = torch::arange(first, std::min(plan.jobs(), first + perBatch), torch::kLong);
    const auto    plane = jobs.div(plan.tilesPerPlane, "floor");
    const auto    start = plan.tileStart.index_select(0, jobs.remainder(plan.tilesPerPlane));
    torch::Tensor tiles; // (J, tile voxels)
    if (plan.tilesPerPlane == 1 && plan.tileVoxels == plan.planeVoxels)
    {
      tiles = plan.planes.narrow(0, first, jobs.size(0)).reshape({ jobs.size(0), -1 });
    }
    else
    {
      const auto input = boxIndices(plan.tile, plan.planeSize, start).first + (plane * plan.planeVoxels).unsqueeze(1);
      tiles = flatPlanes.index_select(0, input.reshape({ -1 })).view({ jobs.size(0), -1 });
    }
    std::vector<torch::Tensor> results;
    {
      torch::InferenceMode guard;
      results = model.forward(tiles.unsqueeze(1).expand({ -1, spec.channels, -1 }).reshape(tileShape), context);
      for (auto & r : results)
      {
        r = r.to(torch::kCPU, torch::kFloat32);
      }
    }
    if (placements.empty())
    {
      placements = placeOutputs(plan, spec, results);
    }
    for (auto & out : placements)
    {
      blendBatch(out, plan, first, plane, start, results.at(out.output));
    }
  }
  std::vector<FeatureMap> maps;
  for (auto & out : placements)
  {
    maps.push_back(assembleMap(out, plan, spec, image));
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
