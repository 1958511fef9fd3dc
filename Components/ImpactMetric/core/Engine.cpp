#include "Engine.h"

#include "BSpline.h"
#include "Memory.h"
#include "PatchSampler.h"
#include "Precision.h"

#include <chrono>
#include <iostream>
#include <cmath>
#include <sstream>

namespace impact
{
namespace
{
// (N, 1, *patch) -> (N, channels, *patch): a grey image fed to a model that wants more channels.
torch::Tensor
replicateChannels(const torch::Tensor & x, int channels)
{
  auto shape = x.sizes().vec();
  shape[1] = channels;
  return x.expand(shape);
}

double
seconds(std::chrono::steady_clock::time_point since)
{
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

std::string
valuesText(const std::vector<double> & values)
{
  std::ostringstream os;
  for (size_t a = 0; a < values.size(); ++a)
  {
    os << (a ? "*" : "") << values[a];
  }
  return os.str();
}

// Jacobian mode: a patch spans PatchSize x VoxelSize mm; one larger than the image sees nothing but
// mirrored borders, and one the size of a whole large image does not fit in memory.
void
checkPatchFitsImage(const ModelSpec & spec, const Geometry & geometry, const std::string & side, Mode mode)
{
  if (mode != Mode::Jacobian)
  {
    return;
  }
  double largest = 0;
  for (int a = 0; a < geometry.dim(); ++a)
  {
    largest = std::max(largest, geometry.size[a] * geometry.spacing[a]);
  }
  for (int a = 0; a < spec.dimension; ++a)
  {
    const double patch = spec.patchSize[a] * spec.voxelSize[a];
    // A model of the image's dimension has patch axis a along image axis a; a 2D plane can turn anywhere.
    const double image = spec.dimension == geometry.dim() ? geometry.size[a] * geometry.spacing[a] : largest;
    if (patch > image + 1e-6)
    {
      std::vector<double> extent;
      for (int b = 0; b < geometry.dim(); ++b)
      {
        extent.push_back(geometry.size[b] * geometry.spacing[b]);
      }
      std::vector<double> span;
      for (int b = 0; b < spec.dimension; ++b)
      {
        span.push_back(spec.patchSize[b] * spec.voxelSize[b]);
      }
      throw ParameterError("(PatchSize \"" + sizeText(spec.patchSize) + "\") at (VoxelSize \"" +
                           valuesText(spec.voxelSize) + "\") spans " + valuesText(span) + " mm, more than the " + side +
                           " image (" + valuesText(extent) + " mm): a patch must fit inside the image. The usual " +
                           "PatchSize is the model's field of view (impact-elastix models inspect MODEL)");
    }
  }
}
} // namespace

torch::Device
resolveDevice(const LevelConfig & config, const LogFunction & warn)
{
  if (config.gpu < 0)
  {
    return torch::kCPU;
  }
  if (!torch::cuda::is_available())
  {
    const std::string why = "(GPU " + std::to_string(config.gpu) +
                            ") asks for a CUDA device, but the installed torch has none (a CPU build of torch, or no "
                            "visible GPU)";
    if (config.gpuFallback)
    {
      warn("WARNING: " + why + "; running on the CPU as (GPUFallback \"true\") allows.");
      return torch::kCPU;
    }
    throw std::runtime_error(why + ". Set (GPU -1) to run on the CPU, or (GPUFallback \"true\") to fall back to it.");
  }
  const auto count = static_cast<int>(torch::cuda::device_count());
  if (config.gpu >= count)
  {
    throw std::runtime_error("(GPU " + std::to_string(config.gpu) + ") is not a CUDA device index; this machine has " +
                             std::to_string(count) + " (0 to " + std::to_string(count - 1) + ")");
  }
  return { torch::kCUDA, static_cast<c10::DeviceIndex>(config.gpu) };
}

SideImage
makeSideImage(const torch::Tensor & image, const Geometry & geometry)
{
  SideImage side;
  side.geometry = geometry;
  const auto values = image.to(torch::kFloat32).contiguous();
  side.coefficients = bsplineCoefficients(values.unsqueeze(-1));
  side.context.stats = torch::stack({ values.min(), values.max(), values.mean(), values.std() }).to(torch::kFloat32);
  side.context.direction =
    torch::tensor(geometry.direction, torch::kFloat64).reshape({ geometry.dim(), geometry.dim() }).round().to(torch::kInt16);
  return side;
}

namespace
{
/** The model outputs selected by a LayersMask, in order. */
std::vector<int>
selectedOutputs(const ModelSpec & spec)
{
  std::vector<int> outputs;
  for (size_t o = 0; o < spec.layersMask.size(); ++o)
  {
    if (spec.layersMask[o] == '1')
    {
      outputs.push_back(static_cast<int>(o));
    }
  }
  return outputs;
}
} // namespace

Engine::Engine(const LevelConfig & config, ModelCache & cache, SideImage fixed, SideImage moving, Options options)
  : m_Config(config)
  , m_Fixed(std::move(fixed))
  , m_Moving(std::move(moving))
  , m_Options(std::move(options))
  , m_Generator(at::make_generator<at::CPUGeneratorImpl>(m_Options.seed))
{
  if (!m_Options.info)
  {
    m_Options.info = [](const std::string &) {};
  }
  if (!m_Options.warn)
  {
    m_Options.warn = [](const std::string & message) { std::cerr << message << std::endl; };
  }
  const int imageDim = m_Fixed.geometry.dim();
  if (imageDim != 2 && imageDim != 3)
  {
    throw std::invalid_argument("the images are " + std::to_string(imageDim) + "D; IMPACT works on 2D and 3D images");
  }
  const auto device = resolveDevice(m_Config, m_Options.warn);
  if (m_Config.mixedPrecision)
  {
    std::string why;
    m_Fixed.context.autocast = m_Moving.context.autocast = mixedPrecisionType(device, why);
    (m_Fixed.context.autocast ? m_Options.info : m_Options.warn)("IMPACT: (UseMixedPrecision \"true\"): " + why);
  }
  std::vector<std::pair<ModelProbe, ModelProbe>> probes;
  for (size_t i = 0; i < m_Config.fixedModels.size(); ++i)
  {
    checkModelsFitImages(i);
    auto pair = loadPair(i, cache, device);
    probes.push_back(probePair(i, pair));
    checkSelectedOutputs(i, pair, probes.back().first, probes.back().second);
    m_Models.push_back(std::move(pair));
  }
  checkMemory(probes);
  if (m_Config.mode == Mode::Static)
  {
    computeStaticMaps();
  }
}

void
Engine::checkModelsFitImages(size_t model) const
{
  const int imageDim = m_Fixed.geometry.dim();
  for (const auto & [spec, geometry, side] :
       { std::tuple{ &m_Config.fixedModels[model], &m_Fixed.geometry, "fixed" },
         std::tuple{ &m_Config.movingModels[model], &m_Moving.geometry, "moving" } })
  {
    if (spec->dimension > imageDim)
    {
      throw ParameterError("(Dimension " + std::to_string(spec->dimension) + ") of model \"" + spec->path +
                           "\" needs " + std::to_string(spec->dimension) + "D images; these are " +
                           std::to_string(imageDim) + "D");
    }
    checkPatchFitsImage(*spec, *geometry, side, m_Config.mode);
  }
}

Engine::Pair
Engine::loadPair(size_t model, ModelCache & cache, torch::Device device) const
{
  const auto & fspec = m_Config.fixedModels[model];
  const auto & mspec = m_Config.movingModels[model];
  Pair         pair;
  try
  {
    pair.fixed = cache.get(fspec.path, device);
    pair.moving = cache.get(mspec.path, device);
  }
  catch (const std::runtime_error & error)
  {
    throw std::runtime_error(error.what() + (fspec.pathHint.empty() ? mspec.pathHint : fspec.pathHint));
  }
  pair.fixedOutputs = selectedOutputs(fspec);
  pair.movingOutputs = selectedOutputs(mspec);
  for (size_t l = 0; l < m_Config.layers.size(); ++l)
  {
    if (m_Config.layers[l].model == static_cast<int>(model))
    {
      pair.layers.push_back(l);
    }
  }
  pair.fixedContext = m_Fixed.context;
  pair.movingContext = m_Moving.context;
  pair.fixedContext.numberOfLayers = static_cast<int>(fspec.layersMask.size());
  pair.movingContext.numberOfLayers = static_cast<int>(mspec.layersMask.size());
  const int imageDim = m_Fixed.geometry.dim();
  if (m_Config.mode == Mode::Jacobian && fspec.dimension == imageDim)
  {
    // Patch axes along the fixed image's own axes (its direction matrix), VoxelSize mm apart; the
    // moving patch keeps the fixed patch's world orientation: features compare like with like.
    const auto axes = imageAxes(m_Fixed.geometry.direction, imageDim);
    pair.fixedLayout = patchLayout(fspec.patchSize, fspec.voxelSize, axes, m_Fixed.geometry);
    pair.movingLayout = patchLayout(mspec.patchSize, mspec.voxelSize, axes, m_Moving.geometry);
  }
  return pair;
}

std::pair<ModelProbe, ModelProbe>
Engine::probePair(size_t model, Pair & pair) const
{
  const auto & fspec = m_Config.fixedModels[model];
  const auto & mspec = m_Config.movingModels[model];
  // Static mode with whole-axis patches (PatchSize 0) probes a 32-voxel grid.
  const std::vector<int64_t> wholeSize(fspec.dimension, 32);
  const auto                 fprobe = probeModel(*pair.fixed, fspec, wholeSize);
  const auto mprobe = sameModelInput(model) ? fprobe : probeModel(*pair.moving, mspec, wholeSize);
  // What one sample costs in Jacobian mode: its patches' input and output elements, both sides.
  pair.elementsPerSample = 0;
  for (const auto & [spec, probe] : { std::pair{ &fspec, &fprobe }, std::pair{ &mspec, &mprobe } })
  {
    int64_t elements = spec->channels;
    for (auto p : spec->patchSize)
    {
      elements *= std::max<int64_t>(p, 1);
    }
    for (const auto & shape : probe->outputShapes)
    {
      elements += c10::multiply_integers(shape);
    }
    pair.elementsPerSample += elements;
  }
  return { fprobe, mprobe };
}

bool
Engine::sameModelInput(size_t model) const
{
  const auto & f = m_Config.fixedModels[model];
  const auto & m = m_Config.movingModels[model];
  return m.path == f.path && m.patchSize == f.patchSize && m.channels == f.channels && m.layersMask == f.layersMask;
}

void
Engine::checkSelectedOutputs(size_t model, const Pair & pair, const ModelProbe & fprobe, const ModelProbe & mprobe) const
{
  const auto & fspec = m_Config.fixedModels[model];
  const auto & mspec = m_Config.movingModels[model];
  for (size_t k = 0; k < pair.fixedOutputs.size(); ++k)
  {
    const int    fo = pair.fixedOutputs[k], mo = pair.movingOutputs[k];
    const auto & fshape = fprobe.outputShapes[fo];
    const auto & mshape = mprobe.outputShapes[mo];
    // Static maps are resampled to the fixed points, so only the channels must agree there.
    if (m_Config.mode == Mode::Static ? fshape[1] != mshape[1] : fshape != mshape)
    {
      throw ParameterError("fixed model \"" + fspec.path + "\" output " + std::to_string(fo + 1) +
                           " and moving model \"" + mspec.path + "\" output " + std::to_string(mo + 1) +
                           " cannot be compared: their features have shapes " + c10::str(c10::IntArrayRef(fshape)) +
                           " and " + c10::str(c10::IntArrayRef(mshape)));
    }
    checkFieldOfView(fspec, *pair.fixed, fo, m_Fixed.geometry, "fixed", fshape[1]);
    if (!(sameModelInput(model) && fo == mo)) // else checked and reported already
    {
      checkFieldOfView(mspec, *pair.moving, mo, m_Moving.geometry, "moving", mshape[1]);
    }
    const auto & layer = m_Config.layers[pair.layers[k]];
    if (layer.subsetFeaturesGiven && layer.subsetFeatures > fshape[1])
    {
      // Maps written for models with more channels (SubsetFeatures 32 is the usual value) stay
      // valid for smaller ones: all channels are used, and the log says so.
      m_Options.warn("WARNING: IMPACT: (SubsetFeatures " + std::to_string(layer.subsetFeatures) +
                     ") is more than the " + std::to_string(fshape[1]) + " channels of output " +
                     std::to_string(fo + 1) + " of model \"" + fspec.path + "\"; all " + std::to_string(fshape[1]) +
                     " channels are compared (0 says so explicitly)");
    }
  }
}

void
Engine::checkFieldOfView(const ModelSpec &   spec,
                         const Model &       model,
                         int                 output,
                         const Geometry &    geometry,
                         const std::string & side,
                         int64_t             channels) const
{
  // The patch must cover the field of view, or features would depend on padding.
  const auto fov = model.fieldOfView(spec, output);
  for (int a = 0; a < spec.dimension; ++a)
  {
    if (spec.patchSize[a] != 0 && spec.patchSize[a] < fov[a])
    {
      throw ParameterError("(PatchSize \"" + sizeText(spec.patchSize) + "\") of model \"" + spec.path +
                           "\" is smaller than the field of view " + sizeText(fov) + " of its output " +
                           std::to_string(output + 1) + "; use at least " + sizeText(fov));
    }
  }
  if (m_Config.mode == Mode::Static)
  {
    if (spec.patchSize[0] != 0 && c10::multiply_integers(spec.patchSize) < 8 * c10::multiply_integers(fov))
    {
      // IMPACT's documentation: Static tiles the image into overlapping PatchSize tiles, or runs it
      // whole with PatchSize 0. Tiles near the field of view are legal but wasteful: say so.
      m_Options.warn("WARNING: IMPACT Static: tiles of (PatchSize \"" + sizeText(spec.patchSize) +
                     "\") are close to the field of view " + sizeText(fov) + " of model \"" + spec.path +
                     "\": tiles overlap by half, so the model runs on about " + std::to_string(1 << spec.dimension) +
                     "x the image's voxels and most features come from tile borders. (PatchSize \"" +
                     std::string(spec.dimension == 3 ? "0*0*0" : "0*0") +
                     "\") runs the whole image at once; tiles of 64 voxels or more bound memory instead");
    }
    const auto grid = modelGrid(geometry, spec.voxelSize);
    for (int a = 0; a < spec.dimension; ++a)
    {
      // Deep layers may see more than the image (their features still vary); a grid smaller than
      // a shallow field of view, or than 8 voxels, leaves nothing but padding.
      if (grid.size[a] < std::min<int64_t>(fov[a], 8))
      {
        throw ParameterError("(VoxelSize \"" + valuesText(spec.voxelSize) + "\") of model \"" + spec.path +
                             "\" resamples the " + side + " image to " +
                             sizeText(std::vector<int64_t>(grid.size.begin(), grid.size.begin() + spec.dimension)) +
                             " voxels, fewer than the field of view " + sizeText(fov) + " of its output " +
                             std::to_string(output + 1) + ": the features would be all padding. Use a VoxelSize " +
                             "of at most the image extent / field of view on each axis");
      }
    }
  }
  m_Options.info("IMPACT: model \"" + spec.path + "\" output " + std::to_string(output + 1) + ": " +
                 std::to_string(channels) + " channels, field of view " + sizeText(fov) + " voxels");
}

void
Engine::checkMemory(const std::vector<std::pair<ModelProbe, ModelProbe>> & probes) const
{
  const auto limit = static_cast<double>(memoryLimit(m_Config.memoryLimitGB));
  const auto limitText = bytesText(limit) + (m_Config.memoryLimitGB > 0
                                               ? " (MemoryLimit)"
                                               : " (available on this machine; MemoryLimit sets another)");
  if (m_Config.mode == Mode::Jacobian)
  {
    for (size_t i = 0; i < m_Models.size(); ++i)
    {
      // The chunking heuristic: activations of hidden layers ~ 8x the patches' inputs and outputs.
      const double oneSample = 8.0 * sizeof(float) * static_cast<double>(m_Models[i].elementsPerSample);
      if (oneSample > limit)
      {
        throw ParameterError("(PatchSize \"" + sizeText(m_Config.fixedModels[i].patchSize) + "\") of model \"" +
                             m_Config.fixedModels[i].path + "\": one sample's patches and features need about " +
                             bytesText(oneSample) + ", more than the memory limit " + limitText +
                             "; use a smaller PatchSize (the model's field of view suffices)");
      }
    }
    return;
  }
  const auto [kept, transient] = staticMemoryEstimate(probes);
  const double       total = kept + transient;
  std::ostringstream os;
  os << "feature maps need about " << bytesText(total) << " (" << bytesText(kept) << " kept, "
     << bytesText(transient) << " while one is computed); memory limit " << limitText;
  m_Options.info("IMPACT Static: " + os.str());
  if (total > limit)
  {
    const int d = m_Config.fixedModels.front().dimension;
    throw ParameterError("Static " + os.str() + ". Use a coarser VoxelSize (twice the voxel size needs about " +
                         bytesText(total / std::pow(2.0, d)) + "), fewer channels (PCA), a smaller PatchSize " +
                         "for the model's tiles, or Jacobian mode, which keeps no feature maps");
  }
}

std::pair<double, double>
Engine::staticMemoryEstimate(const std::vector<std::pair<ModelProbe, ModelProbe>> & probes) const
{
  const auto floatBytes = static_cast<double>(sizeof(float));
  // Static mode: every selected layer keeps a fixed and a moving map of B-spline coefficients
  // (float32, channels last); while one side is computed, the model's activations and two
  // float32 copies of its raw maps (blending sum, channels-last result) exist on top.
  double kept = 0, transient = 0;
  for (size_t i = 0; i < m_Models.size(); ++i)
  {
    for (int side = 0; side < 2; ++side)
    {
      const auto & spec = side == 0 ? m_Config.fixedModels[i] : m_Config.movingModels[i];
      const auto & probe = side == 0 ? probes[i].first : probes[i].second;
      const auto   grid = modelGrid(side == 0 ? m_Fixed.geometry : m_Moving.geometry, spec.voxelSize);
      double       gridVoxels = 1, tileVoxels = 1;
      for (int a = 0; a < grid.dim(); ++a)
      {
        gridVoxels *= static_cast<double>(grid.size[a]);
        tileVoxels *= a < spec.dimension && spec.patchSize[a] > 0 ? std::min<double>(spec.patchSize[a], grid.size[a])
                      : a < spec.dimension                        ? static_cast<double>(grid.size[a])
                                                                   : 1.0;
      }
      const double runVoxels =
        std::max(tileVoxels, std::min<double>(gridVoxels, static_cast<double>(m_Options.maxBatchVoxels)));
      double raw = 0, outputChannels = 0;
      for (size_t o = 0; o < probe.outputShapes.size(); ++o)
      {
        const auto & shape = probe.outputShapes[o];
        double       stride = 1; // probe input voxels per output voxel
        for (int a = 0; a < spec.dimension; ++a)
        {
          stride *= (spec.patchSize[a] > 0 ? spec.patchSize[a] : 32) / static_cast<double>(shape[2 + a]);
        }
        outputChannels += static_cast<double>(shape[1]);
        if (spec.layersMask[o] != '1')
        {
          continue;
        }
        const double voxels = gridVoxels / stride;
        int64_t      channels = shape[1];
        for (const auto & layer : m_Config.layers)
        {
          if (layer.model == static_cast<int>(i) && layer.output == static_cast<int>(o) && layer.pca > 0)
          {
            channels = std::min<int64_t>(channels, layer.pca);
          }
        }
        kept += voxels * static_cast<double>(channels) * floatBytes;
        raw += 2.0 * voxels * static_cast<double>(shape[1]) * floatBytes;
      }
      const double activations = runVoxels * floatBytes * (spec.channels + 3.0 * outputChannels);
      transient = std::max(transient, raw + activations);
    }
  }
  return { kept, transient };
}

void
Engine::updateMovingFeatures(const PointMapping & transform)
{
  if (m_Config.mode != Mode::Static)
  {
    return;
  }
  const auto start = std::chrono::steady_clock::now();
  const int  dim = m_Fixed.geometry.dim();
  for (size_t i = 0; i < m_Models.size(); ++i)
  {
    const auto &   mspec = m_Config.movingModels[i];
    ResampledImage warped;
    warped.geometry = modelGrid(m_Fixed.geometry, mspec.voxelSize);
    const auto points = warped.geometry.worldPoints();
    const auto mapped = transform(points);
    const auto shape = tensorShape(warped.geometry);
    warped.values = std::get<0>(bsplineSample(m_Moving.coefficients, m_Moving.geometry.worldToIndex(mapped), false))
                      .reshape(shape);
    auto displacement = std::make_shared<FeatureMap>();
    displacement->geometry = warped.geometry;
    auto displacementShape = shape;
    displacementShape.push_back(dim);
    displacement->features = (mapped - points).to(torch::kFloat32).reshape(displacementShape);
    displacement->finalize(false);
    auto maps = computeFeatureMaps(*m_Models[i].moving, mspec, warped, m_Models[i].movingContext,
                                   m_Options.maxBatchVoxels);
    for (size_t k = 0; k < m_Models[i].layers.size(); ++k)
    {
      const auto l = m_Models[i].layers[k];
      auto &     map = maps.at(k);
      m_PCA[l].apply(map);
      map.finalize(false);
      m_Maps[l].second = std::move(map);
      m_Displacement[l] = displacement;
    }
  }
  std::ostringstream os;
  os << "IMPACT Static: moving feature maps recomputed on the warped moving image in " << seconds(start) << " s";
  m_Options.info(os.str());
}

torch::Tensor
Engine::channelSubset(const LayerSpec & layer, int64_t channels)
{
  if (layer.subsetFeatures <= 0 || layer.subsetFeatures >= channels)
  {
    return {};
  }
  return torch::randperm(channels, m_Generator, torch::kLong).narrow(0, 0, layer.subsetFeatures);
}

double
Engine::evaluateJacobianModel(size_t model, const torch::Tensor & x, const torch::Tensor & y, torch::Tensor * gradient)
{
  // Every distance but NCC is a mean of per-sample terms, so chunks of samples (bounded memory)
  // add up exactly with weights n_chunk / N. NCC correlates across all samples: one chunk.
  const auto n = x.size(0);
  bool       ncc = false;
  for (const auto & layer : m_Config.layers)
  {
    ncc = ncc || (layer.model == static_cast<int>(model) && layer.distance == Distance::NCC);
  }
  // Activations of hidden layers are not known; count them as 8x the inputs and outputs.
  const auto chunk = ncc ? n : std::max<int64_t>(1, m_Options.maxBatchElements / (8 * m_Models[model].elementsPerSample));
  if (chunk >= n)
  {
    return evaluateJacobianChunk(model, x, y, gradient);
  }
  double value = 0;
  for (int64_t start = 0; start < n; start += chunk)
  {
    const auto    len = std::min(chunk, n - start);
    torch::Tensor part;
    if (gradient)
    {
      part = torch::zeros({ len, x.size(1) }, torch::kFloat64);
    }
    const double w = static_cast<double>(len) / n;
    value += w * evaluateJacobianChunk(model, x.narrow(0, start, len), y.narrow(0, start, len), gradient ? &part : nullptr);
    if (gradient)
    {
      gradient->narrow(0, start, len).add_(part, w);
    }
  }
  return value;
}

double
Engine::evaluateJacobianChunk(size_t model, const torch::Tensor & x, const torch::Tensor & y, torch::Tensor * gradient)
{
  const auto & fspec = m_Config.fixedModels[model];
  const auto & mspec = m_Config.movingModels[model];
  const auto & pair = m_Models[model];
  const auto   n = x.size(0);
  // A model of the image's dimension has one patch layout per side; a 2D model on a 3D image sees a
  // random plane per sample, the same plane on both sides.
  PatchLayout fixedLayout = pair.fixedLayout, movingLayout = pair.movingLayout;
  if (!fixedLayout.offsets.defined())
  {
    const auto axes = m_Config.planeSampling == PlaneSampling::Oblique
                        ? randomPlanes(n, m_Generator)
                        : principalPlanes(n, m_Fixed.geometry.direction, m_Generator);
    fixedLayout = patchLayout(fspec.patchSize, fspec.voxelSize, axes, m_Fixed.geometry);
    movingLayout = patchLayout(mspec.patchSize, mspec.voxelSize, axes, m_Moving.geometry);
  }
  auto patchShape = [n](const ModelSpec & spec) {
    std::vector<int64_t> shape{ n, 1 };
    shape.insert(shape.end(), spec.patchSize.rbegin(), spec.patchSize.rend()); // tensor order
    return shape;
  };
  const auto fixedPatch =
    samplePatches(m_Fixed.coefficients, m_Fixed.geometry, x, fixedLayout, false).values.view(patchShape(fspec));
  const auto moving = samplePatches(m_Moving.coefficients, m_Moving.geometry, y, movingLayout, gradient != nullptr);
  const auto movingPatch = moving.values.view(patchShape(mspec));

  m_Statistics.patchesForward += 2 * n;
  m_Statistics.patchesBackward += gradient ? n : 0;

  // Fixed features are constants of the optimisation. Each layer of this model draws this call's
  // channel subset (undefined: all channels).
  std::vector<torch::Tensor> fixedFeatures, subsets;
  {
    torch::NoGradGuard noGrad;
    const auto         outs = pair.fixed->forward(replicateChannels(fixedPatch, fspec.channels), pair.fixedContext);
    for (size_t k = 0; k < pair.layers.size(); ++k)
    {
      auto f = outs.at(pair.fixedOutputs[k]);
      auto subset = channelSubset(m_Config.layers[pair.layers[k]], f.size(1));
      if (subset.defined())
      {
        subset = subset.to(f.device());
        f = f.index_select(1, subset);
      }
      fixedFeatures.push_back(f);
      subsets.push_back(subset);
    }
  }
  auto loss = [&](const std::vector<torch::Tensor> & movingOuts) { // eq. 6: sum_l gamma_l d(f_l, m_l)
    torch::Tensor total;
    for (size_t k = 0; k < pair.layers.size(); ++k)
    {
      const auto & layer = m_Config.layers[pair.layers[k]];
      auto         m = movingOuts.at(pair.movingOutputs[k]);
      if (subsets[k].defined())
      {
        m = m.index_select(1, subsets[k]);
      }
      const auto term = distance(layer.distance, fixedFeatures[k], m) * layer.weight;
      total = total.defined() ? total + term : term;
    }
    return total;
  };

  if (!gradient)
  {
    torch::NoGradGuard noGrad;
    return loss(pair.moving->forward(replicateChannels(movingPatch, mspec.channels), pair.movingContext)).item<double>();
  }
  // eq. 7-8: dS/d(moving patch) by backpropagation through the model, then the image gradient.
  auto       leaf = movingPatch.detach().requires_grad_(true);
  auto       value = loss(pair.moving->forward(replicateChannels(leaf, mspec.channels), pair.movingContext));
  const auto dPatch = torch::autograd::grad({ value }, { leaf })[0].to(torch::kCPU);
  *gradient += chainPatchGradient(dPatch, moving.indexGradient, m_Moving.geometry);
  return value.item<double>();
}

double
Engine::evaluateStaticLayer(size_t index, const torch::Tensor & x, const torch::Tensor & y, torch::Tensor * gradient)
{
  const auto & layer = m_Config.layers[index];
  const auto & [fixedMap, movingMap] = m_Maps[index];
  auto f = std::get<0>(bsplineSample(fixedMap.coefficients, fixedMap.geometry.worldToIndex(x), false));
  // After an update the moving map lives on the fixed grid, warped by T_k: read it at y - u_k(x).
  auto at = y;
  if (const auto & u = m_Displacement[index])
  {
    at = y - std::get<0>(bsplineSample(u->coefficients, u->geometry.worldToIndex(x), false)).to(torch::kFloat64);
  }
  auto [m, dm] = bsplineSample(movingMap.coefficients, movingMap.geometry.worldToIndex(at), gradient != nullptr);
  if (const auto subset = channelSubset(layer, f.size(1)); subset.defined())
  {
    f = f.index_select(1, subset);
    m = m.index_select(1, subset);
    dm = gradient ? dm.index_select(1, subset) : dm;
  }
  if (!gradient)
  {
    return layer.weight * distance(layer.distance, f, m).item<double>();
  }
  auto       leaf = m.detach().requires_grad_(true);
  const auto value = distance(layer.distance, f, leaf) * layer.weight;
  const auto dFeature = torch::autograd::grad({ value }, { leaf })[0].to(torch::kFloat64); // (N, C)
  const auto featureGradient = torch::matmul(dm.to(torch::kFloat64), movingMap.geometry.worldToIndexMatrix());
  *gradient += (dFeature.unsqueeze(-1) * featureGradient).sum(1);
  return value.item<double>();
}

namespace
{
std::string
staticKey(const LevelConfig & config, const Geometry & fixed, const Geometry & moving)
{
  std::ostringstream os;
  auto               list = [&os](const auto & values) {
    for (const auto & v : values)
    {
      os << v << ' ';
    }
    os << '|';
  };
  for (const auto * g : { &fixed, &moving })
  {
    list(g->size);
    list(g->origin);
    list(g->spacing);
    list(g->direction);
  }
  for (const auto * specs : { &config.fixedModels, &config.movingModels })
  {
    for (const auto & spec : *specs)
    {
      os << spec.path << '|' << spec.channels << '|' << spec.layersMask << '|';
      list(spec.patchSize);
      list(spec.voxelSize);
    }
  }
  for (const auto & layer : config.layers)
  {
    os << layer.model << ',' << layer.output << ',' << layer.pca << ';';
  }
  os << config.featureMapDirectory;
  return os.str();
}
} // namespace

void
Engine::computeStaticMaps()
{
  const auto & cache = m_Options.staticCache;
  const auto   key = staticKey(m_Config, m_Fixed.geometry, m_Moving.geometry);
  if (cache && cache->key == key && torch::equal(cache->fixedImage, m_Fixed.coefficients) &&
      torch::equal(cache->movingImage, m_Moving.coefficients))
  {
    m_Maps = cache->maps;
    m_PCA = cache->pca;
    m_Inputs = cache->inputs;
    m_Displacement.assign(m_Maps.size(), nullptr);
    m_Options.info("IMPACT Static: same images, models and settings as the previous level: feature maps reused");
    return;
  }
  if (cache)
  {
    *cache = StaticCache{}; // the previous level's maps go before this level's are computed
  }
  const bool keep = !m_Config.featureMapDirectory.empty();
  for (size_t i = 0; i < m_Models.size(); ++i)
  {
    const auto   start = std::chrono::steady_clock::now();
    const auto & fspec = m_Config.fixedModels[i];
    const auto & mspec = m_Config.movingModels[i];
    auto         fixedInput = resampleForModel(m_Fixed.coefficients, m_Fixed.geometry, fspec.voxelSize);
    auto         movingInput = resampleForModel(m_Moving.coefficients, m_Moving.geometry, mspec.voxelSize);
    const auto & pair = m_Models[i];
    auto fmaps = computeFeatureMaps(*pair.fixed, fspec, fixedInput, pair.fixedContext, m_Options.maxBatchVoxels);
    auto mmaps = computeFeatureMaps(*pair.moving, mspec, movingInput, pair.movingContext, m_Options.maxBatchVoxels);
    for (size_t k = 0; k < pair.layers.size(); ++k)
    {
      const auto & layer = m_Config.layers[pair.layers[k]];
      auto &       f = fmaps.at(k);
      auto &       m = mmaps.at(k);
      m_PCA.push_back(applyPCA(f, m, layer.pca));
      m_Displacement.emplace_back();
      std::ostringstream os;
      os << "IMPACT Static: model \"" << fspec.path << "\" output " << layer.output + 1 << ": feature maps "
         << sizeText(f.geometry.size) << " (fixed) and " << sizeText(m.geometry.size) << " (moving) voxels x "
         << f.features.size(-1) << " channels";
      f.finalize(keep);
      m.finalize(keep);
      m_Maps.emplace_back(std::move(f), std::move(m));
      m_Options.info(os.str());
    }
    if (keep)
    {
      m_Inputs.emplace_back(std::move(fixedInput), std::move(movingInput));
    }
    std::ostringstream os;
    os << "IMPACT Static: features of model \"" << fspec.path << "\" computed in " << seconds(start) << " s";
    m_Options.info(os.str());
  }
  if (cache)
  {
    *cache = StaticCache{ m_Fixed.coefficients, m_Moving.coefficients, key, m_Maps, m_PCA, m_Inputs };
  }
}

Engine::Result
Engine::evaluate(const torch::Tensor & fixedPoints, const torch::Tensor & movingPoints, bool withGradient)
{
  TORCH_CHECK(fixedPoints.sizes() == movingPoints.sizes() && fixedPoints.dim() == 2 &&
                fixedPoints.size(1) == m_Fixed.geometry.dim(),
              "sample points must be (N, ", m_Fixed.geometry.dim(), "), got ", fixedPoints.sizes(), " and ",
              movingPoints.sizes());
  const auto start = std::chrono::steady_clock::now();
  const auto x = fixedPoints.to(torch::kFloat64);
  const auto y = movingPoints.to(torch::kFloat64);
  Result     result;
  if (withGradient)
  {
    result.gradient = torch::zeros_like(y);
  }
  auto * g = withGradient ? &result.gradient : nullptr;
  if (m_Config.mode == Mode::Jacobian)
  {
    for (size_t i = 0; i < m_Models.size(); ++i)
    {
      result.value += evaluateJacobianModel(i, x, y, g);
    }
  }
  else
  {
    for (size_t l = 0; l < m_Maps.size(); ++l)
    {
      result.value += evaluateStaticLayer(l, x, y, g);
    }
  }
  if (!std::isfinite(result.value) || (g && !torch::isfinite(*g).all().item<bool>()))
  {
    throw std::runtime_error("the similarity is NaN or Inf: a model returned NaN/Inf features for these "
                             "samples (check the intensity preprocessing the model expects)");
  }
  ++m_Statistics.evaluations;
  m_Statistics.evaluationsWithGradient += withGradient ? 1 : 0;
  m_Statistics.samples += x.size(0);
  m_Statistics.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

} // namespace impact
