// A TorchScript feature extractor: loaded once per run, called with image batches, validated
// against the parameters that use it.
#pragma once

#include "Config.h"
#include "Mind.h"

#include <torch/script.h>

#include <atomic>
#include <map>
#include <optional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace impact
{

/** Extra inputs that models published for elastix 5.3.1 may take after the image batch. */
struct ModelContext
{
  int           numberOfLayers{ 1 }; // LayersMask length
  torch::Tensor stats;               // float32 [min, max, mean, std] of the image
  torch::Tensor direction;           // int16 (D, D): the image direction, rounded
  std::optional<at::ScalarType> autocast; // reduced type to autocast the model to (UseMixedPrecision); outputs
                                          // come back in float32
};

class Model
{
public:
  /** Loads a TorchScript file onto `device`, or, when no file exists at `path` and it names one
   *  ("MIND/R1D2", "MIND-SSC/R2D2"), the built-in MIND extractor; throws std::runtime_error naming
   *  the file and the cause. */
  Model(const std::string & path, torch::Device device);

  /** Runs forward on x: (B, C, *spatial) float32, moved to the model's device.
   *  Returns one tensor (B, C_l, *spatial_l) per model output, on the model's device.
   *  Throws std::runtime_error if the model fails or returns something else than a tensor or a
   *  list/tuple of tensors, or a non-finite value. */
  std::vector<torch::Tensor>
  forward(const torch::Tensor & x, const ModelContext & context) const;

  /** Field of view of output `output` for inputs shaped by `spec` (measured once, then cached). */
  std::vector<int64_t>
  fieldOfView(const ModelSpec & spec, int output) const;

  /** Whether outputs for one batch element depend on the others (e.g. a normalisation by a mean
   *  over the whole batch, as in elastix's MIND test model), measured once per input layout. Such a
   *  model gets one tile per call in Static mode, so that its features do not depend on batching. */
  bool
  mixesBatch(const ModelSpec & spec) const;

private:
  std::string                        m_Path;
  torch::Device                      m_Device;
  std::shared_ptr<torch::jit::Module> m_Module; // null for a built-in extractor
  std::optional<MindSpec>             m_Mind;
  mutable std::atomic<bool>           m_ChannelsLastFails{ false };
  int                                m_ExtraArguments{ 0 }; // forward arguments after the image batch: 0, 1 or 3
  mutable std::mutex                 m_FieldOfViewMutex;
  mutable std::map<std::string, std::vector<int64_t>> m_FieldOfView;
  mutable std::map<std::string, bool>                 m_MixesBatch;
};

/** Models of one run, loaded on first use and shared by all levels and both sides. */
class ModelCache
{
public:
  std::shared_ptr<Model>
  get(const std::string & path, torch::Device device);

private:
  std::mutex                                    m_Mutex;
  std::map<std::string, std::shared_ptr<Model>> m_Models;
};

/** What a probe of a model with a spec's input shape found. */
struct ModelProbe
{
  std::vector<std::vector<int64_t>> outputShapes; // (B, C, *spatial) of every output for a batch of 1
};

/** Runs `model` once on a patch of the spec's shape (PatchSize, 0 replaced by `wholeSize`) and
 *  checks the outputs against the LayersMask; throws ParameterError with the parameter names. */
ModelProbe
probeModel(const Model & model, const ModelSpec & spec, const std::vector<int64_t> & wholeSize);

/** Field of view, in voxels per axis (x first), of output `output`: the extent of the input that
 *  the centre output voxel depends on, measured from the gradient support of that voxel. */
std::vector<int64_t>
measureFieldOfView(const Model & model, const ModelSpec & spec, int output);

/** One output of a model, as `impact-elastix models inspect` reports it. */
struct OutputDescription
{
  int64_t              channels{};
  std::vector<int64_t> size, stride, fieldOfView; // voxels per axis, x first
};

/** Loads the model at `path` on the CPU and describes every output it returns for a probe of
 *  `probeSize` voxels per axis (0: 97 in 2D, 41 in 3D) when told `numberOfOutputs` layers; throws
 *  ParameterError for arguments out of range, std::runtime_error when the model does not run. */
std::vector<OutputDescription>
describeOutputs(const std::string & path, int dimension, int channels, int numberOfOutputs, int64_t probeSize);

/** "5*5*5" style text of a size vector. */
std::string
sizeText(const std::vector<int64_t> & size);

} // namespace impact
