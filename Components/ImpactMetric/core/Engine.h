// The IMPACT similarity of one resolution level (eq. 6-10), independent of ITK and elastix:
// given fixed sample points x_i and their mapped points y_i = T(x_i), it returns S and dS/dy_i.
// The caller chains dS/dy_i with the transform Jacobian dT(x_i)/dtheta (eq. 8, 10).
#pragma once

#include "Config.h"
#include "FeatureMaps.h"
#include "ImageTensor.h"
#include "Model.h"
#include "PatchSampler.h"

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace impact
{

using LogFunction = std::function<void(const std::string &)>;

/** The torch device that `config` asks for; throws std::runtime_error when CUDA is asked for but
 *  not available (unless GPUFallback is set, then warns and returns the CPU). */
torch::Device
resolveDevice(const LevelConfig & config, const LogFunction & warn);

/** An image of one side at the current level. */
struct SideImage
{
  Geometry      geometry;
  torch::Tensor coefficients; // (*spatial, 1) cubic B-spline coefficients of the image
  ModelContext  context;      // what models published for elastix 5.3.1 may also take
};

/** Prepares a side from a (*spatial) float32 image; `layers` fills ModelContext::numberOfLayers later. */
SideImage
makeSideImage(const torch::Tensor & image, const Geometry & geometry);

/** Static mode: the previous level's feature maps, reused when a level sees the same images and
 *  settings (a pyramid that neither smooths nor resamples, as IMPACT's documentation recommends). */
struct StaticCache
{
  torch::Tensor                                        fixedImage, movingImage; // B-spline coefficients
  std::string                                          key; // geometries and model settings
  std::vector<std::pair<FeatureMap, FeatureMap>>       maps;
  std::vector<PCAProjection>                           pca;
  std::vector<std::pair<ResampledImage, ResampledImage>> inputs;
};

class Engine
{
public:
  struct Options
  {
    std::shared_ptr<StaticCache> staticCache; // shared by the levels of one registration; may be null
    uint64_t    seed{ defaultRandomSeed }; // channel subsets and 2D planes
    int64_t     maxBatchVoxels{ 1 << 24 }; // Static: model input voxels per call
    int64_t     maxBatchElements{ 1 << 26 }; // Jacobian: activation elements per chunk of samples (~256 MB)
    LogFunction info;
    LogFunction warn;
  };

  /** Loads (through `cache`) and validates the level's models against both images. */
  Engine(const LevelConfig & config, ModelCache & cache, SideImage fixed, SideImage moving, Options options);

  struct Result
  {
    double        value{};
    torch::Tensor gradient; // (N, D) float64: dS/dy_i in world coordinates; undefined without gradient
  };

  /** S over the samples, and dS/dy_i when withGradient.
   *  fixedPoints, movingPoints: (N, D) float64 world coordinates, y_i = T(x_i), all inside the images. */
  Result
  evaluate(const torch::Tensor & fixedPoints, const torch::Tensor & movingPoints, bool withGradient);

  /** Work done since construction: what a level cost, for the log and for benchmarks. */
  struct Statistics
  {
    int64_t evaluations{};             // calls of evaluate()
    int64_t evaluationsWithGradient{}; // of them, with dS/dy
    int64_t samples{};                 // sample points over all calls
    int64_t patchesForward{};          // Jacobian mode: patches through a model (fixed and moving)
    int64_t patchesBackward{};         // Jacobian mode: moving patches also backpropagated to the input
    double  seconds{};                 // wall time inside evaluate()
  };
  const Statistics &
  statistics() const
  {
    return m_Statistics;
  }

  /** Maps world points (N, D) float64 of the fixed domain through the current transform. */
  using PointMapping = std::function<torch::Tensor(const torch::Tensor &)>;

  /** Static mode, FeaturesMapUpdateInterval > 0: recomputes the moving features from the moving image
   *  warped by the current transform T_k onto the fixed grid. Afterwards a sample is read at
   *  x_i + T(x_i) - T_k(x_i), so that S and its gradient stay those of eq. 9-10 to first order. */
  void
  updateMovingFeatures(const PointMapping & transform);

  /** Static mode: the feature maps of each selected layer (fixed, moving), and the images the models saw. */
  const std::vector<std::pair<FeatureMap, FeatureMap>> &
  featureMaps() const
  {
    return m_Maps;
  }
  const std::vector<std::pair<ResampledImage, ResampledImage>> &
  modelInputs() const
  {
    return m_Inputs;
  }

private:
  /** The fixed and moving model of one entry of ModelsPath, and what every call needs of them. */
  struct Pair
  {
    std::shared_ptr<Model> fixed, moving;
    int64_t                elementsPerSample{}; // patch voxels x (input + output channels), both sides
    std::vector<int>       fixedOutputs, movingOutputs; // model outputs of the selected layers, in order
    std::vector<size_t>    layers;                      // their indices in LevelConfig::layers
    ModelContext           fixedContext, movingContext; // image statistics, LayersMask length, autocast
    PatchLayout            fixedLayout, movingLayout;   // Jacobian mode; unset for 2D models on 3D images
  };

  // Construction, phase by phase: images and models checked, models loaded, probed and their
  // selected outputs checked against each other, the field of view and the images.
  void
  checkModelsFitImages(size_t model) const;
  Pair
  loadPair(size_t model, ModelCache & cache, torch::Device device) const;
  std::pair<ModelProbe, ModelProbe>
  probePair(size_t model, Pair & pair) const;
  bool
  sameModelInput(size_t model) const;
  void
  checkSelectedOutputs(size_t model, const Pair & pair, const ModelProbe & fprobe, const ModelProbe & mprobe) const;
  void
  checkFieldOfView(const ModelSpec &   spec,
                   const Model &       model,
                   int                 output,
                   const Geometry &    geometry,
                   const std::string & side,
                   int64_t             channels) const;

  torch::Tensor
  channelSubset(const LayerSpec & layer, int64_t channels);
  double
  evaluateJacobianModel(size_t model, const torch::Tensor & x, const torch::Tensor & y, torch::Tensor * gradient);
  double
  evaluateJacobianChunk(size_t model, const torch::Tensor & x, const torch::Tensor & y, torch::Tensor * gradient);
  double
  evaluateStaticLayer(size_t layer, const torch::Tensor & x, const torch::Tensor & y, torch::Tensor * gradient);

  /** Stops with a ParameterError when the level would not fit in memory (MemoryLimit). */
  void
  checkMemory(const std::vector<std::pair<ModelProbe, ModelProbe>> & probes) const;

  /** Static mode: bytes of the feature maps kept for the level, and the most in flight while one
   *  side's maps are computed (model activations, blending buffers). */
  std::pair<double, double>
  staticMemoryEstimate(const std::vector<std::pair<ModelProbe, ModelProbe>> & probes) const;

  /** Static mode: computes the feature maps of every selected layer (or takes them from the cache). */
  void
  computeStaticMaps();

  LevelConfig                                          m_Config;
  SideImage                                            m_Fixed, m_Moving;
  Options                                              m_Options;
  std::vector<Pair>                                    m_Models;
  std::vector<std::pair<FeatureMap, FeatureMap>>       m_Maps;   // Static: one per selected layer
  std::vector<PCAProjection>                           m_PCA;    // Static: one per selected layer
  std::vector<std::shared_ptr<FeatureMap>>             m_Displacement; // per layer: T_k(p) - p after an update
  std::vector<std::pair<ResampledImage, ResampledImage>> m_Inputs; // Static: one per model
  torch::Generator                                     m_Generator;
  Statistics                                           m_Statistics;
};

} // namespace impact
