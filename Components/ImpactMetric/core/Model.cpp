#include "Model.h"

#include "Mind.h"
#include "Precision.h"

#include <fstream>
#include <sstream>

namespace impact
{
namespace
{
std::string
firstLine(const std::string & s)
{
  const auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

std::string
shapeText(const std::vector<int64_t> & shape)
{
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i)
  {
    os << (i ? ", " : "") << shape[i];
  }
  return os.str() + "]";
}

std::vector<int64_t>
inputShape(const ModelSpec & spec, const std::vector<int64_t> & patch)
{
  std::vector<int64_t> shape{ 1, spec.channels };
  shape.insert(shape.end(), patch.rbegin(), patch.rend()); // tensor order: slowest axis first
  return shape;
}
} // namespace

std::string
sizeText(const std::vector<int64_t> & size)
{
  std::string out;
  for (auto s : size)
  {
    out += (out.empty() ? "" : "*") + std::to_string(s);
  }
  return out;
}

Model::Model(const std::string & path, torch::Device device)
  : m_Path(path)
  , m_Device(device)
{
  if (!std::ifstream(path).good())
  {
    m_Mind = builtinMind(path);
    if (!m_Mind)
    {
      throw std::runtime_error("model file \"" + path +
                               "\" does not exist or cannot be read (built-in models: MIND/R<r>D<d>, "
                               "MIND-SSC/R<r>D<d>, e.g. MIND/R1D2)");
    }
    return;
  }
  try
  {
    m_Module = std::make_shared<torch::jit::Module>(torch::jit::load(path, device));
  }
  catch (const std::exception & e)
  {
    throw std::runtime_error("model file \"" + path + "\" is not a TorchScript model (torch.jit.save): " +
                             firstLine(e.what()));
  }
  m_Module->eval();
  // A frozen feature extractor: backpropagation only needs d(features)/d(input), not weight gradients.
  for (auto parameter : m_Module->parameters())
  {
    parameter.set_requires_grad(false);
  }
  const auto method = m_Module->find_method("forward");
  if (!method)
  {
    throw std::runtime_error("TorchScript model \"" + path + "\" has no forward method");
  }
  const auto n = static_cast<int>(method->function().getSchema().arguments().size()) - 2; // self, x
  if (n != 0 && n != 1 && n != 3)
  {
    throw std::runtime_error("TorchScript model \"" + path + "\": forward takes " + std::to_string(n + 1) +
                             " arguments; supported are (x), (x, nLayers) and (x, nLayers, stats, direction)");
  }
  m_ExtraArguments = n;
}

std::vector<torch::Tensor>
Model::forward(const torch::Tensor & x, const ModelContext & context) const
{
  if (m_Mind)
  {
    const AutocastScope autocast(m_Device, context.autocast);
    auto                outputs = mind(x.to(m_Device, torch::kFloat32), *m_Mind);
    outputs[0] = outputs[0].to(torch::kFloat32);
    return outputs;
  }
  // Channels-last inputs let oneDNN pick its faster convolution layouts (a quarter off a 3D
  // nnU-Net stage on the CPU, same numbers); a model that cannot take them gets contiguous ones.
  const bool channelsLast = (x.dim() == 4 || x.dim() == 5) && !m_ChannelsLastFails.load();
  std::vector<torch::IValue> inputs{ channelsLast ? x.to(m_Device).contiguous(x.dim() == 4 ? at::MemoryFormat::ChannelsLast
                                                                                         : at::MemoryFormat::ChannelsLast3d)
                                                  : x.to(m_Device) };
  if (m_ExtraArguments >= 1)
  {
    inputs.emplace_back(torch::tensor(static_cast<int16_t>(context.numberOfLayers), torch::kInt16).to(m_Device));
  }
  if (m_ExtraArguments == 3)
  {
    inputs.emplace_back(context.stats.to(m_Device));
    inputs.emplace_back(context.direction.to(m_Device));
  }
  torch::IValue out;
  try
  {
    const AutocastScope autocast(m_Device, context.autocast);
    out = m_Module->forward(inputs);
  }
  catch (const std::exception & e)
  {
    if (channelsLast)
    {
      m_ChannelsLastFails = true;
      return forward(x, context);
    }
    throw std::runtime_error("model \"" + m_Path + "\" failed on an input of shape " + shapeText(x.sizes().vec()) +
                             ": " + firstLine(e.what()));
  }
  std::vector<torch::Tensor> outputs;
  if (out.isTensor())
  {
    outputs.push_back(out.toTensor());
  }
  else if (out.isTensorList())
  {
    outputs = out.toTensorVector();
  }
  else if (out.isList() || out.isTuple())
  {
    const auto elements = out.isList() ? out.toListRef().vec() : out.toTupleRef().elements().vec();
    for (const auto & e : elements)
    {
      if (!e.isTensor())
      {
        throw std::runtime_error("model \"" + m_Path + "\" returned a list with a non-tensor element");
      }
      outputs.push_back(e.toTensor());
    }
  }
  else
  {
    throw std::runtime_error("model \"" + m_Path + "\" returned " + out.tagKind() +
                             "; expected a tensor or a list of tensors");
  }
  for (auto & o : outputs)
  {
    o = o.to(torch::kFloat32); // distances in float32 also under autocast
  }
  return outputs;
}

std::vector<int64_t>
Model::fieldOfView(const ModelSpec & spec, int output) const
{
  std::lock_guard<std::mutex> lock(m_FieldOfViewMutex);
  auto & fov = m_FieldOfView[std::to_string(spec.dimension) + "/" + std::to_string(spec.channels) + "/" +
                             std::to_string(output)];
  if (fov.empty())
  {
    fov = measureFieldOfView(*this, spec, output);
  }
  return fov;
}

bool
Model::mixesBatch(const ModelSpec & spec) const
{
  std::lock_guard<std::mutex> lock(m_FieldOfViewMutex);
  const auto key = std::to_string(spec.dimension) + "/" + std::to_string(spec.channels);
  if (const auto it = m_MixesBatch.find(key); it != m_MixesBatch.end())
  {
    return it->second;
  }
  // Two inputs of very different contrast, together and apart.
  auto       gen = at::make_generator<at::CPUGeneratorImpl>(1);
  const auto x = torch::randn(inputShape(spec, std::vector<int64_t>(spec.dimension, 24)), gen);
  const auto pair = torch::cat({ x, 0.01 * torch::randn(x.sizes(), gen) });
  ModelContext context;
  context.numberOfLayers = static_cast<int>(spec.layersMask.size());
  context.stats = torch::tensor({ 0.0f, 1.0f, 0.5f, 0.25f });
  context.direction = torch::eye(spec.dimension, torch::kInt16);
  torch::InferenceMode guard;
  const auto together = forward(pair, context);
  const auto first = forward(pair.narrow(0, 0, 1), context);
  const auto second = forward(pair.narrow(0, 1, 1), context);
  bool mixes = false;
  for (size_t o = 0; o < together.size(); ++o)
  {
    const auto apart = torch::cat({ first[o], second[o] }).to(torch::kCPU);
    const auto scale = apart.abs().max().item<double>();
    mixes = mixes || (together[o].to(torch::kCPU) - apart).abs().max().item<double>() > 1e-4 * std::max(scale, 1e-12);
  }
  m_MixesBatch[key] = mixes;
  return mixes;
}

std::shared_ptr<Model>
ModelCache::get(const std::string & path, torch::Device device)
{
  std::lock_guard<std::mutex> lock(m_Mutex);
  const auto                  key = path + "@" + device.str();
  auto &                      slot = m_Models[key];
  if (!slot)
  {
    slot = std::make_shared<Model>(path, device);
  }
  return slot;
}

ModelProbe
probeModel(const Model & model, const ModelSpec & spec, const std::vector<int64_t> & wholeSize)
{
  std::vector<int64_t> patch = spec.patchSize;
  for (size_t a = 0; a < patch.size(); ++a)
  {
    if (patch[a] == 0)
    {
      patch[a] = a < wholeSize.size() ? wholeSize[a] : 32;
    }
  }
  const auto   shape = inputShape(spec, patch);
  ModelContext context;
  context.numberOfLayers = static_cast<int>(spec.layersMask.size());
  context.stats = torch::tensor({ 0.0f, 1.0f, 0.5f, 0.25f });
  context.direction = torch::eye(spec.dimension, torch::kInt16);
  auto                       gen = at::make_generator<at::CPUGeneratorImpl>(0);
  std::vector<torch::Tensor> outputs;
  try
  {
    torch::InferenceMode guard;
    outputs = model.forward(torch::randn(shape, gen), context);
  }
  catch (const std::exception & e)
  {
    throw ParameterError(std::string(e.what()) + ". Check Dimension " + std::to_string(spec.dimension) +
                         ", NumberOfChannels " + std::to_string(spec.channels) + " and PatchSize " +
                         sizeText(spec.patchSize) + " against what the model expects");
  }
  if (outputs.size() != spec.layersMask.size())
  {
    throw ParameterError("LayersMask \"" + spec.layersMask + "\" has " + std::to_string(spec.layersMask.size()) +
                         " character(s) but model \"" + spec.path + "\" returns " + std::to_string(outputs.size()) +
                         " output(s); give one 0/1 per output, e.g. \"" + std::string(outputs.size() - 1, '0') +
                         "1\" for the last");
  }
  ModelProbe probe;
  for (size_t o = 0; o < outputs.size(); ++o)
  {
    const auto & t = outputs[o];
    probe.outputShapes.push_back(t.sizes().vec());
    if (spec.layersMask[o] != '1')
    {
      continue;
    }
    if (t.dim() != spec.dimension + 2 || t.size(0) != 1)
    {
      throw ParameterError("output " + std::to_string(o + 1) + " of model \"" + spec.path + "\" has shape " +
                           shapeText(t.sizes().vec()) + " for an input of shape " + shapeText(shape) +
                           "; expected (batch, channels, " + std::to_string(spec.dimension) + " spatial axes)");
    }
    if (t.numel() == 0)
    {
      throw ParameterError("PatchSize " + sizeText(spec.patchSize) + " is too small for output " +
                           std::to_string(o + 1) + " of model \"" + spec.path + "\": it returns no voxel");
    }
    if (!torch::isfinite(t).all().item<bool>())
    {
      throw ParameterError("model \"" + spec.path + "\" returns NaN or Inf in output " + std::to_string(o + 1) +
                           " for a random input of shape " + shapeText(shape));
    }
  }
  return probe;
}

std::vector<int64_t>
measureFieldOfView(const Model & model, const ModelSpec & spec, int output)
{
  // Large enough for the published families (SAM2.1: 29, deep nnU-Net stages: 2^l + 3).
  const int64_t        n = spec.dimension == 2 ? 97 : 41;
  std::vector<int64_t> patch(spec.dimension, n);
  ModelContext         context;
  context.numberOfLayers = static_cast<int>(spec.layersMask.size());
  context.stats = torch::tensor({ 0.0f, 1.0f, 0.5f, 0.25f });
  context.direction = torch::eye(spec.dimension, torch::kInt16);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(0); // local: torch's global RNG stays the user's
  auto x = torch::randn(inputShape(spec, patch), gen).set_requires_grad(true);
  auto y = model.forward(x, context).at(output);
  // The centre output voxel, all channels, with random weights so that no channel cancels another.
  std::vector<torch::indexing::TensorIndex> centre{ 0, torch::indexing::Slice() };
  for (int a = 0; a < spec.dimension; ++a)
  {
    centre.emplace_back(y.size(2 + a) / 2);
  }
  auto v = y.index(centre);
  (v * torch::randn(v.sizes(), gen).to(v.device())).sum().backward();
  // Global operations (instance norm, a mean over the patch) leave a faint gradient everywhere:
  // the field of view is where the gradient is within 1e-3 of its peak.
  auto g = x.grad().abs().sum(1)[0].to(torch::kCPU);
  auto support = g > g.max() * 1e-3;
  // Tensor axis a of the support is ITK axis D-1-a.
  std::vector<int64_t> fov(spec.dimension);
  for (int a = 0; a < spec.dimension; ++a)
  {
    std::vector<int64_t> others;
    for (int b = 0; b < spec.dimension; ++b)
    {
      if (b != a)
      {
        others.push_back(b);
      }
    }
    auto along = support.to(torch::kFloat32).amax(at::IntArrayRef(others)) > 0;
    auto idx = torch::nonzero(along).flatten();
    fov[spec.dimension - 1 - a] = idx.numel() ? (idx.max().item<int64_t>() - idx.min().item<int64_t>() + 1) : 1;
  }
  return fov;
}

std::vector<OutputDescription>
describeOutputs(const std::string & path, int dimension, int channels, int numberOfOutputs, int64_t probeSize)
{
  if (dimension != 2 && dimension != 3)
  {
    throw ParameterError("dimension " + std::to_string(dimension) + " is not supported; use 2 or 3");
  }
  if (channels < 1 || numberOfOutputs < 1 || probeSize < 0)
  {
    throw ParameterError("channels and number_of_outputs must be positive, probe_size >= 0");
  }
  const int64_t probe = probeSize > 0 ? probeSize : (dimension == 2 ? 97 : 41);
  const Model   model(path, torch::kCPU);
  // How many outputs: models of elastix 5.3.1's contract return as many as they are told.
  std::vector<int64_t> shape{ 1, channels };
  shape.insert(shape.end(), dimension, probe);
  ModelContext context;
  context.numberOfLayers = numberOfOutputs;
  context.stats = torch::tensor({ 0.0f, 1.0f, 0.5f, 0.25f });
  context.direction = torch::eye(dimension, torch::kInt16);
  size_t count = 0;
  {
    torch::InferenceMode guard;
    count = model.forward(torch::zeros(shape), context).size();
  }
  ModelSpec spec;
  spec.path = path;
  spec.dimension = dimension;
  spec.channels = channels;
  spec.patchSize.assign(dimension, probe);
  spec.voxelSize.assign(dimension, 1.0);
  spec.layersMask.assign(count, '1');
  const auto shapes = probeModel(model, spec, {}).outputShapes;

  std::vector<OutputDescription> out(shapes.size());
  for (size_t o = 0; o < shapes.size(); ++o)
  {
    const auto & outputShape = shapes[o]; // (1, C, *spatial), spatial z first
    auto &       description = out[o];
    description.channels = outputShape[1];
    for (int a = 0; a < dimension; ++a)
    {
      const auto size = outputShape[1 + dimension - a]; // x first
      description.size.push_back(size);
      description.stride.push_back(size > 0 ? (probe + size - 1) / size : 0);
    }
    description.fieldOfView = measureFieldOfView(model, spec, static_cast<int>(o));
  }
  return out;
}

} // namespace impact
